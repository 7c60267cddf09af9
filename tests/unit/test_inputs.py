"""Input images: names, decoding, image checks and graph references (no ComfyUI needed)."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from comfyui.exceptions import (
    ForbiddenInputURLError,
    InputTooLargeError,
    InvalidInputError,
    InvalidRequestError,
)
from comfyui.inputs import (
    InputImages,
    decode_base64,
    identify_image,
    rewrite_references,
    safe_name,
)
from comfyui.schemas import InputImage
from comfyui.url_fetch import AddressPolicy, UrlFetcher
from config import Settings


def png_bytes(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def inputs() -> InputImages:
    settings = Settings(max_input_images=3, input_image_max_bytes=4096)
    fetcher = UrlFetcher(AddressPolicy(), max_bytes=4096, timeout=1, max_redirects=0)
    return InputImages(client=None, fetcher=fetcher, settings=settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["face.png", "my face (1).png", "visage-été.JPG", "a..b.png"])
def test_plain_names_are_kept(name: str) -> None:
    assert safe_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../face.png",
        "..",
        "/etc/passwd",
        "sub/face.png",
        "sub\\face.png",
        "C:face.png",
        ".hidden.png",
        "nul\x00.png",
        "new\nline.png",
        " pad.png",
        "pad.png ",
        "lone\ud800surrogate.png",
        "right\u202eleft.png",
        "",
        "x" * 256 + ".png",
    ],
)
def test_names_that_could_escape_or_confuse_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        safe_name(name)


def test_base64_is_decoded_strictly() -> None:
    data = png_bytes()
    encoded = base64.b64encode(data).decode()
    assert decode_base64(encoded, max_bytes=4096) == data
    assert decode_base64(encoded.rstrip("="), max_bytes=4096) == data  # padding optional
    wrapped = "\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20))
    assert decode_base64(wrapped, max_bytes=4096) == data
    with pytest.raises(InvalidInputError, match="base64"):
        decode_base64("not base64 at all!", max_bytes=4096)
    with pytest.raises(InputTooLargeError):
        decode_base64(base64.b64encode(b"x" * 5000).decode(), max_bytes=4096)


def test_only_images_pass_the_image_check() -> None:
    assert identify_image(png_bytes()) == "image/png"
    with pytest.raises(InvalidInputError, match="not an image"):
        identify_image(b"%PDF-1.4 definitely not an image")
    with pytest.raises(InvalidInputError):
        identify_image(png_bytes()[:40])  # truncated


async def test_data_uris_and_base64_are_prepared(inputs: InputImages) -> None:
    data = png_bytes()
    encoded = base64.b64encode(data).decode()
    prepared = await inputs.prepare(
        [
            InputImage(name="a.png", image=encoded),
            InputImage(name="b.png", image=f"data:image/png;base64,{encoded}"),
        ]
    )
    assert [(p.name, p.data, p.mime_type) for p in prepared] == [
        ("a.png", data, "image/png"),
        ("b.png", data, "image/png"),
    ]


@pytest.mark.parametrize(
    ("images", "error", "text"),
    [
        (
            [InputImage(name="a.png", image="AAAA"), InputImage(name="a.png", image="AAAA")],
            InvalidInputError,
            "used twice",
        ),
        ([InputImage(name="a.png", image="@@@@")], InvalidInputError, "'a.png'"),
        ([InputImage(name="a.png", image="data:image/png,abc")], InvalidInputError, "base64"),
        (
            [InputImage(name="a.png", image=base64.b64encode(b"hello world").decode())],
            InvalidInputError,
            "not an image",
        ),
        ([InputImage(name="a.png", image="file:///etc/passwd")], ForbiddenInputURLError, "file"),
        (
            [InputImage(name="a.png", image="http://127.0.0.1/x.png")],
            ForbiddenInputURLError,
            "non-public",
        ),
        ([InputImage(name=f"{i}.png", image="AAAA") for i in range(4)], InvalidRequestError, "3"),
    ],
)
async def test_bad_inputs_get_errors_naming_them(
    inputs: InputImages, images: list[InputImage], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        await inputs.prepare(images)
    await inputs.fetcher.close()


def test_references_to_renamed_uploads_are_rewritten() -> None:
    graph: dict[str, dict[str, Any]] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "other.png"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    rewritten = rewrite_references(graph, {"face.png": "face (1).png"})
    assert rewritten["1"]["inputs"]["image"] == "face (1).png"
    assert rewritten["2"]["inputs"]["image"] == "other.png"
    assert rewritten["3"]["inputs"]["images"] == ["1", 0]
    assert graph["1"]["inputs"]["image"] == "face.png"  # the caller's graph is left alone
