"""`POST /prompt_sync` with `Accept: text/event-stream`: progress events, then the answer."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from comfyui.stream import wants_stream
from tests import graphs
from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker

STREAM = {"Accept": "text/event-stream"}


async def read_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Parse a Server-Sent Events body into (event, data) pairs (comments skipped)."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and data:
            events.append((name, json.loads(data)))
            name, data = "message", ""
    return events


async def stream(worker: Worker, body: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    async with (
        worker.http() as http,
        http.stream("POST", "/prompt_sync", json=body, headers=STREAM) as response,
    ):
        if response.headers["content-type"].startswith("text/event-stream"):
            return response, await read_events(response)
        await response.aread()
        return response, []


def test_accept_header_parsing() -> None:
    assert wants_stream("text/event-stream")
    assert wants_stream("application/json;q=0.5, Text/Event-Stream;q=1")
    assert not wants_stream("application/json")
    assert not wants_stream(None)
    assert not wants_stream("*/*")


async def test_progress_events_then_the_answer(worker: Worker, fake: FakeComfyUI) -> None:
    response, events = await stream(
        worker, {"prompt": graphs.slow(0.8, steps=4, color=41), "return_image_base64": True}
    )
    assert response.status_code == 200
    names = [name for name, _ in events]
    assert names[0] == "queued"
    assert names[-1] == "result"
    prompt_id = events[0][1]["prompt_id"]
    assert all(data["prompt_id"] == prompt_id for _, data in events)
    assert "running" in [data["state"] for name, data in events if name == "status"]
    assert "2" in [data["node"] for name, data in events if name == "executing"]
    progress = [(data["value"], data["max"]) for name, data in events if name == "progress"]
    assert progress, names
    assert all(maximum == 4 for _, maximum in progress)
    assert progress == sorted(progress)
    result = events[-1][1]
    assert result["status"] == "success"
    (image,) = result["images"]
    data = base64.b64decode(image["data"])
    assert data == (fake.output_dir / image["subfolder"] / image["filename"]).read_bytes()
    assert result["files"][0]["data"] is None  # the bytes are in the answer once


async def test_failure_during_the_run_ends_with_an_error_event(worker: Worker) -> None:
    response, events = await stream(worker, {"prompt": graphs.failing("stream boom")})
    assert response.status_code == 200
    name, error = events[-1]
    assert name == "error"
    assert error["status"] == 500
    assert error["error"] == "execution_error"
    assert "stream boom" in error["detail"]
    assert error["node_errors"]["2"]["class_type"] == "FailAlways"


async def test_refusal_before_queueing_is_a_plain_error(worker: Worker) -> None:
    graph = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    response, events = await stream(worker, {"prompt": graph})
    assert response.status_code == 400
    assert events == []
    assert response.json()["error"] == "invalid_prompt"


async def test_caller_leaving_the_stream_cancels_the_prompt(
    worker: Worker, fake: FakeComfyUI
) -> None:
    async with (
        worker.http() as http,
        http.stream(
            "POST", "/prompt_sync", json={"prompt": graphs.slow(5.0, steps=50)}, headers=STREAM
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event: progress"):
                break
        running = fake.running_id()
        assert running is not None
    await fake.wait_for(lambda: running in fake.interrupted, timeout=5)
    await fake.wait_for(lambda: fake.running_id() is None)
