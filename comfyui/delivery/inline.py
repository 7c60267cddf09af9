"""base64 mode: the bytes inline, encoded once per file from its stream.

The encoding is held once, as ASCII pieces, in the request's `InlinePayloads`; `data` of the
descriptor holds a token naming it. The answer is rendered with the payloads spliced in
where their tokens stand (`comfyui/answer.py`), so a large output is neither copied into a
Python string nor into the JSON text, however many fields show it.
"""

from __future__ import annotations

import pybase64

from comfyui.delivery.base import Delivery, DeliveryContext, Encoding
from comfyui.outputs import OutputSource
from comfyui.schemas import FileOutput


async def encode_base64(source: OutputSource) -> tuple[Encoding, int]:
    """The source's base64 encoding as ASCII pieces, and its size in bytes.

    Each chunk is encoded as it arrives, cut at a multiple of 3 bytes so the pieces
    concatenate into one valid encoding. The pieces are kept as the encoder made them: no
    buffer of the final size to fill (zeroing and copying 67 MB cost more than encoding a
    50 MB file), and the answer writes them to the socket as they are.
    """
    pieces: list[bytes] = []
    carry = b""
    size = 0
    async for chunk in source.chunks():
        size += len(chunk)
        if carry:
            chunk = carry + chunk
        whole = len(chunk) - len(chunk) % 3
        if whole:
            pieces.append(pybase64.b64encode(memoryview(chunk)[:whole]))
        carry = chunk[whole:]
    if carry:
        pieces.append(pybase64.b64encode(carry))
    return Encoding(pieces), size


class InlineDelivery(Delivery):
    mode = "base64"

    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        payload, item.size = await encode_base64(source)
        item.data = context.inline.add(payload)
