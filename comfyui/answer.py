"""The HTTP answer of `/prompt_sync`: JSON with base64 payloads spliced in, not copied.

In base64 mode each `data` field holds a token naming an encoding kept once as ASCII bytes
(`delivery/inline.py`). The answer is the model's JSON with every token replaced by its
bytes, streamed piece by piece with an exact Content-Length: peak memory stays near one copy
of the encodings, however large, and however many fields (`images`, `files`) show them.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.responses import Response, StreamingResponse

from comfyui.delivery.base import TOKEN
from comfyui.schemas import PromptSyncResponse

_PIECE = 1024 * 1024


def render_answer(answer: PromptSyncResponse) -> Response:
    body = answer.model_dump_json().encode()
    parts = _spliced(body, answer._inline)
    if len(parts) == 1:
        return Response(body, media_type="application/json")
    length = sum(len(part) for part in parts)
    return StreamingResponse(
        _pieces(parts), media_type="application/json", headers={"Content-Length": str(length)}
    )


def materialize(answer: PromptSyncResponse) -> PromptSyncResponse:
    """A copy whose `data` fields hold the base64 text itself (for in-process callers)."""
    inline = answer._inline
    copy = answer.model_copy(deep=True)
    for item in copy.files:
        item.data = _text(item.data, inline)
    for image in copy.images:
        image.data = _text(image.data, inline)
    return copy


def _text(data: str | None, inline: dict[str, bytearray]) -> str | None:
    payload = inline.get(data) if data is not None else None
    return payload.decode("ascii") if payload is not None else data


def _spliced(body: bytes, inline: dict[str, bytearray]) -> list[memoryview]:
    view = memoryview(body)
    parts: list[memoryview] = []
    position = 0
    for match in TOKEN.finditer(body):
        payload = inline.get(match.group(1).decode())
        if payload is None:
            continue
        parts += [view[position : match.start(1)], memoryview(payload)]
        position = match.end(1)
    parts.append(view[position:])
    return parts


def _pieces(parts: list[memoryview]) -> Iterator[bytes]:
    for part in parts:
        for start in range(0, len(part), _PIECE):
            yield bytes(part[start : start + _PIECE])
