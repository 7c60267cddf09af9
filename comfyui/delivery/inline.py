"""base64 mode: the bytes inline, encoded once per file from its stream.

The encoding is held once, as ASCII bytes, in the request's `InlinePayloads`; `data` of the
descriptor holds a token naming it. The answer is rendered with the payloads spliced in
where their tokens stand (`comfyui/answer.py`), so a large output is neither copied into a
Python string nor into the JSON text, however many fields show it.
"""

from __future__ import annotations

import pybase64

from comfyui.delivery.base import Delivery, DeliveryContext
from comfyui.outputs import OutputSource
from comfyui.schemas import FileOutput


async def encode_base64(source: OutputSource) -> tuple[bytearray, int]:
    """The source's base64 encoding as ASCII bytes, and its size in bytes.

    Encoded chunk by chunk (whole multiples of 3 bytes, so the pieces concatenate into one
    valid encoding), into one buffer allocated at its final size when the size is known.
    """
    expected = source.size
    encoded = bytearray(4 * ((expected + 2) // 3)) if expected is not None else bytearray()
    written = 0
    carry = b""
    size = 0

    def put(piece: bytes) -> None:
        nonlocal written
        end = written + len(piece)
        if end > len(encoded):  # size unknown or wrong: grow instead
            encoded[written:] = piece
        else:
            encoded[written:end] = piece
        written = end

    async for chunk in source.chunks():
        size += len(chunk)
        if carry:
            chunk = carry + chunk
        whole = len(chunk) - len(chunk) % 3
        put(pybase64.b64encode(memoryview(chunk)[:whole]))
        carry = chunk[whole:]
    put(pybase64.b64encode(carry))
    del encoded[written:]
    return encoded, size


class InlineDelivery(Delivery):
    mode = "base64"

    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        payload, item.size = await encode_base64(source)
        item.data = context.inline.add(payload)
