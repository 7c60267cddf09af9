"""ComfyUI-compatible passthrough endpoints, /health and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests import graphs
from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker


async def test_prompt_passthrough_answers_like_comfyui(worker: Worker, fake: FakeComfyUI) -> None:
    async with worker.http() as http, httpx.AsyncClient(base_url=fake.url) as direct:
        via_worker = await http.post("/prompt", json={"prompt": graphs.save("pass")})
        assert via_worker.status_code == 200, via_worker.text
        body = via_worker.json()
        assert set(body) == {"prompt_id", "number", "node_errors"}
        await fake.wait_for(lambda: body["prompt_id"] in fake.history)

        graph = graphs.save()
        del graph["1"]["inputs"]["width"]
        rejected = await http.post("/prompt", json={"prompt": graph})
        direct_rejected = await direct.post("/prompt", json={"prompt": graph})
        assert rejected.status_code == direct_rejected.status_code
        assert rejected.json() == direct_rejected.json()

        history = await http.get(f"/history/{body['prompt_id']}")
        assert history.json() == (await direct.get(f"/history/{body['prompt_id']}")).json()


async def test_prompt_passthrough_refuses_bodies_that_are_not_json(
    worker: Worker, fake: FakeComfyUI
) -> None:
    async with worker.http() as http:
        response = await http.post("/prompt", content=b"not json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert not [r for r in fake.requests if r.method == "POST" and r.path.endswith("/prompt")]


async def test_view_queue_and_interrupt_pass_through(worker: Worker, fake: FakeComfyUI) -> None:
    async with worker.http() as http:
        done = (await http.post("/prompt_sync", json={"prompt": graphs.save("viewed")})).json()
        image = done["images"][0]
        view = await http.get(
            "/view", params={"filename": image["filename"], "type": "output", "subfolder": ""}
        )
        assert view.status_code == 200 and view.headers["content-type"] == "image/png"
        assert view.content == (fake.output_dir / image["filename"]).read_bytes()
        assert (await http.get("/view", params={"filename": "../../etc/passwd"})).status_code == 400
        assert (await http.get("/view", params={"filename": "nope.png"})).status_code == 404

        queue = await http.get("/queue")
        assert queue.json() == {"queue_running": [], "queue_pending": []}
        assert (await http.post("/interrupt", json={})).status_code == 200
        assert fake.interrupts


async def test_upload_image_passes_multipart_through(worker: Worker, fake: FakeComfyUI) -> None:
    async with worker.http() as http:
        response = await http.post(
            "/upload/image",
            files={"image": ("upload.png", b"\x89PNG\r\n\x1a\nfake", "image/png")},
            data={"overwrite": "true"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "upload.png"
    assert (fake.input_dir / "upload.png").read_bytes().startswith(b"\x89PNG")


async def test_health_is_liveness_with_the_last_probe(worker: Worker, fake: FakeComfyUI) -> None:
    async with worker.http() as http:
        healthy = await http.get("/health")
        assert healthy.status_code == 200
        body = healthy.json()
        assert body["status"] == "healthy" and body["comfyui_server"] == "connected"
        assert body["queue_running"] == 0 and body["queue_pending"] == 0
        assert body["websocket_connected"] is True and body["last_probe"]
        await fake.crash()
        await fake.wait_for(lambda: not worker.bridge.watchdog.health.ok)
        # A dead ComfyUI is not a reason to restart the worker: liveness stays 200.
        after = await http.get("/health")
    assert after.status_code == 200
    assert after.json()["comfyui_server"] == "disconnected"
    assert after.json()["websocket_connected"] is False


async def test_unknown_route_uses_the_error_shape(worker: Worker) -> None:
    async with worker.http() as http:
        response = await http.get("/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "detail", "prompt_id", "node_errors", "timestamp"}


async def test_openapi_describes_every_endpoint(worker: Worker) -> None:
    async with worker.http() as http:
        schema = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
    assert docs.status_code == 200
    paths = schema["paths"]
    for path in ("/prompt_sync", "/prompt", "/health", "/queue", "/history/{prompt_id}", "/view"):
        assert path in paths, path
    sync = paths["/prompt_sync"]["post"]
    assert sync["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PromptSyncRequest"
    )
    assert sync["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PromptSyncResponse"
    )
    assert sync["responses"]["504"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse"
    )
