"""store mode: copy into `STORE_DIR/YYYY-MM-DD/<sha256><suffix>`, one file per content.

The bytes are hashed while they are copied to a temporary file in the day's folder, which is
then renamed to its hash (or dropped, when that content is stored already). A JSON sidecar
`<sha256><suffix>.json` beside it holds the hash, size, MIME type and creation time, and one
provenance record per output that produced this content: prompt id, node id, original
filename, the graph, request metadata and when it was stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio

from comfyui.delivery.base import Delivery, DeliveryContext
from comfyui.exceptions import DeliveryError
from comfyui.outputs import OutputSource, discard
from comfyui.schemas import FileOutput


class LocalStore(Delivery):
    mode = "store"

    def __init__(self, root: Path) -> None:
        self.root = root
        # Serialises the rename-or-drop and the sidecar update (one worker per store).
        self._lock = asyncio.Lock()

    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        now = datetime.now(UTC)
        day = self.root / now.strftime("%Y-%m-%d")
        try:
            await anyio.to_thread.run_sync(lambda: day.mkdir(parents=True, exist_ok=True))
            digest, size, incoming = await _copy_hashing(source, day)
            final = day / f"{digest}{Path(name).suffix.lower()}"
            record = {
                "prompt_id": context.prompt_id,
                "node_id": item.node_id,
                "filename": item.filename,
                "subfolder": item.subfolder,
                "type": item.type,
                "kind": item.kind,
                "graph": context.graph,
                "request": context.request,
                "stored_at": now.isoformat(),
            }
            async with self._lock:
                await anyio.to_thread.run_sync(
                    _settle, incoming, final, record, digest, size, item.mime_type, now
                )
        except OSError as exc:
            raise DeliveryError(
                f"cannot write {item.filename} to the store: {exc}", prompt_id=context.prompt_id
            ) from None
        item.size = size
        item.sha256 = digest
        item.path = str(final)


async def _copy_hashing(source: OutputSource, folder: Path) -> tuple[str, int, Path]:
    """Stream the source into a temporary file in `folder`; its SHA-256, size and path."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=".incoming-")
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as file:
            async for chunk in source.chunks():
                size += len(chunk)
                await anyio.to_thread.run_sync(_write, file, digest, chunk)
    except BaseException:
        discard(path)
        raise
    return digest.hexdigest(), size, path


def _write(file: IO[bytes], digest: Any, chunk: bytes) -> None:
    digest.update(chunk)
    file.write(chunk)


def _settle(
    incoming: Path,
    final: Path,
    record: dict[str, Any],
    digest: str,
    size: int,
    mime_type: str,
    now: datetime,
) -> None:
    """Keep one file per content and add the provenance record to its sidecar."""
    if final.exists():
        incoming.unlink(missing_ok=True)
    else:
        os.replace(incoming, final)
    sidecar_path = final.with_name(final.name + ".json")
    sidecar: dict[str, Any]
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (FileNotFoundError, ValueError):
        sidecar = {
            "sha256": digest,
            "file": final.name,
            "size": size,
            "mime_type": mime_type,
            "created_at": now.isoformat(),
            "provenance": [],
        }
    sidecar.setdefault("provenance", []).append(record)
    handle, temp = tempfile.mkstemp(dir=final.parent, prefix=".sidecar-")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(sidecar, file, indent=2, default=str)
        os.replace(temp, sidecar_path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
