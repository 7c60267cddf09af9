"""Service-test fixtures: the real worker app under uvicorn, talking to the fake ComfyUI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker, running_worker, worker_settings


@pytest.fixture(params=["0.8", "2024"])
def generation(request: pytest.FixtureRequest) -> str:
    """Both protocol generations: ComfyUI 0.8 and the 2024 server."""
    return str(request.param)


@pytest.fixture
async def fake(tmp_path: Path, generation: str) -> AsyncIterator[FakeComfyUI]:
    server = FakeComfyUI(generation=generation, root=tmp_path / "comfyui")  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def worker(fake: FakeComfyUI) -> AsyncIterator[Worker]:
    async with running_worker(worker_settings(fake.address)) as running:
        yield running
