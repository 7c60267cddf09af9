"""Input images of `/prompt_sync`: names checked, bytes decoded or downloaded, verified to be
images, then uploaded into ComfyUI's input folder so `LoadImage` nodes can name them.

All inputs are decoded and verified before the first upload, and all uploads finish before
the graph is queued: when any input fails, nothing is queued.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import structlog
from PIL import Image, UnidentifiedImageError

from comfyui.client import ComfyUIClient
from comfyui.exceptions import (
    ComfyUIProtocolError,
    ForbiddenInputURLError,
    InputTooLargeError,
    InvalidInputError,
    InvalidRequestError,
)
from comfyui.schemas import InputImage
from comfyui.tasks import gather_or_cancel
from comfyui.url_fetch import UrlFetcher
from config import Settings

log = structlog.get_logger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An input image ready to upload."""

    name: str
    data: bytes
    mime_type: str


def safe_name(name: str) -> str:
    """`name` if it is a plain file name; anything that could leave the input folder or
    confuse it (separators, `..`, drive letters, control characters, edge whitespace) is
    refused."""
    # Refused rather than cleaned: the graph names the file exactly as the caller wrote it.
    cleaned = name
    problem = None
    if not cleaned:
        problem = "is empty"
    elif cleaned != cleaned.strip():
        problem = "starts or ends with whitespace"
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in cleaned):
        problem = "contains control, format or unassigned characters"
    elif len(cleaned.encode()) > _MAX_NAME:
        problem = f"is longer than {_MAX_NAME} bytes"
    elif "/" in cleaned or "\\" in cleaned:
        problem = "contains a path separator (no folders, no absolute paths)"
    elif cleaned in (".", "..") or cleaned.startswith("."):
        problem = "starts with a dot"
    elif ":" in cleaned:
        problem = "contains ':'"
    if problem:
        raise InvalidInputError(f"input image name {name!r} {problem}")
    return cleaned


def identify_image(data: bytes) -> str:
    """The MIME type of `data` if Pillow recognises it as an image, else `InvalidInputError`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidInputError("not an image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"a damaged image ({exc})") from None
    return Image.MIME.get(image_format or "", "application/octet-stream")


def decode_base64(text: str, *, max_bytes: int) -> bytes:
    """Strict standard base64 (whitespace ignored, padding optional)."""
    compact = _WHITESPACE.sub("", text)
    if len(compact) // 4 * 3 > max_bytes + 3:
        raise InputTooLargeError(f"over the limit of {max_bytes} bytes (INPUT_IMAGE_MAX_BYTES)")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("neither valid base64, a data URI nor an http(s) URL") from None
    if len(data) > max_bytes:
        raise InputTooLargeError(f"over the limit of {max_bytes} bytes (INPUT_IMAGE_MAX_BYTES)")
    if not data:
        raise InvalidInputError("no bytes")
    return data


class InputImages:
    """Prepares and uploads the input images of one request at a time (stateless)."""

    def __init__(self, client: ComfyUIClient, fetcher: UrlFetcher, settings: Settings) -> None:
        self.client = client
        self.fetcher = fetcher
        self.settings = settings

    async def apply(
        self, images: list[InputImage], graph: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Upload `images` and answer the graph to queue: `graph` itself, or a copy whose
        references were rewritten to the names ComfyUI stored (when it had to rename)."""
        if not images:
            return graph
        decoded = await self.prepare(images)
        stored = await self.upload(decoded)
        renamed = {name: final for name, final in stored.items() if name != final}
        return rewrite_references(graph, renamed) if renamed else graph

    async def prepare(self, images: list[InputImage]) -> list[DecodedImage]:
        """Check names, then decode or download every image and verify it."""
        limit = self.settings.max_input_images
        if len(images) > limit:
            raise InvalidRequestError(f"{len(images)} input images; at most {limit} are accepted")
        names: list[str] = []
        for index, item in enumerate(images):
            try:
                name = safe_name(item.name)
            except InvalidInputError as exc:
                raise InvalidInputError(f"images[{index}]: {exc.detail}") from None
            if name in names:
                raise InvalidInputError(
                    f"images[{index}]: the name {name!r} is used twice in this request"
                )
            names.append(name)
        # The first failure cancels the other downloads.
        return await gather_or_cancel(
            *(
                self._decode(index, name, item.image)
                for index, (name, item) in enumerate(zip(names, images, strict=True))
            )
        )

    async def upload(self, decoded: list[DecodedImage]) -> dict[str, str]:
        """Upload into ComfyUI's input folder; answers name -> the name LoadImage must use."""
        answers = await gather_or_cancel(*(self._upload_one(d) for d in decoded))
        stored: dict[str, str] = {}
        for image, answer in zip(decoded, answers, strict=True):
            subfolder = str(answer.get("subfolder") or "")
            final = f"{subfolder}/{answer['name']}" if subfolder else str(answer["name"])
            stored[image.name] = final
            log.info("input_uploaded", name=image.name, stored_as=final, size=len(image.data))
        return stored

    async def _upload_one(self, image: DecodedImage) -> dict[str, Any]:
        """Upload without overwriting; ComfyUI's `{"name", "subfolder", "type"}`, where `name`
        differs from ours when ComfyUI renamed the upload to keep another file of that name."""
        response = await self.client.upload_image(
            image.data, filename=image.name, content_type=image.mime_type, overwrite=False
        )
        if response.status != 200:
            raise ComfyUIProtocolError(
                f"ComfyUI /upload/image answered {response.status} for {image.name!r}"
            )
        try:
            answer = json.loads(response.body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise ComfyUIProtocolError("ComfyUI /upload/image answered an unexpected body")
        return answer

    async def _decode(self, index: int, name: str, source: str) -> DecodedImage:
        max_bytes = self.settings.input_image_max_bytes
        try:
            text = source.strip()
            if text[:5].lower() == "data:":
                data = _decode_data_uri(text, max_bytes=max_bytes)
            elif text[:7].lower() == "http://" or text[:8].lower() == "https://":
                data = await self.fetcher.fetch(text)
            elif _SCHEME.match(text):  # base64 never holds a ':'
                scheme = text.split(":", 1)[0]
                raise ForbiddenInputURLError(f"only http and https URLs are fetched, not {scheme}")
            else:
                data = decode_base64(text, max_bytes=max_bytes)
            mime_type = await asyncio.to_thread(identify_image, data)
        except InvalidInputError as exc:
            raise _with_name(exc, index, name) from None
        return DecodedImage(name=name, data=data, mime_type=mime_type)


def rewrite_references(
    graph: dict[str, dict[str, Any]], renamed: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """A copy of `graph` where every string input equal to a renamed name names the new one."""
    rewritten = copy.deepcopy(graph)
    for node in rewritten.values():
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for key, value in inputs.items():
            if isinstance(value, str) and value in renamed:
                inputs[key] = renamed[value]
    return rewritten


def _decode_data_uri(text: str, *, max_bytes: int) -> bytes:
    match = _DATA_URI.match(text)
    if match is None:
        raise InvalidInputError("a malformed data URI")
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    if "base64" not in params:
        raise InvalidInputError("a data URI without ';base64' (only base64 data URIs are read)")
    return decode_base64(text[match.end() :], max_bytes=max_bytes)


def _with_name(exc: InvalidInputError, index: int, name: str) -> InvalidInputError:
    """The same error, its detail naming the input."""
    return type(exc)(f"input image {name!r} (images[{index}]): {exc.detail}")
