"""What every delivery mode shares: the per-request context and the mode interface."""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from comfyui.outputs import OutputSource
from comfyui.schemas import FileOutput

#: A token as the value of a `data` field in the compact JSON of the answer.
TOKEN = re.compile(rb'"data":"(inline-base64-[0-9a-f]{32})"')


@dataclass(frozen=True, slots=True)
class Encoding:
    """One file's base64 text, as the pieces the encoder produced (ASCII bytes)."""

    pieces: list[bytes]

    def text(self) -> str:
        return b"".join(self.pieces).decode("ascii")


class InlinePayloads:
    """base64 encodings of one answer, by token."""

    def __init__(self) -> None:
        self.payloads: dict[str, Encoding] = {}

    def add(self, payload: Encoding) -> str:
        token = f"inline-base64-{uuid.uuid4().hex}"
        self.payloads[token] = payload
        return token

    def get(self, token: str) -> Encoding | None:
        return self.payloads.get(token)


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """The request an output belongs to (provenance for the store, keys for S3)."""

    prompt_id: str
    graph: dict[str, Any]
    #: Request metadata safe to keep: request id, client id, caller metadata, options.
    request: dict[str, Any] = field(default_factory=dict)
    #: Base URL the caller reached the worker at, for worker URLs.
    base_url: str | None = None
    #: base64 encodings of this answer (base64 mode), by the token in `data`.
    inline: InlinePayloads = field(default_factory=InlinePayloads)


class Delivery(ABC):
    """One delivery mode. `deliver` reads the source once and fills the item's fields
    (`size`, and what the mode adds)."""

    mode: str
    #: False for a mode that only describes files: it is given their size, not their bytes.
    reads_bytes: bool = True

    @abstractmethod
    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        """Deliver the bytes of `source`; `name` is the file name they go by (after any
        conversion)."""
