"""ComfyUIClient and PromptHandler against canned HTTP answers (aioresponses)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from comfyui.client import ComfyUIClient, RawResponse
from comfyui.exceptions import (
    ComfyUIConnectionError,
    ComfyUIProtocolError,
    PromptValidationError,
)
from comfyui.handler import PromptHandler
from comfyui.job import Job
from comfyui.tracker import PromptTracker
from comfyui.watcher import PromptWatcher
from config import Settings
from tests import transcripts

BASE = "http://comfy.test:8188"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        comfyui_server_address=BASE,
        comfyui_retry_attempts=3,
        comfyui_retry_base_delay=0.001,
        comfyui_retry_max_delay=0.002,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[ComfyUIClient]:
    # No start(): these tests need HTTP only, not the websocket task.
    async with aiohttp.ClientSession() as session:
        yield ComfyUIClient(settings, session=session)


def _calls(mocked: aioresponses, method: str, path: str) -> int:
    return sum(
        len(v) for (m, url), v in mocked.requests.items() if m == method and url.path == path
    )


async def test_history_entry_and_unknown_prompt(client: ComfyUIClient) -> None:
    (recorded,) = transcripts.responses("progress.json", "/history/")
    prompt_id = recorded["request"]["path"].rsplit("/", 1)[1]
    with aioresponses() as mocked:
        mocked.get(f"{BASE}/history/{prompt_id}", payload=recorded["response"])
        mocked.get(f"{BASE}/history/nope", payload={})
        entry = await client.get_history(prompt_id)
        assert entry is not None and entry["status"]["status_str"] == "success"
        assert await client.get_history("nope") is None


async def test_idempotent_reads_are_retried_on_connection_errors(client: ComfyUIClient) -> None:
    with aioresponses() as mocked:
        mocked.get(f"{BASE}/queue", exception=aiohttp.ClientConnectionError("reset"))
        mocked.get(f"{BASE}/queue", exception=aiohttp.ClientConnectionError("reset"))
        mocked.get(
            f"{BASE}/queue",
            payload={
                "queue_running": [[3, "r", {}, {}, []]],
                "queue_pending": [[9, "late", {}, {}, []], [5, "early", {}, {}, []]],
            },
        )
        snapshot = await client.get_queue()
    assert snapshot.running == ["r"]
    # ComfyUI does not keep pending prompts in execution order; the client sorts them.
    assert snapshot.pending == ["early", "late"]


async def test_reads_give_up_with_a_typed_error(client: ComfyUIClient) -> None:
    with aioresponses() as mocked:
        for _ in range(3):
            mocked.get(f"{BASE}/queue", exception=aiohttp.ClientConnectionError("refused"))
        with pytest.raises(ComfyUIConnectionError) as info:
            await client.get_queue()
    assert info.value.status_code == 503 and info.value.headers["Retry-After"]


async def test_submission_is_not_repeated_once_it_may_have_arrived(client: ComfyUIClient) -> None:
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/prompt", exception=aiohttp.ServerDisconnectedError())
        mocked.post(f"{BASE}/prompt", payload={"prompt_id": "x", "number": 1, "node_errors": {}})
        with pytest.raises(ComfyUIConnectionError):
            await client.queue_prompt({"1": {"class_type": "X", "inputs": {}}})
        assert _calls(mocked, "POST", "/prompt") == 1


async def test_submission_is_retried_when_the_connection_was_refused(
    client: ComfyUIClient,
) -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("comfy.test", 8188, False, True, None, None, None),
        OSError(111, "Connection refused"),
    )
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/prompt", exception=refused)
        mocked.post(f"{BASE}/prompt", payload={"prompt_id": "x", "number": 1, "node_errors": {}})
        answer = await client.queue_prompt({"1": {"class_type": "X", "inputs": {}}}, prompt_id="x")
    assert answer.status == 200
    sent = mocked.requests[("POST", answer_url("/prompt"))][-1].kwargs["json"]
    assert sent["client_id"] == client.client_id and sent["prompt_id"] == "x"


def answer_url(path: str) -> URL:
    return URL(BASE + path)


async def test_non_json_answer_is_a_protocol_error(client: ComfyUIClient) -> None:
    with aioresponses() as mocked:
        mocked.get(f"{BASE}/history/x", body="<html>", status=200)
        with pytest.raises(ComfyUIProtocolError):
            await client.get_history("x")


@pytest.mark.parametrize(
    "name", ["invalid_missing_input.json", "invalid_value.json", "invalid_class.json"]
)
async def test_recorded_400_bodies_become_validation_errors(
    client: ComfyUIClient, settings: Settings, name: str
) -> None:
    recorded = transcripts.load(name)["exchanges"][0]
    handler = PromptHandler(client, PromptWatcher(client, settings), settings)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/prompt", status=400, payload=recorded["response"])
        with pytest.raises(PromptValidationError) as info:
            await handler.submit(recorded["request"]["json"]["prompt"])
    error = info.value
    assert error.status_code == 400
    assert error.node_errors == recorded["response"]["node_errors"]
    assert recorded["response"]["error"]["message"] in error.detail
    assert handler.watcher.waiting == 0  # nothing left tracked


async def test_2024_unknown_class_500_is_named(client: ComfyUIClient, settings: Settings) -> None:
    handler = PromptHandler(client, PromptWatcher(client, settings), settings)
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "NoSuchNode", "inputs": {}},
    }
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/prompt", status=500, body="500 Internal Server Error")
        mocked.get(f"{BASE}/object_info/EmptyImage", payload={"EmptyImage": {}})
        mocked.get(f"{BASE}/object_info/NoSuchNode", payload={})
        with pytest.raises(PromptValidationError) as info:
            await handler.submit(graph)
    assert list(info.value.node_errors) == ["2"]
    assert "NoSuchNode" in info.value.detail


async def test_2024_ignores_proposed_id_and_the_job_follows_the_real_one(
    client: ComfyUIClient, settings: Settings
) -> None:
    handler = PromptHandler(client, PromptWatcher(client, settings), settings)
    with aioresponses() as mocked:
        mocked.post(
            f"{BASE}/prompt", payload={"prompt_id": "server-id", "number": 0, "node_errors": []}
        )
        job = await handler.submit({"1": {"class_type": "X", "inputs": {}}})
    assert job.prompt_id == "server-id"
    assert handler.watcher.router.get("server-id") is job.tracker


async def test_abort_dequeues_and_interrupts_only_a_running_prompt(client: ComfyUIClient) -> None:
    job = Job(client, PromptTracker("p1"), poll_interval=0.1)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/queue", status=200, body="")
        mocked.get(
            f"{BASE}/queue", payload={"queue_running": [[1, "p1", {}, {}, []]], "queue_pending": []}
        )
        mocked.post(f"{BASE}/interrupt", status=200, body="")
        await job.abort()
        assert _calls(mocked, "POST", "/interrupt") == 1
        interrupt_body = mocked.requests[("POST", answer_url("/interrupt"))][0].kwargs["json"]
        assert interrupt_body == {"prompt_id": "p1"}

    with aioresponses() as mocked:
        mocked.post(f"{BASE}/queue", status=200, body="")
        mocked.get(
            f"{BASE}/queue",
            payload={"queue_running": [[1, "other", {}, {}, []]], "queue_pending": []},
        )
        await job.abort()
        delete_body = mocked.requests[("POST", answer_url("/queue"))][0].kwargs["json"]
        assert delete_body == {"delete": ["p1"]}
        # Another prompt runs: the 2024 server would interrupt it, so nothing is sent.
        assert _calls(mocked, "POST", "/interrupt") == 0


def test_settings_urls() -> None:
    assert (
        Settings(comfyui_server_address="10.0.0.2:8188").comfyui_ws_url == "ws://10.0.0.2:8188/ws"
    )
    secure = Settings(comfyui_server_address="https://comfy.example/")
    assert secure.comfyui_url == "https://comfy.example"
    assert secure.comfyui_ws_url == "wss://comfy.example/ws"
    assert re.fullmatch(r"[0-9a-f]{32}", ComfyUIClient(secure).client_id)


async def test_a_burst_of_submissions_shares_a_few_connections(client: ComfyUIClient) -> None:
    in_flight = peak = 0

    async def request(method: str, path: str, **kwargs: Any) -> RawResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return RawResponse(200, b'{"prompt_id": "p", "number": 1}', "application/json", {})

    client.request = request  # type: ignore[method-assign]
    await asyncio.gather(*(client.queue_prompt({"1": {}}) for _ in range(40)))
    assert peak == 16
