"""Service-test fixtures: the real worker app under uvicorn, talking to the fake ComfyUI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker, running_worker, worker_settings


@pytest.fixture
async def worker(fake: FakeComfyUI) -> AsyncIterator[Worker]:
    async with running_worker(worker_settings(fake.address)) as running:
        yield running
