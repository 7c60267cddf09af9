"""Delivery modes chosen from request and settings; conversion; the local store on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfyui.convert import Conversion, converted
from comfyui.delivery import Deliveries, DeliveryContext
from comfyui.delivery.inline import InlineDelivery
from comfyui.delivery.reference import ReferenceDelivery
from comfyui.delivery.s3 import S3Delivery
from comfyui.delivery.store import LocalStore
from comfyui.exceptions import InvalidRequestError
from comfyui.outputs import LocalSource
from comfyui.schemas import FileOutput, PromptSyncRequest
from config import Settings

GRAPH = {"1": {"class_type": "SaveImage", "inputs": {}}}


def request(**fields: Any) -> PromptSyncRequest:
    return PromptSyncRequest.model_validate({"prompt": GRAPH, **fields})


def item(filename: str = "a_00001_.png", node_id: str = "9") -> FileOutput:
    return FileOutput(
        node_id=node_id,
        kind="image",
        filename=filename,
        subfolder="",
        type="output",
        mime_type="image/png",
        size=0,
    )


async def test_mode_comes_from_the_request_then_the_settings(tmp_path: Path) -> None:
    deliveries = Deliveries(Settings(output_mode="store", store_dir=tmp_path))
    assert isinstance((await deliveries.plan(request())).delivery, LocalStore)
    assert isinstance(
        (await deliveries.plan(request(return_image_base64=True))).delivery, InlineDelivery
    )
    plan = await deliveries.plan(request(output={"mode": "reference"}))
    assert isinstance(plan.delivery, ReferenceDelivery) and plan.conversion is None
    plan = await deliveries.plan(request(output={"mode": "base64", "convert": {"format": "webp"}}))
    assert plan.conversion == Conversion("webp", 90)


@pytest.mark.parametrize(
    ("settings", "fields", "text"),
    [
        ({}, {"return_image_base64": True, "output": {"mode": "s3"}}, "return_image_base64"),
        ({}, {"output": {"mode": "reference", "convert": {"format": "jpeg"}}}, "convert"),
        ({}, {"output": {"mode": "store"}}, "STORE_DIR"),
        ({}, {"output": {"mode": "s3"}}, "bucket"),
        (
            {"s3_bucket": "b"},
            {"output": {"mode": "s3", "s3": {"endpoint_url": "http://s3.example.com"}}},
            "own access_key_id",
        ),
        (
            {"s3_bucket": "b"},
            {"output": {"mode": "s3", "s3": {"access_key_id": "only-half"}}},
            "both",
        ),
        (
            {},
            {
                "output": {
                    "mode": "s3",
                    "s3": {
                        "bucket": "b",
                        "endpoint_url": "http://169.254.169.254",
                        "access_key_id": "k",
                        "secret_access_key": "s",
                    },
                }
            },
            "not allowed",
        ),
        (
            {},
            {
                "output": {
                    "mode": "s3",
                    "s3": {
                        "bucket": "b",
                        "endpoint_url": "ftp://store.example.com",
                        "access_key_id": "k",
                        "secret_access_key": "s",
                    },
                }
            },
            "http and https",
        ),
    ],
)
async def test_options_the_worker_cannot_honour_are_400(
    settings: dict[str, Any], fields: dict[str, Any], text: str
) -> None:
    with pytest.raises(InvalidRequestError, match=text):
        await Deliveries(Settings(**settings)).plan(request(**fields))


async def test_request_s3_options_override_the_settings() -> None:
    deliveries = Deliveries(
        Settings(
            s3_bucket="configured",
            s3_prefix="p/",
            s3_region="eu-west-1",
            s3_allow_private_endpoints=True,
        )
    )
    configured = await deliveries.plan(request(output={"mode": "s3"}))
    assert isinstance(configured.delivery, S3Delivery)
    assert configured.delivery.target.bucket == "configured"
    again = await deliveries.plan(request(output={"mode": "s3", "s3": {"presign_expiry": 60}}))
    assert isinstance(again.delivery, S3Delivery)
    assert again.delivery.client is configured.delivery.client
    assert again.delivery.target.presign_expiry == 60
    own = await deliveries.plan(
        request(
            output={
                "mode": "s3",
                "s3": {
                    "endpoint_url": "http://127.0.0.1:9/",
                    "bucket": "mine",
                    "prefix": "",
                    "access_key_id": "k",
                    "secret_access_key": "s",
                },
            }
        )
    )
    assert isinstance(own.delivery, S3Delivery)
    target = own.delivery.target
    assert (target.bucket, target.prefix, target.endpoint_url, target.region) == (
        "mine",
        "",
        "http://127.0.0.1:9",
        "eu-west-1",
    )
    assert (target.access_key_id, target.secret_access_key) == ("k", "s")
    assert "s3cr3t" not in repr(request(output={"s3": {"secret_access_key": "s3cr3t"}}).output)


def image_file(path: Path, mode: str = "RGBA", frames: int = 1) -> Path:
    images = [Image.new(mode, (8, 8), (i * 40, 0, 0, 128)[: len(mode)]) for i in range(frames)]
    if frames > 1:
        images[0].save(path, save_all=True, append_images=images[1:], duration=50)
    else:
        images[0].save(path)
    return path


@pytest.mark.parametrize(
    ("fmt", "pillow", "mime"), [("webp", "WEBP", "image/webp"), ("jpeg", "JPEG", "image/jpeg")]
)
async def test_conversion_writes_a_valid_image(
    tmp_path: Path, fmt: Any, pillow: str, mime: str
) -> None:
    source = LocalSource(image_file(tmp_path / "a.png"))
    conversion = Conversion(fmt, 70)
    async with converted(source, conversion, name="a.png") as (result, changed):
        assert changed and result.path is not None
        with Image.open(result.path) as image:
            assert image.format == pillow and image.size == (8, 8)
        assert Image.MIME[pillow] == mime == conversion.mime_type
        temp = result.path
    assert not temp.exists()
    assert conversion.rename("a_00001_.png") == f"a_00001_.{'jpg' if fmt == 'jpeg' else 'webp'}"


async def test_animations_are_left_as_they_are(tmp_path: Path) -> None:
    source = LocalSource(image_file(tmp_path / "anim.gif", mode="L", frames=3))
    async with converted(source, Conversion("webp", 80), name="anim.gif") as (result, changed):
        assert not changed
        assert result.path == tmp_path / "anim.gif"


async def test_store_keeps_one_file_per_content_with_every_provenance(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "a.png").write_bytes(b"same bytes")
    (tmp_path / "b.png").write_bytes(b"same bytes")
    (tmp_path / "c.png").write_bytes(b"other bytes")
    context = DeliveryContext(prompt_id="p1", graph=GRAPH, request={"request_id": "r1"})
    items = [item("a.png", "1"), item("b.png", "2"), item("c.png", "3")]
    for delivered in items:
        await store.deliver(
            delivered, LocalSource(tmp_path / delivered.filename), delivered.filename, context
        )
    check_store_layout(items)


def check_store_layout(items: list[FileOutput]) -> None:
    assert items[0].path == items[1].path != items[2].path
    assert items[0].sha256 == items[1].sha256 and items[0].size == 10
    stored = Path(str(items[0].path))
    assert stored.read_bytes() == b"same bytes" and stored.name == f"{items[0].sha256}.png"
    day = stored.parent
    assert sorted(p.name for p in day.iterdir()) == sorted(
        [
            stored.name,
            stored.name + ".json",
            f"{items[2].sha256}.png",
            f"{items[2].sha256}.png.json",
        ]
    )
    sidecar = json.loads((day / (stored.name + ".json")).read_text())
    assert sidecar["sha256"] == items[0].sha256 and sidecar["size"] == 10
    assert sidecar["mime_type"] == "image/png" and sidecar["created_at"]
    assert [(p["node_id"], p["filename"]) for p in sidecar["provenance"]] == [
        ("1", "a.png"),
        ("2", "b.png"),
    ]
    assert sidecar["provenance"][0]["graph"] == GRAPH
    assert sidecar["provenance"][0]["request"] == {"request_id": "r1"}
