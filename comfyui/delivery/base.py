"""What every delivery mode shares: the per-request context and the mode interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from comfyui.outputs import OutputSource
from comfyui.schemas import FileOutput


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """The request an output belongs to (provenance for the store, keys for S3)."""

    prompt_id: str
    graph: dict[str, Any]
    #: Request metadata safe to keep: request id, client id, caller metadata, options.
    request: dict[str, Any] = field(default_factory=dict)
    #: Base URL the caller reached the worker at, for worker URLs.
    base_url: str | None = None


class Delivery(ABC):
    """One delivery mode. `deliver` reads the source once and fills the item's fields
    (`size`, and what the mode adds)."""

    mode: str

    @abstractmethod
    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        """Deliver the bytes of `source`; `name` is the file name they go by (after any
        conversion)."""
