"""Readiness, reconnection, backpressure, limits, access control and metrics, with faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import graphs
from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker, running_worker, worker_settings

ERROR_KEYS = {"error", "detail", "prompt_id", "node_errors", "timestamp"}


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def is_ready(worker: Worker) -> bool:
    async with worker.http() as http:
        return (await http.get("/ready")).status_code == 200


@pytest.fixture
async def tuned(fake: FakeComfyUI, request: pytest.FixtureRequest) -> AsyncIterator[Worker]:
    """A worker with the settings of the test's `settings` marker."""
    marker = request.node.get_closest_marker("settings")
    overrides = dict(marker.kwargs) if marker else {}
    async with running_worker(worker_settings(fake.address, **overrides)) as running:
        yield running


# -- liveness and readiness -------------------------------------------------------------


async def test_liveness_stays_up_while_readiness_follows_comfyui(
    worker: Worker, fake: FakeComfyUI
) -> None:
    await wait_until(lambda: is_ready(worker))
    await fake.crash()
    await wait_until(lambda: _not(is_ready(worker)))
    async with worker.http() as http:
        live = await http.get("/health")
        ready = await http.get("/ready")
    assert live.status_code == 200
    assert live.json()["websocket_connected"] is False
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready" and ready.json()["reasons"]

    await fake.restart()
    started = time.monotonic()
    await wait_until(lambda: is_ready(worker))
    # The watchdog's probe cuts the reconnect backoff short: ready right after ComfyUI is.
    assert time.monotonic() - started < 5
    async with worker.http() as http:
        body = (await http.get("/health")).json()
    assert body["comfyui_server"] == "connected" and body["websocket_connected"] is True


async def _not(check: Any) -> bool:
    return not await check


async def test_not_ready_while_the_websocket_is_refused(worker: Worker, fake: FakeComfyUI) -> None:
    fake.accept_websockets = False
    await fake.drop_websockets()
    await wait_until(lambda: _not(is_ready(worker)))
    async with worker.http() as http:
        reasons = (await http.get("/ready")).json()["reasons"]
    assert any("websocket" in reason for reason in reasons)
    fake.accept_websockets = True
    await wait_until(lambda: is_ready(worker))


@pytest.mark.parametrize("graph_ok", [True, False])
async def test_ready_only_after_the_warmup_workflow_succeeded(
    fake: FakeComfyUI, tmp_path: Path, graph_ok: bool
) -> None:
    workflow = tmp_path / "warmup.json"
    graph = graphs.save("warmup") if graph_ok else graphs.failing("cold")
    workflow.write_text(json.dumps(graph))
    fake.hold = True
    settings = worker_settings(fake.address, warmup_workflow=workflow)
    async with running_worker(settings) as worker:
        async with worker.http() as http:
            ready = await http.get("/ready")
            assert ready.status_code == 503
            assert any("warm-up" in reason for reason in ready.json()["reasons"])
        fake.hold = False
        if graph_ok:
            await wait_until(lambda: is_ready(worker))
            assert any(
                entry["outputs"]
                .get("3", {})
                .get("images", [{}])[0]
                .get("filename", "")
                .startswith("warmup")
                for entry in fake.history.values()
            )
        else:
            await fake.wait_for(lambda: len(fake.history) >= 1)
            await asyncio.sleep(0.2)
            assert not await is_ready(worker)


# -- backpressure and limits ---------------------------------------------------------------


@pytest.mark.settings(max_concurrent_requests=2)
async def test_requests_over_the_concurrency_cap_get_429_at_once(
    tuned: Worker, fake: FakeComfyUI
) -> None:
    async with tuned.http() as http:
        slow = [
            asyncio.create_task(
                http.post("/prompt_sync", json={"prompt": graphs.slow(1.0, 10, color=i)})
            )
            for i in range(2)
        ]
        await fake.wait_for(lambda: fake.running_id() is not None)
        await fake.wait_for(lambda: tuned.bridge.admission.in_flight == 2)
        started = time.monotonic()
        refused = await http.post("/prompt_sync", json={"prompt": graphs.save()})
        assert time.monotonic() - started < 1
        assert refused.status_code == 429
        assert set(refused.json()) == ERROR_KEYS and refused.json()["error"] == "too_many_requests"
        assert int(refused.headers["retry-after"]) >= 1
        assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]


@pytest.mark.settings(max_queue_depth=2)
async def test_a_full_comfyui_queue_refuses_new_submissions(
    tuned: Worker, fake: FakeComfyUI
) -> None:
    fake.hold = True
    async with httpx.AsyncClient(base_url=fake.url) as direct:
        for i in range(3):
            await direct.post("/prompt", json={"prompt": graphs.save(color=100 + i)})
    await fake.wait_for(lambda: (tuned.bridge.client.queue_remaining or 0) >= 3)
    async with tuned.http() as http:
        refused = await http.post("/prompt_sync", json={"prompt": graphs.save()})
        passthrough = await http.post("/prompt", json={"prompt": graphs.save()})
    assert refused.status_code == passthrough.status_code == 429
    assert refused.headers["retry-after"]
    assert len(fake.pending_ids()) == 3  # nothing more was queued
    fake.hold = False


@pytest.mark.settings(max_body_bytes=2048, max_graph_nodes=3)
async def test_oversized_bodies_and_graphs_get_413(tuned: Worker, fake: FakeComfyUI) -> None:
    big = graphs.save()
    big["3"]["inputs"]["filename_prefix"] = "x" * 4096
    four_nodes = {**graphs.save(), "4": graphs.empty_image()}
    async with tuned.http() as http:
        too_big = await http.post("/prompt_sync", json={"prompt": big})
        streamed = await http.post(
            "/prompt_sync",
            content=_chunks(json.dumps({"prompt": big}).encode()),
            headers={"content-type": "application/json"},
        )
        too_many = await http.post("/prompt_sync", json={"prompt": four_nodes})
    for response in (too_big, streamed, too_many):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "payload_too_large"
    assert not [r for r in fake.requests if r.method == "POST" and r.path.endswith("/prompt")]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 512):
        yield data[start : start + 512]


@pytest.mark.settings(comfyui_request_timeout=0.3, comfyui_retry_attempts=1)
async def test_a_comfyui_that_answers_too_slowly_is_503_not_a_hang(
    tuned: Worker, fake: FakeComfyUI
) -> None:
    fake.http_delay = 2.0
    started = time.monotonic()
    async with tuned.http() as http:
        response = await http.post("/prompt_sync", json={"prompt": graphs.save()})
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.json()["error"] == "comfyui_unavailable"


# -- access --------------------------------------------------------------------------------


@pytest.mark.settings(api_keys="alpha, beta")
async def test_api_keys_guard_every_route_but_liveness(tuned: Worker) -> None:
    async with tuned.http() as http:
        assert (await http.get("/health")).status_code == 200
        for method, path in (
            ("GET", "/ready"),
            ("GET", "/queue"),
            ("GET", "/metrics"),
            ("GET", "/docs"),
            ("POST", "/prompt_sync"),
        ):
            response = await http.request(method, path, json={"prompt": graphs.save()})
            assert response.status_code == 401, path
            assert set(response.json()) == ERROR_KEYS
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/queue", headers={"Authorization": "Bearer gamma"})
        assert wrong.status_code == 401
        bearer = await http.post(
            "/prompt_sync",
            json={"prompt": graphs.save()},
            headers={"Authorization": "Bearer beta"},
        )
        header = await http.get("/queue", headers={"X-API-Key": "alpha"})
    assert bearer.status_code == 200, bearer.text
    assert header.status_code == 200


@pytest.mark.settings(api_keys="alpha,beta", rate_limit_per_minute=2)
async def test_rate_limit_is_per_key(tuned: Worker) -> None:
    async with tuned.http() as http:
        alpha = {"X-API-Key": "alpha"}
        codes = [
            (
                await http.post("/prompt_sync", json={"prompt": graphs.save()}, headers=alpha)
            ).status_code
            for _ in range(2)
        ]
        limited = await http.get("/view", params={"filename": "x.png"}, headers=alpha)
        other = await http.post(
            "/prompt_sync", json={"prompt": graphs.save()}, headers={"X-API-Key": "beta"}
        )
    assert codes == [200, 200]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert other.status_code == 200


@pytest.mark.settings(cors_origins="https://app.example")
async def test_cors_allows_only_configured_origins(tuned: Worker) -> None:
    async with tuned.http() as http:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = await http.options(
            "/prompt_sync", headers={"Origin": "https://app.example", **preflight}
        )
        refused = await http.options(
            "/prompt_sync", headers={"Origin": "https://evil.example", **preflight}
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in refused.headers


# -- metrics -------------------------------------------------------------------------------


async def test_metrics_count_requests_outcomes_and_connection(
    worker: Worker, fake: FakeComfyUI
) -> None:
    async with worker.http() as http:
        assert (await http.post("/prompt_sync", json={"prompt": graphs.save()})).status_code == 200
        assert (
            await http.post("/prompt_sync", json={"prompt": graphs.failing()})
        ).status_code == 500
        await fake.drop_websockets()
        assert await worker.bridge.client.wait_connected(5)
        text = (await http.get("/metrics")).text
    assert 'worker_prompts_total{outcome="success"} 1.0' in text
    assert 'worker_prompts_total{outcome="execution_error"} 1.0' in text
    assert (
        'worker_http_requests_total{endpoint="/prompt_sync",method="POST",status="200"} 1.0' in text
    )
    assert "worker_prompt_execution_seconds_count 1.0" in text
    assert "worker_comfyui_websocket_reconnects_total 1.0" in text
    assert "worker_inflight_requests 0.0" in text
    assert "worker_comfyui_queue_depth" in text
