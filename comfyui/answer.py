"""The HTTP answer of `/prompt_sync`: JSON with base64 payloads spliced in, not copied.

In base64 mode each `data` field holds a token naming an encoding kept once as ASCII pieces
(`delivery/inline.py`). The answer is the model's JSON with every token replaced by those
pieces, written to the socket as they are, with an exact Content-Length: peak memory stays
near one copy of the encodings, however large.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from comfyui.delivery.base import TOKEN, Encoding
from comfyui.schemas import PromptSyncResponse


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


def _text(data: str | None, inline: dict[str, Encoding]) -> str | None:
    payload = inline.get(data) if data is not None else None
    return payload.text() if payload is not None else data


def _spliced(body: bytes, inline: dict[str, Encoding]) -> list[bytes | memoryview]:
    view = memoryview(body)
    parts: list[bytes | memoryview] = []
    position = 0
    for match in TOKEN.finditer(body):
        payload = inline.get(match.group(1).decode())
        if payload is None:
            continue
        parts.append(view[position : match.start(1)])
        parts += payload.pieces
        position = match.end(1)
    parts.append(view[position:])
    return parts


async def _pieces(parts: list[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    # An async iterator: Starlette would run a plain one in a thread, a hop per piece.
    for part in parts:
        yield part
