"""Service-test fixtures: the real worker app under uvicorn, talking to the fake ComfyUI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from comfyui.bridge import Bridge
from config import Settings
from server import create_app
from tests.fake_comfyui import FakeComfyUI


@dataclass
class Worker:
    """A running worker: its base URL, app and the settings it was built with."""

    url: str
    app: FastAPI
    settings: Settings

    @property
    def bridge(self) -> Bridge:
        bridge: Bridge = self.app.state.bridge
        return bridge

    def http(self, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout)


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


def worker_settings(address: str, **overrides: object) -> Settings:
    """Settings tuned for fast tests: short polls, short grace, quick reconnects."""
    values: dict[str, object] = {
        "comfyui_server_address": address,
        "comfyui_poll_interval": 0.05,
        "comfyui_unreachable_grace": 0.5,
        "comfyui_retry_attempts": 2,
        "comfyui_retry_base_delay": 0.01,
        "comfyui_retry_max_delay": 0.02,
        "comfyui_reconnect_base_delay": 0.05,
        "comfyui_reconnect_max_delay": 0.2,
        "comfyui_request_timeout": 5.0,
        "default_timeout": 30.0,
        "max_timeout": 120.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def start_worker(settings: Settings) -> tuple[Worker, uvicorn.Server, asyncio.Task[None]]:
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Worker(f"http://127.0.0.1:{port}", app, settings), server, task


@pytest.fixture
async def worker(fake: FakeComfyUI) -> AsyncIterator[Worker]:
    running, server, task = await start_worker(worker_settings(fake.address))
    # Most tests want the event path; the ones about polling drop the socket themselves.
    assert await running.bridge.client.wait_connected(5.0)
    try:
        yield running
    finally:
        server.should_exit = True
        await task
