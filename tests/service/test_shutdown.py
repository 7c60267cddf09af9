"""SIGTERM with a real `python server.py` process: drain, then cancel, then exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import graphs
from tests.fake_comfyui import FakeComfyUI

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def spawn(fake: FakeComfyUI) -> AsyncIterator[object]:
    started: list[asyncio.subprocess.Process] = []

    async def _spawn(grace: int) -> WorkerProcess:
        port = _free_port()
        env = {
            **os.environ,
            "COMFYUI_SERVER_ADDRESS": fake.address,
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(port),
            "SHUTDOWN_GRACE_S": str(grace),
            "COMFYUI_POLL_INTERVAL": "0.05",
            "LOG_OUTPUT": "json",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "server.py",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(base_url=url) as http:
            while True:
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, "worker exited during start-up"
                assert time.monotonic() < deadline, "worker never became ready"
                await asyncio.sleep(0.05)
        return WorkerProcess(process, url)

    yield _spawn
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_lets_in_flight_requests_finish(spawn: object, fake: FakeComfyUI) -> None:
    worker = await spawn(10)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
        request = asyncio.create_task(
            http.post("/prompt_sync", json={"prompt": graphs.slow(1.0, 10, prefix="drained")})
        )
        await fake.wait_for(lambda: fake.running_id() is not None)
        worker.process.send_signal(signal.SIGTERM)
        response = await request
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["filename"].startswith("drained_")
    assert await asyncio.wait_for(worker.process.wait(), 15) == 0


async def test_sigterm_cancels_work_that_outlasts_the_grace(
    spawn: object, fake: FakeComfyUI
) -> None:
    worker = await spawn(1)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
        request = asyncio.create_task(
            http.post("/prompt_sync", json={"prompt": graphs.slow(30.0, 300)})
        )
        await fake.wait_for(lambda: fake.running_id() is not None)
        running = fake.running_id()
        worker.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.process.wait(), 15) == 0
        try:
            response = await request
            assert response.status_code >= 500
        except httpx.TransportError:
            pass  # the connection closed with the process: no answer is also honest
    assert running in fake.interrupted
    await fake.wait_for(lambda: fake.running_id() is None)
