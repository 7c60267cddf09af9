"""Outputs of every kind, in each delivery mode, through the worker against the fake ComfyUI.

S3 mode runs against moto's S3 server on a loopback port: objects are read back with boto3
and the pre-signed URLs are fetched over HTTP.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from tests import graphs
from tests.fake_comfyui import FakeComfyUI, RunContext
from tests.harness import Worker, running_worker, sync, worker_settings

ERROR_KEYS = {"error", "detail", "prompt_id", "node_errors", "timestamp"}
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4
AUDIO = b"fLaC" + bytes(300)
MESH = b"glTF" + bytes(200)
S3_KEYS = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret"}


def every_kind(fake: FakeComfyUI) -> dict[str, Any]:
    """A graph whose nodes write a saved image, a temp preview, a video, audio, a 3D model
    and a text; the fake gets the three media nodes it lacks."""

    def writer(key: str, subfolder: str, name: str, data: bytes) -> Any:
        async def node(ctx: RunContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
            folder = ctx.fake.output_dir / subfolder
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            return (), {key: [{"filename": name, "subfolder": subfolder, "type": "output"}]}

        return node

    fake.register_node(
        "FakeVideoCombine", writer("gifs", "vids", "clip_00001.mp4", VIDEO), output_node=True
    )
    fake.register_node(
        "FakeSaveAudio", writer("audio", "audio", "song_00001_.flac", AUDIO), output_node=True
    )
    fake.register_node("FakeSave3D", writer("3d", "3d", "mesh_00001_.glb", MESH), output_node=True)
    return {
        **graphs.save("kinds", color=3),
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "5": {"class_type": "FakeVideoCombine", "inputs": {}},
        "6": {"class_type": "FakeSaveAudio", "inputs": {}},
        "7": {"class_type": "FakeSave3D", "inputs": {}},
        "8": {"class_type": "ShowText", "inputs": {"text": "a caption"}},
    }


def on_disk(fake: FakeComfyUI, item: dict[str, Any]) -> bytes:
    folder: Path = fake.output_dir if item["type"] == "output" else fake.temp_dir
    return (folder / str(item["subfolder"]) / str(item["filename"])).read_bytes()


def views(fake: FakeComfyUI) -> int:
    return len([r for r in fake.requests if r.path == "/view"])


# -- every kind, reference and base64 ---------------------------------------------------------


async def test_every_output_kind_is_described_once_with_a_worker_url(
    worker: Worker, fake: FakeComfyUI
) -> None:
    response = await sync(worker, every_kind(fake))
    assert response.status_code == 200, response.text
    body = response.json()
    # Listed in history order, which is ComfyUI's execution order: compare sorted.
    kinds = sorted((f["node_id"], f["kind"], f["type"], f["mime_type"]) for f in body["files"])
    assert kinds == [
        ("3", "image", "output", "image/png"),
        ("4", "image", "temp", "image/png"),
        ("5", "video", "output", "video/mp4"),
        ("6", "audio", "output", "audio/flac"),
        ("7", "3d", "output", "model/gltf-binary"),
    ]
    assert body["texts"] == [{"node_id": "8", "text": "a caption"}]
    assert body["outputs"]["8"] == {"text": ["a caption"]}  # history, untouched
    assert sorted(i["node_id"] for i in body["images"]) == ["3", "4"]
    async with worker.http() as http:
        for item in body["files"]:
            assert item["data"] is None
            assert item["url"].startswith(worker.url + "/outputs/")
            served = await http.get(item["url"])
            assert served.status_code == 200
            assert served.content == on_disk(fake, item)
            assert item["size"] == len(served.content)
            assert served.headers["content-type"].startswith(item["mime_type"])
        assert (await http.get("/outputs/output/missing.png")).status_code == 404
        assert (await http.get("/outputs/input/x.png")).status_code == 404


async def test_reference_mode_asks_for_sizes_without_reading_the_files(
    worker: Worker, fake: FakeComfyUI
) -> None:
    response = await sync(worker, graphs.save("sized", color=11))
    assert response.status_code == 200, response.text
    (item,) = response.json()["files"]
    assert item["size"] == len(on_disk(fake, item))
    assert [r.method for r in fake.requests if r.path == "/view"] == ["HEAD"]


async def test_base64_mode_inlines_every_file_once(worker: Worker, fake: FakeComfyUI) -> None:
    response = await sync(worker, every_kind(fake), output={"mode": "base64"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["files"]) == 5
    for item in body["files"]:
        assert base64.b64decode(item["data"]) == on_disk(fake, item)
        assert item["size"] == len(on_disk(fake, item))
    assert body["images"]
    assert all(image["data"] is None for image in body["images"])


async def test_return_image_base64_puts_image_bytes_in_images_only(
    worker: Worker, fake: FakeComfyUI
) -> None:
    legacy = await sync(worker, every_kind(fake), return_image_base64=True)
    assert legacy.status_code == 200, legacy.text
    body = legacy.json()
    images = {(i["type"], i["filename"]): i for i in body["images"]}
    assert images
    for image in images.values():
        assert base64.b64decode(image["data"]) == on_disk(fake, image)
    for item in body["files"]:
        if (item["type"], item["filename"]) in images:
            assert item["data"] is None
        else:  # video, audio, ... keep theirs
            assert base64.b64decode(item["data"]) == on_disk(fake, item)


async def test_colocated_outputs_are_read_from_disk_not_through_view(fake: FakeComfyUI) -> None:
    settings = worker_settings(
        fake.address, comfyui_output_dir=fake.output_dir, comfyui_temp_dir=fake.temp_dir
    )
    async with running_worker(settings) as worker:
        response = await sync(worker, every_kind(fake), output={"mode": "base64"})
        assert response.status_code == 200, response.text
        for item in response.json()["files"]:
            assert base64.b64decode(item["data"]) == on_disk(fake, item)
        reference = await sync(worker, graphs.save("ref", color=8))
        url = reference.json()["files"][0]["url"]
        async with worker.http() as http:
            served = await http.get(url)
    assert served.content == on_disk(fake, reference.json()["files"][0])
    assert views(fake) == 0


async def test_a_colocated_path_leaving_its_folder_is_refused(fake: FakeComfyUI) -> None:
    (fake.root / "secret.png").write_bytes(b"not for callers")

    async def sneaky(ctx: RunContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
        return (), {"images": [{"filename": "secret.png", "subfolder": "..", "type": "output"}]}

    fake.register_node("Sneaky", sneaky, output_node=True)
    settings = worker_settings(fake.address, comfyui_output_dir=fake.output_dir)
    async with running_worker(settings) as worker:
        response = await sync(
            worker, {"1": {"class_type": "Sneaky", "inputs": {}}}, return_image_base64=True
        )
    assert response.status_code == 502, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == "output_unavailable"
    assert "outside the output folder" in body["detail"]
    assert "not for callers" not in response.text


# -- conversion ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "pillow"), [("webp", "WEBP"), ("jpeg", "JPEG")])
async def test_images_are_converted_when_asked(
    worker: Worker, fake: FakeComfyUI, fmt: str, pillow: str
) -> None:
    response = await sync(
        worker,
        every_kind(fake),
        output={"mode": "base64", "convert": {"format": fmt, "quality": 60}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    for item in body["files"]:
        data = base64.b64decode(item["data"])
        if item["kind"] != "image":
            assert data == on_disk(fake, item)  # only images are converted
            continue
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == pillow and image.size == (64, 64)
        assert item["mime_type"] == f"image/{fmt}" and item["size"] == len(data)
    assert {i["mime_type"] for i in body["images"]} == {f"image/{fmt}"}


async def test_conversion_in_reference_mode_is_refused_before_queueing(
    worker: Worker, fake: FakeComfyUI
) -> None:
    response = await sync(worker, graphs.save(), output={"convert": {"format": "webp"}})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert not [r for r in fake.requests if r.method == "POST" and r.path == "/prompt"]


# -- store ----------------------------------------------------------------------------------


async def test_store_mode_keeps_one_file_for_identical_outputs(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    graph = {
        **graphs.save("first", color=77),
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "dup"}},
    }
    settings = worker_settings(fake.address, store_dir=tmp_path / "store")
    async with running_worker(settings) as worker:
        response = await sync(
            worker,
            graph,
            client_id="caller-1",
            output={"mode": "store", "metadata": {"job": "j-42"}},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    first, second = body["files"]
    assert first["filename"] != second["filename"]
    assert first["sha256"] == second["sha256"] and first["path"] == second["path"]
    day = tmp_path / "store" / datetime.now(UTC).strftime("%Y-%m-%d")
    stored = day / f"{first['sha256']}.png"
    assert first["path"] == str(stored)
    assert sorted(p.name for p in day.iterdir()) == [stored.name, stored.name + ".json"]
    assert stored.read_bytes() == on_disk(fake, first) == on_disk(fake, second)
    sidecar = json.loads((day / (stored.name + ".json")).read_text())
    assert sidecar["sha256"] == first["sha256"] and sidecar["size"] == first["size"]
    assert sidecar["mime_type"] == "image/png" and sidecar["file"] == stored.name
    assert datetime.fromisoformat(sidecar["created_at"])
    records = sidecar["provenance"]
    # One record per output that produced these bytes, in the order they were stored.
    assert sorted((r["node_id"], r["filename"]) for r in records) == [
        ("3", first["filename"]),
        ("4", second["filename"]),
    ]
    for record in records:
        assert record["prompt_id"] == body["prompt_id"]
        assert record["graph"] == graph
        assert record["type"] == "output" and record["kind"] == "image"
        assert record["request"]["client_id"] == "caller-1"
        assert record["request"]["metadata"] == {"job": "j-42"}
        assert record["request"]["request_id"]
        assert datetime.fromisoformat(record["stored_at"])


async def test_store_mode_without_a_store_is_refused(worker: Worker) -> None:
    response = await sync(worker, graphs.save(), output={"mode": "store"})
    assert response.status_code == 400 and "STORE_DIR" in response.json()["detail"]


# -- s3 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS)
    for bucket in ("renders", "callers-own"):
        s3.create_bucket(Bucket=bucket)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
async def s3_worker(fake: FakeComfyUI, s3_endpoint: str) -> AsyncIterator[Worker]:
    settings = worker_settings(
        fake.address,
        s3_endpoint_url=s3_endpoint,
        s3_bucket="renders",
        s3_prefix="worker/",
        s3_region="us-east-1",
        s3_access_key_id=S3_KEYS["aws_access_key_id"],
        s3_secret_access_key=S3_KEYS["aws_secret_access_key"],
        s3_addressing_style="path",
        s3_presign_expiry=600,
    )
    async with running_worker(settings) as running:
        yield running


def read_object(endpoint: str, bucket: str, key: str) -> tuple[bytes, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS)
    answer = s3.get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), answer["ContentType"]


async def test_s3_mode_uploads_every_file_and_presigns_it(
    s3_worker: Worker, fake: FakeComfyUI, s3_endpoint: str
) -> None:
    response = await sync(s3_worker, every_kind(fake), output={"mode": "s3"})
    assert response.status_code == 200, response.text
    body = response.json()
    async with httpx.AsyncClient() as http:
        for item in body["files"]:
            assert item["bucket"] == "renders"
            folder = f"{item['subfolder']}/" if item["subfolder"] else ""
            assert item["key"] == (
                f"worker/{body['prompt_id']}/{item['node_id']}/{folder}{item['filename']}"
            )
            assert item["url"] == f"{s3_endpoint}/renders/{item['key']}"
            data, content_type = read_object(s3_endpoint, "renders", item["key"])
            assert data == on_disk(fake, item) and item["size"] == len(data)
            assert content_type == item["mime_type"]
            assert "X-Amz-Signature=" in item["presigned_url"]
            assert "X-Amz-Expires=600" in item["presigned_url"]
            fetched = await http.get(item["presigned_url"])
            assert fetched.status_code == 200 and fetched.content == data
            assert datetime.fromisoformat(item["expires_at"]) > datetime.now(UTC)


async def test_s3_options_of_the_request_win(
    s3_worker: Worker, fake: FakeComfyUI, s3_endpoint: str
) -> None:
    response = await sync(
        s3_worker,
        graphs.save("own", color=5),
        output={
            "mode": "s3",
            "convert": {"format": "jpeg"},
            "s3": {"bucket": "callers-own", "prefix": "mine/", "presign_expiry": 60},
        },
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["files"]
    assert item["bucket"] == "callers-own" and item["key"].startswith("mine/")
    assert item["key"].endswith(".jpg") and "X-Amz-Expires=60" in item["presigned_url"]
    data, content_type = read_object(s3_endpoint, "callers-own", item["key"])
    assert data.startswith(b"\xff\xd8") and content_type == "image/jpeg"


async def test_s3_endpoint_chosen_by_a_caller_must_be_public(
    s3_worker: Worker, fake: FakeComfyUI, s3_endpoint: str
) -> None:
    response = await sync(
        s3_worker,
        graphs.save(),
        output={
            "mode": "s3",
            "s3": {
                "endpoint_url": s3_endpoint,
                "access_key_id": "k",
                "secret_access_key": "s",
            },
        },
    )
    assert response.status_code == 400, response.text
    assert "S3_ALLOW_PRIVATE_ENDPOINTS" in response.json()["detail"]
    assert not [r for r in fake.requests if r.method == "POST" and r.path == "/prompt"]


async def test_an_unreachable_bucket_is_a_502_naming_the_prompt(
    s3_worker: Worker, fake: FakeComfyUI
) -> None:
    response = await sync(
        s3_worker, graphs.save(), output={"mode": "s3", "s3": {"bucket": "no-such-bucket"}}
    )
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "delivery_failed" and body["prompt_id"] in fake.history
    assert "no-such-bucket" in body["detail"]
