"""Input images of /prompt_sync: uploaded before queueing and read by LoadImage; refused
clearly (and with nothing queued) when unusable or when a URL points inward."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from tests.fake_comfyui import FakeComfyUI
from tests.harness import Worker, running_worker, sync, worker_settings
from tests.origin import Origin, serve_origin

ERROR_KEYS = {"error", "detail", "prompt_id", "node_errors", "timestamp"}


def png(width: int = 5, height: int = 3, color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def load_and_save(name: str, prefix: str = "loaded") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def nothing_reached_comfyui(fake: FakeComfyUI) -> bool:
    return not [
        r for r in fake.requests if r.method == "POST" and r.path in ("/prompt", "/upload/image")
    ]


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with serve_origin() as server:
        yield server


@pytest.fixture
async def loopback_worker(fake: FakeComfyUI) -> AsyncIterator[Worker]:
    """A worker whose input URLs may reach 127.0.0.1 (only), as a test origin lives there."""
    settings = worker_settings(fake.address, input_url_allowed_networks="127.0.0.1/32")
    async with running_worker(settings) as running:
        yield running


@pytest.mark.parametrize("form", ["base64", "data_uri"])
async def test_inline_images_are_uploaded_and_loaded(
    worker: Worker, fake: FakeComfyUI, form: str
) -> None:
    data = png(7, 4)
    encoded = base64.b64encode(data).decode()
    image = encoded if form == "base64" else f"data:image/png;base64,{encoded}"
    response = await sync(
        worker,
        load_and_save("face.png"),
        images=[{"name": "face.png", "image": image}],
    )
    assert response.status_code == 200, response.text
    assert (fake.input_dir / "face.png").read_bytes() == data
    (output,) = response.json()["files"]
    with Image.open(fake.output_dir / output["filename"]) as saved:
        assert saved.size == (7, 4)  # LoadImage read the uploaded picture
    order = [r.path for r in fake.requests if r.method == "POST"]
    assert order.index("/upload/image") < order.index("/prompt")


async def test_url_images_are_downloaded_and_loaded(
    loopback_worker: Worker, fake: FakeComfyUI, origin: Origin
) -> None:
    origin.files["/pictures/cat.png"] = data = png(9, 2)
    response = await sync(
        loopback_worker,
        load_and_save("cat.png"),
        images=[{"name": "cat.png", "image": origin.url("/pictures/cat.png")}],
    )
    assert response.status_code == 200, response.text
    assert (fake.input_dir / "cat.png").read_bytes() == data
    assert origin.paths == ["/pictures/cat.png"]


async def test_a_name_taken_by_another_file_is_renamed_and_the_graph_follows(
    worker: Worker, fake: FakeComfyUI
) -> None:
    (fake.input_dir / "face.png").write_bytes(png(2, 2, (0, 0, 255)))
    response = await sync(
        worker,
        load_and_save("face.png"),
        images=[{"name": "face.png", "image": base64.b64encode(png(6, 6)).decode()}],
    )
    assert response.status_code == 200, response.text
    assert (fake.input_dir / "face (1).png").read_bytes() == png(6, 6)
    assert (fake.input_dir / "face.png").read_bytes() == png(2, 2, (0, 0, 255))  # untouched
    prompt = fake.history[response.json()["prompt_id"]]["prompt"][2]
    assert prompt["1"]["inputs"]["image"] == "face (1).png"
    with Image.open(fake.output_dir / response.json()["files"][0]["filename"]) as saved:
        assert saved.size == (6, 6)


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://127.0.0.1:{port}/image.png", "127.0.0.1"),
        ("http://localhost:{port}/image.png", "localhost"),
        ("http://[::1]:{port}/image.png", "::1"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
async def test_urls_pointing_inward_are_refused_and_nothing_is_queued(
    worker: Worker, fake: FakeComfyUI, origin: Origin, url: str, text: str
) -> None:
    response = await sync(
        worker,
        load_and_save("x.png"),
        images=[{"name": "x.png", "image": url.format(port=origin.port)}],
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == "input_url_forbidden"
    assert "'x.png'" in body["detail"] and text in body["detail"]
    assert origin.paths == []
    assert nothing_reached_comfyui(fake)


async def test_a_redirect_to_a_private_address_is_refused(
    loopback_worker: Worker, fake: FakeComfyUI, origin: Origin
) -> None:
    url = origin.url("/redirect?to=http://10.0.0.7/internal.png")
    response = await sync(
        loopback_worker,
        load_and_save("x.png"),
        images=[{"name": "x.png", "image": url}],
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "input_url_forbidden"
    assert "10.0.0.7" in response.json()["detail"]
    assert origin.paths == ["/redirect"]
    assert nothing_reached_comfyui(fake)


async def test_a_failed_download_is_a_400_naming_the_input(
    loopback_worker: Worker, fake: FakeComfyUI, origin: Origin
) -> None:
    response = await sync(
        loopback_worker,
        load_and_save("gone.png"),
        images=[{"name": "gone.png", "image": origin.url("/missing.png")}],
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "input_download_failed"
    assert "'gone.png'" in body["detail"] and "404" in body["detail"]
    assert nothing_reached_comfyui(fake)


@pytest.mark.parametrize(
    ("images", "status", "code", "text"),
    [
        ([{"name": "a.png", "image": "%%%not-base64%%%"}], 400, "invalid_input", "base64"),
        (
            [{"name": "a.png", "image": base64.b64encode(b"plain text, no picture").decode()}],
            400,
            "invalid_input",
            "not an image",
        ),
        (
            [{"name": "a.png", "image": base64.b64encode(b"\x89PNG" + bytes(5000)).decode()}],
            413,
            "input_too_large",
            "4096",
        ),
        ([{"name": "../a.png", "image": "AAAA"}], 400, "invalid_input", "separator"),
        ([{"name": "/etc/a.png", "image": "AAAA"}], 400, "invalid_input", "separator"),
        (
            [{"name": "a.png", "image": "AAAA"}, {"name": "a.png", "image": "AAAA"}],
            400,
            "invalid_input",
            "used twice",
        ),
        (
            # The first input is fine: still nothing may be uploaded or queued.
            [
                {"name": "ok.png", "image": base64.b64encode(png()).decode()},
                {"name": "bad.png", "image": "data:image/png,rawbytes"},
            ],
            400,
            "invalid_input",
            "'bad.png'",
        ),
    ],
)
async def test_unusable_inputs_get_a_clear_4xx_and_nothing_is_queued(
    fake: FakeComfyUI, images: list[dict[str, str]], status: int, code: str, text: str
) -> None:
    settings = worker_settings(fake.address, input_image_max_bytes=4096)
    async with running_worker(settings) as worker:
        response = await sync(worker, load_and_save("a.png"), images=images)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == code
    assert text in body["detail"]
    assert nothing_reached_comfyui(fake)
    assert list(fake.input_dir.iterdir()) == []
