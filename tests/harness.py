"""Runs the real worker app under uvicorn on a loopback port, for service and e2e tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from comfyui.bridge import Bridge
from config import Settings
from server import create_app


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

    def http(self, timeout: float = 60.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout)


def worker_settings(address: str, **overrides: object) -> Settings:
    """Settings tuned for fast tests: short polls, short grace, quick reconnects."""
    values: dict[str, object] = {
        "comfyui_server_address": address,
        "comfyui_poll_interval": 0.05,
        "comfyui_unreachable_grace": 0.5,
        "comfyui_retry_attempts": 2,
        "comfyui_retry_base_delay": 0.01,
        "comfyui_retry_max_delay": 0.02,
        "comfy_reconnect_base_delay_s": 0.05,
        "comfy_reconnect_max_delay_s": 0.2,
        "comfyui_request_timeout": 10.0,
        "default_timeout": 60.0,
        "max_timeout": 120.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running_worker(settings: Settings, *, connected: bool = True) -> AsyncIterator[Worker]:
    """Serve the app on 127.0.0.1 (free port) until the block ends."""
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        worker = Worker(f"http://127.0.0.1:{port}", app, settings)
        if connected:
            assert await worker.bridge.client.wait_connected(10.0), "no websocket to ComfyUI"
        yield worker
    finally:
        server.should_exit = True
        await task


async def sync(
    worker: Worker, graph: dict[str, Any], *, timeout: float | None = None, **body: Any
) -> httpx.Response:
    """POST /prompt_sync with `graph` and any other body fields."""
    params = {"timeout": timeout} if timeout is not None else None
    async with worker.http() as http:
        return await http.post("/prompt_sync", json={"prompt": graph, **body}, params=params)
