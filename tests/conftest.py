"""Fixtures shared by the tiers: the fake ComfyUI in both protocol generations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_comfyui import FakeComfyUI


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
