"""base64 mode: the bytes inline, encoded once per file from its stream."""

from __future__ import annotations

import binascii

from comfyui.delivery.base import Delivery, DeliveryContext
from comfyui.outputs import OutputSource
from comfyui.schemas import FileOutput


async def encode_base64(source: OutputSource) -> tuple[str, int]:
    """The source as one base64 string, and its size in bytes.

    Encoded chunk by chunk (whole multiples of 3 bytes, so the pieces concatenate into
    one valid encoding) into one growing buffer, decoded to `str` once at the end.
    """
    encoded = bytearray()
    carry = b""
    size = 0
    async for chunk in source.chunks():
        size += len(chunk)
        if carry:
            chunk = carry + chunk
        whole = len(chunk) - len(chunk) % 3
        encoded += binascii.b2a_base64(memoryview(chunk)[:whole], newline=False)
        carry = chunk[whole:]
    encoded += binascii.b2a_base64(carry, newline=False)
    return encoded.decode("ascii"), size


class InlineDelivery(Delivery):
    mode = "base64"

    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        item.data, item.size = await encode_base64(source)
