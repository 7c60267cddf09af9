"""/prompt_sync end to end through real uvicorn against the fake ComfyUI (both generations)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import pytest

from tests import graphs
from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker, sync

ERROR_KEYS = {"error", "detail", "prompt_id", "node_errors", "timestamp"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == code
    return body


async def test_success_lists_images_without_data(worker: Worker, fake: FakeComfyUI) -> None:
    response = await sync(worker, graphs.save("plain"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["node_errors"] == {}
    assert body["prompt_id"] in fake.history
    assert body["outputs"] == fake.history[body["prompt_id"]]["outputs"]
    (image,) = body["images"]
    assert image["node_id"] == "3" and image["type"] == "output"
    assert image["filename"].startswith("plain_") and image["mime_type"] == "image/png"
    assert image["data"] is None
    assert body["execution_time"] >= 0


async def test_success_with_base64_returns_the_file_bytes(
    worker: Worker, fake: FakeComfyUI
) -> None:
    response = await sync(worker, graphs.save("b64", batch=2), return_image_base64=True)
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert len(images) == 2
    for image in images:
        data = base64.b64decode(image["data"])
        assert data.startswith(PNG_MAGIC)
        assert data == (fake.output_dir / image["subfolder"] / image["filename"]).read_bytes()


async def test_fully_cached_rerun_completes_with_the_same_outputs(
    worker: Worker, fake: FakeComfyUI
) -> None:
    first = await sync(worker, graphs.save("cached", color=42))
    second = await sync(worker, graphs.save("cached", color=42), return_image_base64=True)
    assert first.status_code == second.status_code == 200, second.text
    assert second.json()["prompt_id"] != first.json()["prompt_id"]
    assert second.json()["outputs"] == first.json()["outputs"]
    assert second.json()["images"][0]["data"]


async def test_outputs_are_comfyuis_history_outputs_fresh_and_cached(
    worker: Worker, fake: FakeComfyUI
) -> None:
    graph = graphs.preview_and_text("twice", color=61)
    for _ in ("fresh", "cached"):
        response = await sync(worker, graph)
        assert response.status_code == 200, response.text
        body = response.json()
        entry = await history_of(fake, body["prompt_id"])
        assert body["outputs"] == entry["outputs"]
        assert list(body["outputs"]) == list(entry["outputs"])  # the same order too


async def test_comfyui_08_runs_are_answered_from_events_before_history_is_written(
    worker: Worker, fake: FakeComfyUI, generation: str
) -> None:
    if generation != "0.8":
        pytest.skip("the 2024 server sends no execution_success: its runs end in /history")
    fake.history_delay = 2.0
    response = await sync(worker, graphs.save("from-events", color=62))
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    assert prompt_id not in fake.history  # answered without waiting for ComfyUI's history
    entry = await history_of(fake, prompt_id)
    assert response.json()["outputs"] == entry["outputs"]


async def history_of(fake: FakeComfyUI, prompt_id: str) -> dict[str, Any]:
    for _ in range(500):
        if prompt_id in fake.history:
            entry: dict[str, Any] = fake.history[prompt_id]
            return entry
        await asyncio.sleep(0.01)
    raise AssertionError(f"{prompt_id} never reached the fake's history")


async def test_temp_previews_are_listed_and_text_outputs_kept(worker: Worker) -> None:
    response = await sync(worker, graphs.preview_and_text("hi there"), return_image_base64=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outputs"]["3"] == {"text": ["hi there"]}
    (image,) = body["images"]
    assert image["node_id"] == "2" and image["type"] == "temp"
    assert base64.b64decode(image["data"]).startswith(PNG_MAGIC)


async def test_runtime_error_names_the_node(worker: Worker) -> None:
    response = await sync(worker, graphs.failing("boom at node two"))
    body = assert_error(response, 500, "execution_error")
    assert "FailAlways" in body["detail"] and "boom at node two" in body["detail"]
    assert body["prompt_id"]
    error = body["node_errors"]["2"]
    assert error["class_type"] == "FailAlways"
    assert error["errors"][0]["type"] == "RuntimeError"
    assert error["errors"][0]["message"] == "boom at node two"


async def test_graph_rejected_by_comfyui_is_400_with_node_errors(worker: Worker) -> None:
    graph = graphs.save()
    del graph["1"]["inputs"]["height"]
    body = assert_error(await sync(worker, graph), 400, "invalid_prompt")
    assert body["node_errors"]["1"]["errors"][0]["type"] == "required_input_missing"
    assert body["prompt_id"] is None


async def test_unknown_node_class_is_400_in_both_generations(worker: Worker) -> None:
    graph = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    body = assert_error(await sync(worker, graph), 400, "invalid_prompt")
    assert "NoSuchNode" in body["detail"]


async def test_graph_without_outputs_is_400(worker: Worker) -> None:
    body = assert_error(await sync(worker, {"1": graphs.empty_image()}), 400, "invalid_prompt")
    assert "no outputs" in body["detail"].lower()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({}, 422),
        ({"prompt": []}, 422),
        ({"prompt": {}}, 422),
        ({"prompt": {"1": {"inputs": {}}}}, 422),
        ({"prompt": {"1": "EmptyImage"}}, 422),
    ],
)
async def test_malformed_bodies_are_4xx_and_reach_no_comfyui(
    worker: Worker, fake: FakeComfyUI, payload: dict[str, Any], status: int
) -> None:
    async with worker.http() as http:
        response = await http.post("/prompt_sync", json=payload)
    assert_error(response, status, "invalid_request")
    assert not [r for r in fake.requests if r.path.endswith("/prompt") and r.method == "POST"]


async def test_body_that_is_not_json_is_4xx(worker: Worker) -> None:
    async with worker.http() as http:
        response = await http.post(
            "/prompt_sync", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert_error(response, 422, "invalid_request")


async def test_timeout_above_the_maximum_is_refused(worker: Worker) -> None:
    response = await sync(worker, graphs.save(), timeout=worker.settings.max_timeout + 1)
    assert_error(response, 400, "invalid_request")


async def test_timeout_interrupts_the_running_prompt(worker: Worker, fake: FakeComfyUI) -> None:
    started = time.monotonic()
    response = await sync(worker, graphs.slow(5.0, steps=50), timeout=1)
    body = assert_error(response, 504, "timeout")
    assert time.monotonic() - started < 3
    prompt_id = body["prompt_id"]
    # The interrupt was sent before the answer; the node stops at its next check.
    assert {"prompt_id": prompt_id} in fake.interrupts
    await fake.wait_for(lambda: prompt_id in fake.interrupted)
    await fake.wait_for(lambda: fake.running_id() is None)
    assert fake.history[prompt_id]["status"]["status_str"] == "error"


async def test_timeout_deletes_a_pending_prompt(worker: Worker, fake: FakeComfyUI) -> None:
    fake.hold = True
    response = await sync(worker, graphs.save("pending"), timeout=1)
    body = assert_error(response, 504, "timeout")
    assert body["prompt_id"] in fake.deleted
    assert body["prompt_id"] not in fake.pending_ids()
    fake.hold = False
    await asyncio.sleep(0.2)
    assert body["prompt_id"] not in fake.history


async def test_caller_disconnect_cancels_the_prompt(worker: Worker, fake: FakeComfyUI) -> None:
    async with worker.http() as http:
        request = asyncio.create_task(
            http.post("/prompt_sync", json={"prompt": graphs.slow(5.0, steps=50)})
        )
        await fake.wait_for(lambda: fake.running_id() is not None)
        running = fake.running_id()
        request.cancel()  # closes the connection mid-request
        with pytest.raises(asyncio.CancelledError):
            await request
    await fake.wait_for(lambda: running in fake.interrupted, timeout=5)
    await fake.wait_for(lambda: fake.running_id() is None)


async def test_interrupted_by_someone_else_is_409(worker: Worker, fake: FakeComfyUI) -> None:
    request = asyncio.create_task(sync(worker, graphs.slow(5.0, steps=50)))
    await fake.wait_for(lambda: fake.running_id() is not None)
    async with httpx.AsyncClient(base_url=fake.url) as direct:
        await direct.post("/interrupt", json={"prompt_id": fake.running_id()})
    body = assert_error(await request, 409, "interrupted")
    assert "SleepWithProgress" in body["detail"]


async def test_prompt_deleted_while_pending_fails_promptly(
    worker: Worker, fake: FakeComfyUI
) -> None:
    fake.hold = True
    started = time.monotonic()
    request = asyncio.create_task(sync(worker, graphs.save("doomed"), timeout=20))
    await fake.wait_for(lambda: len(fake.pending_ids()) == 1)
    async with httpx.AsyncClient(base_url=fake.url) as direct:
        await direct.post("/queue", json={"delete": fake.pending_ids()})
    body = assert_error(await request, 409, "prompt_deleted")
    assert body["prompt_id"] in fake.deleted
    assert time.monotonic() - started < 5


async def test_websocket_dropped_mid_run_still_completes_by_polling(
    worker: Worker, fake: FakeComfyUI
) -> None:
    request = asyncio.create_task(sync(worker, graphs.slow(0.8, steps=8, prefix="polled")))
    await fake.wait_for(lambda: fake.running_id() is not None)
    fake.accept_websockets = False
    await fake.drop_websockets()
    response = await request
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["filename"].startswith("polled_")
    assert not worker.bridge.client.connected
    # A prompt queued while the socket is still down completes by polling too.
    response = await sync(worker, graphs.save("while-down"))
    assert response.status_code == 200, response.text
    fake.accept_websockets = True
    assert await worker.bridge.client.wait_connected(5)


async def test_comfyui_gone_mid_run_fails_well_before_the_timeout(
    worker: Worker, fake: FakeComfyUI
) -> None:
    request = asyncio.create_task(sync(worker, graphs.slow(30.0, steps=30), timeout=60))
    await fake.wait_for(lambda: fake.running_id() is not None)
    started = time.monotonic()
    await fake.crash()
    response = await request
    elapsed = time.monotonic() - started
    body = assert_error(response, 503, "comfyui_unavailable")
    assert response.headers["retry-after"]
    assert body["prompt_id"]
    assert elapsed < 10


async def test_comfyui_restart_mid_run_reports_the_prompt_lost_then_recovers(
    worker: Worker, fake: FakeComfyUI
) -> None:
    request = asyncio.create_task(sync(worker, graphs.slow(30.0, steps=30), timeout=60))
    await fake.wait_for(lambda: fake.running_id() is not None)
    await fake.crash()
    await fake.restart()
    response = await request
    # Either we noticed the outage (unavailable) or the restarted server forgot it (lost).
    assert response.status_code == 503, response.text
    assert response.json()["error"] in {"comfyui_unavailable", "prompt_lost"}
    assert await worker.bridge.client.wait_connected(5)
    again = await sync(worker, graphs.save("after-restart"))
    assert again.status_code == 200, again.text


async def test_unreachable_comfyui_is_503_with_retry_after(
    worker: Worker, fake: FakeComfyUI
) -> None:
    await fake.crash()
    response = await sync(worker, graphs.save())
    assert_error(response, 503, "comfyui_unavailable")
    assert int(response.headers["retry-after"]) > 0


async def test_fifty_concurrent_requests_get_their_own_outputs(
    worker: Worker, fake: FakeComfyUI
) -> None:
    fake.node_delay = 0.002
    responses = await asyncio.gather(
        *(sync(worker, graphs.save(f"req{i:02d}", color=i)) for i in range(50))
    )
    ids = set()
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        body = response.json()
        ids.add(body["prompt_id"])
        (image,) = body["images"]
        assert image["filename"].startswith(f"req{i:02d}_")
        assert body["outputs"] == fake.history[body["prompt_id"]]["outputs"]
    assert len(ids) == 50
    # All of it went over the one websocket: nothing was left tracked.
    assert worker.bridge.watcher.waiting == 0


async def test_history_written_after_execution_success_still_completes(
    worker: Worker, fake: FakeComfyUI
) -> None:
    # ComfyUI 0.8 sends execution_success before it writes history; widen that gap.
    fake.history_delay = 0.3
    response = await sync(worker, graphs.save("late-history"), return_image_base64=True)
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["filename"].startswith("late-history_")
