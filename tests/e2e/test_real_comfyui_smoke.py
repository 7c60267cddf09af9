"""Smoke test of the real ComfyUI test server itself (no worker code involved).

Checks that ``scripts/comfyui-test-server.sh`` gives a working ComfyUI with the
test node pack, speaking the protocol the worker relies on. Skipped when the
server is not installed, unless ``E2E`` or ``CI`` is set: then the server is
installed on the spot.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.real_comfyui import RealComfyUI

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT = 60.0


class Client:
    """A websocket connection with a clientId plus the HTTP calls of these tests."""

    def __init__(self, base: str, session: aiohttp.ClientSession, ws: Any, client_id: str):
        self.base = base
        self.session = session
        self.ws = ws
        self.client_id = client_id

    async def submit(self, graph: dict[str, Any]) -> str:
        body = {"prompt": graph, "client_id": self.client_id}
        async with self.session.post(f"{self.base}/prompt", json=body) as resp:
            data = await resp.json()
            assert resp.status == 200, data
        assert data["node_errors"] in ({}, []), data
        return str(data["prompt_id"])

    async def next_message(self, timeout: float) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                parsed: dict[str, Any] = msg.json()
                return parsed
            if msg.type == aiohttp.WSMsgType.BINARY:
                continue  # previews; none expected here
            raise AssertionError(f"websocket ended: {msg.type} {msg.data!r}")

    async def run_until_done(
        self, prompt_id: str, timeout: float = RUN_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Messages about ``prompt_id`` up to its end (``executing`` with node null)."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"prompt {prompt_id} did not finish; saw {seen}"
            msg = await self.next_message(left)
            if msg.get("data", {}).get("prompt_id") != prompt_id:
                continue
            seen.append(msg)
            if msg["type"] == "executing" and msg["data"]["node"] is None:
                return seen

    async def history(self, prompt_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/history/{prompt_id}") as resp:
            assert resp.status == 200
            data: dict[str, Any] = await resp.json()
        assert prompt_id in data, data
        entry: dict[str, Any] = data[prompt_id]
        return entry


@pytest.fixture
async def client(comfy: RealComfyUI) -> AsyncIterator[Client]:
    client_id = uuid.uuid4().hex
    timeout = aiohttp.ClientTimeout(total=RUN_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.ws_connect(f"ws://{comfy.address}/ws?clientId={client_id}") as ws:
            hello = await Client(comfy.url, session, ws, client_id).next_message(10)
            assert hello["type"] == "status"
            assert hello["data"]["sid"] == client_id
            yield Client(comfy.url, session, ws, client_id)


def _color() -> int:
    # A fresh input each run, so that ComfyUI's cache never answers for us.
    return random.randrange(0, 0xFFFFFF)


def _empty_image() -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": _color()},
    }


def _types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


async def test_system_stats_and_node_pack(comfy: RealComfyUI) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{comfy.url}/system_stats") as resp:
            assert resp.status == 200
            stats = await resp.json()
        assert stats["devices"][0]["type"] == "cpu"
        for node in ("SleepWithProgress", "FailAlways", "ShowText"):
            async with session.get(f"{comfy.url}/object_info/{node}") as resp:
                assert resp.status == 200
                info = await resp.json()
            assert node in info, f"{node} not loaded; server log:\n{comfy.log_text()[-3000:]}"
        assert info["ShowText"]["output_node"] is True


async def test_save_image_graph(comfy: RealComfyUI, client: Client) -> None:
    prefix = f"smoke_{uuid.uuid4().hex[:8]}"
    graph = {
        "1": _empty_image(),
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
    prompt_id = await client.submit(graph)
    messages = await client.run_until_done(prompt_id)
    types = _types(messages)
    assert types[0] == "execution_start"
    assert "execution_error" not in types
    executed = [m for m in messages if m["type"] == "executed"]
    assert [m["data"]["node"] for m in executed] == ["3"]

    entry = await client.history(prompt_id)
    assert entry["status"]["status_str"] == "success"
    image = entry["outputs"]["3"]["images"][0]
    assert image["type"] == "output"
    assert image["filename"].startswith(prefix)
    assert (comfy.output_dir / image["subfolder"] / image["filename"]).is_file()

    params = {"filename": image["filename"], "subfolder": image["subfolder"], "type": "output"}
    async with client.session.get(f"{comfy.url}/view", params=params) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert body.startswith(PNG_MAGIC)


async def test_sleep_with_progress_reports_progress(client: Client) -> None:
    graph = {
        "1": _empty_image(),
        "2": {
            "class_type": "SleepWithProgress",
            "inputs": {"image": ["1", 0], "seconds": 0.4, "steps": 4},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    prompt_id = await client.submit(graph)
    messages = await client.run_until_done(prompt_id)
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"]) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {p["node"] for p in progress} == {"2"}
    entry = await client.history(prompt_id)
    assert entry["outputs"]["3"]["images"][0]["type"] == "temp"


async def test_fail_always_gives_execution_error(client: Client) -> None:
    message = f"planned failure {uuid.uuid4().hex[:8]}"
    graph = {
        "1": _empty_image(),
        "2": {"class_type": "FailAlways", "inputs": {"image": ["1", 0], "message": message}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    prompt_id = await client.submit(graph)
    messages = await client.run_until_done(prompt_id)
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert len(errors) == 1, messages
    error = errors[0]
    assert error["node_id"] == "2"
    assert error["node_type"] == "FailAlways"
    assert error["exception_type"] == "RuntimeError"
    assert message in error["exception_message"]
    entry = await client.history(prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False


async def test_show_text_output(client: Client) -> None:
    text = f"hello {uuid.uuid4().hex[:8]}"
    prompt_id = await client.submit({"1": {"class_type": "ShowText", "inputs": {"text": text}}})
    messages = await client.run_until_done(prompt_id)
    executed = [m["data"] for m in messages if m["type"] == "executed"]
    assert [e["output"] for e in executed] == [{"text": [text]}]
    entry = await client.history(prompt_id)
    assert entry["outputs"] == {"1": {"text": [text]}}


async def test_interrupt_running_prompt(client: Client) -> None:
    graph = {
        "1": _empty_image(),
        "2": {
            "class_type": "SleepWithProgress",
            "inputs": {"image": ["1", 0], "seconds": 30.0, "steps": 300},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    started = time.monotonic()
    prompt_id = await client.submit(graph)
    # Wait until our prompt is the one running: this server's /interrupt
    # interrupts whatever runs, whatever the body says.
    seen: list[dict[str, Any]] = []
    while not any(m["type"] == "progress" for m in seen):
        msg = await client.next_message(RUN_TIMEOUT)
        if msg.get("data", {}).get("prompt_id") == prompt_id:
            seen.append(msg)
    async with client.session.get(f"{client.base}/queue") as resp:
        queue = await resp.json()
    assert [item[1] for item in queue["queue_running"]] == [prompt_id]

    async with client.session.post(
        f"{client.base}/interrupt", json={"prompt_id": prompt_id}
    ) as resp:
        assert resp.status == 200
    seen += await client.run_until_done(prompt_id)
    elapsed = time.monotonic() - started
    interrupted = [m["data"] for m in seen if m["type"] == "execution_interrupted"]
    assert len(interrupted) == 1, _types(seen)
    assert interrupted[0]["node_id"] == "2"
    assert interrupted[0]["node_type"] == "SleepWithProgress"
    assert "execution_error" not in _types(seen)
    assert elapsed < 15, f"interrupt took {elapsed:.1f} s"
