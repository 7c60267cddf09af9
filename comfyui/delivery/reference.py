"""Reference mode: describe the file and give a worker URL that serves its bytes."""

from __future__ import annotations

from urllib.parse import quote

from comfyui.delivery.base import Delivery, DeliveryContext
from comfyui.outputs import OutputSource, measure
from comfyui.schemas import FileOutput

#: Route prefix of the worker's file endpoint (`GET /outputs/{type}/{subfolder/}{filename}`).
FILES_ROUTE = "/outputs"


def file_path(folder_type: str, subfolder: str, filename: str) -> str:
    """The worker path that serves an output file."""
    parts = [folder_type, *(p for p in subfolder.split("/") if p), filename]
    return FILES_ROUTE + "/" + "/".join(quote(part, safe="") for part in parts)


class ReferenceDelivery(Delivery):
    mode = "reference"
    reads_bytes = False

    def __init__(self, public_base_url: str | None) -> None:
        self.public_base_url = public_base_url

    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        item.size = await measure(source)
        base = (self.public_base_url or context.base_url or "").rstrip("/")
        item.url = base + file_path(item.type, item.subfolder, item.filename)
