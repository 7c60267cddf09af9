"""What a prompt's history outputs hold, and reading their files as streams.

Every node output is a dict of lists: lists of `{"filename", "subfolder", "type"}` name files
(`images`, `gifs`, `audio`, `3d`, ...), lists of strings under `text` are texts, anything else
is left to the caller in the untouched `outputs`. Files are read from ComfyUI's folders on
disk when the worker is colocated (`COMFYUI_OUTPUT_DIR` / `COMFYUI_TEMP_DIR`), else streamed
from `/view`.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import anyio

from comfyui.client import ComfyUIClient
from comfyui.exceptions import ComfyUIError, OutputFetchError
from comfyui.schemas import ImageOutput, TextOutput

Kind = Literal["image", "video", "audio", "3d", "file"]

#: Read size; a multiple of 3 so base64 of whole chunks concatenates without padding.
CHUNK_SIZE = 3 * 256 * 1024

_MIME = mimetypes.MimeTypes()
for _ext, _type in {
    ".webp": "image/webp",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp4": "video/mp4",
    ".flac": "audio/flac",
    ".opus": "audio/opus",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".stl": "model/stl",
    ".ply": "model/ply",
    ".fbx": "model/vnd.fbx",
}.items():
    _MIME.add_type(_type, _ext)

# History keys whose files are of one kind whatever their extension.
_KEY_KINDS: dict[str, Kind] = {
    "gifs": "video",
    "video": "video",
    "videos": "video",
    "audio": "audio",
    "3d": "3d",
    "mesh": "3d",
    "meshes": "3d",
    "model_file": "3d",
}
_MIME_KINDS: dict[str, Kind] = {"image": "image", "video": "video", "audio": "audio", "model": "3d"}


def mime_type_of(filename: str) -> str:
    return _MIME.guess_type(filename)[0] or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class OutputRef:
    """A file named in history: where it is in ComfyUI and what it is."""

    node_id: str
    key: str
    kind: Kind
    filename: str
    subfolder: str
    type: str
    mime_type: str

    @property
    def location(self) -> tuple[str, str, str]:
        return (self.type, self.subfolder, self.filename)


def collect_files(outputs: dict[str, Any]) -> list[OutputRef]:
    """Every file of every node, in output order, each once (temp previews included)."""
    files: list[OutputRef] = []
    seen: set[tuple[str, str, str]] = set()
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, dict):
            continue
        for key, items in node_output.items():
            if not isinstance(items, list):
                continue
            for item in items:
                ref = _file_ref(str(node_id), str(key), item)
                if ref is not None and ref.location not in seen:
                    seen.add(ref.location)
                    files.append(ref)
    return files


def collect_images(outputs: dict[str, Any]) -> list[ImageOutput]:
    """Every entry of every node's `images` list, in output order (the compatible list)."""
    return [
        ImageOutput(
            node_id=ref.node_id,
            filename=ref.filename,
            subfolder=ref.subfolder,
            type=ref.type,
            mime_type=ref.mime_type,
        )
        for node_id, node_output in outputs.items()
        if isinstance(node_output, dict)
        for item in node_output.get("images") or []
        if (ref := _file_ref(str(node_id), "images", item)) is not None
    ]


def collect_texts(outputs: dict[str, Any]) -> list[TextOutput]:
    """Every text of every node (`ui.text`, a list of strings or one string)."""
    texts: list[TextOutput] = []
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, dict):
            continue
        value = node_output.get("text")
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        texts.extend(
            TextOutput(node_id=str(node_id), text=item) for item in items if isinstance(item, str)
        )
    return texts


def _file_ref(node_id: str, key: str, item: Any) -> OutputRef | None:
    if not isinstance(item, dict):
        return None
    filename = item.get("filename")
    if not isinstance(filename, str) or not filename:
        return None
    mime = mime_type_of(filename)
    kind = _KEY_KINDS.get(key) or _MIME_KINDS.get(mime.split("/", 1)[0], "file")
    return OutputRef(
        node_id=node_id,
        key=key,
        kind=kind,
        filename=filename,
        subfolder=str(item.get("subfolder") or ""),
        type=str(item.get("type") or "output"),
        mime_type=mime,
    )


# -- reading -------------------------------------------------------------------------------


class OutputSource(ABC):
    """The bytes of one file, read once as a stream."""

    #: Size in bytes when known before reading.
    size: int | None = None
    #: A local file holding the bytes, when there is one (colocated, or converted).
    path: Path | None = None

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """The bytes, in chunks of at most `CHUNK_SIZE`."""


class LocalSource(OutputSource):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self.path is not None
        async with await anyio.open_file(self.path, "rb") as file:
            while chunk := await file.read(CHUNK_SIZE):
                yield chunk


class ViewSource(OutputSource):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.size = response.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.content.iter_chunked(CHUNK_SIZE):
            yield chunk


class KnownSize(OutputSource):
    """An output of which only the size is wanted (reference mode): it has no bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        raise RuntimeError("only the size of this output was asked for")
        yield b""  # pragma: no cover - makes this an async generator


class OutputNotFoundError(OutputFetchError):
    """The file named in history is not there."""


class OutputReader:
    """Opens output files: from disk when colocated, else through ComfyUI's `/view`."""

    def __init__(
        self, client: ComfyUIClient, *, output_dir: Path | None, temp_dir: Path | None
    ) -> None:
        self.client = client
        self.folders = {
            folder_type: folder.resolve()
            for folder_type, folder in (("output", output_dir), ("temp", temp_dir))
            if folder is not None
        }

    def local_path(self, filename: str, subfolder: str, folder_type: str) -> Path | None:
        """The file on disk if its folder is configured; refused if it would leave it."""
        folder = self.folders.get(folder_type)
        if folder is None:
            return None
        if "\x00" in filename + subfolder:
            raise OutputFetchError(f"refusing output path with a NUL byte: {filename!r}")
        path = (folder / subfolder / filename).resolve()
        if not path.is_relative_to(folder) or path == folder:
            raise OutputFetchError(
                f"refusing output path outside the {folder_type} folder: "
                f"{_describe(filename, subfolder, folder_type)}"
            )
        return path

    @asynccontextmanager
    async def open(
        self, filename: str, subfolder: str, folder_type: str, *, prompt_id: str | None = None
    ) -> AsyncIterator[OutputSource]:
        where = _describe(filename, subfolder, folder_type)
        path = self.local_path(filename, subfolder, folder_type)
        if path is not None:
            if not path.is_file():
                raise OutputNotFoundError(f"output file not found: {where}", prompt_id=prompt_id)
            yield LocalSource(path)
            return
        async with self.client.open_view(filename, subfolder, folder_type) as response:
            if response.status == 404:
                raise OutputNotFoundError(f"output file not found: {where}", prompt_id=prompt_id)
            if response.status != 200:
                raise OutputFetchError(
                    f"ComfyUI /view answered {response.status} for {where}", prompt_id=prompt_id
                )
            yield ViewSource(response)

    async def size(
        self, filename: str, subfolder: str, folder_type: str, *, prompt_id: str | None = None
    ) -> int:
        """The size of a file without reading it: from disk when colocated, else from the
        Content-Length of `HEAD /view` (a GET only when HEAD does not tell)."""
        if self.local_path(filename, subfolder, folder_type) is None:
            query = urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
            head = await self.client.forward("HEAD", "/view", query=query)
            if head.status == 404:
                where = _describe(filename, subfolder, folder_type)
                raise OutputNotFoundError(f"output file not found: {where}", prompt_id=prompt_id)
            length = next((v for k, v in head.headers.items() if k.lower() == "content-length"), "")
            if head.status == 200 and length.isdigit():
                return int(length)
        async with self.open(filename, subfolder, folder_type, prompt_id=prompt_id) as source:
            return await measure(source)


class EarlySizes:
    """Sizes of the files a run names in its `executed` events, asked for at once, so that
    they are known when history (which has no sizes) arrives. History stays the truth: a
    file not seen early, or whose early answer failed, is asked for again."""

    def __init__(self, reader: OutputReader) -> None:
        self.reader = reader
        self._tasks: dict[tuple[str, str, str], asyncio.Task[int]] = {}

    def add(self, node_id: str, output: Any) -> None:
        """An `executed` event: start asking for the sizes of the files it names."""
        for ref in collect_files({node_id: output}):
            if ref.location not in self._tasks:
                task = asyncio.create_task(self.reader.size(ref.filename, ref.subfolder, ref.type))
                task.add_done_callback(_retrieve)
                self._tasks[ref.location] = task

    async def size(self, ref: OutputRef, *, prompt_id: str | None = None) -> int:
        task = self._tasks.pop(ref.location, None)
        if task is not None:
            try:
                return await task
            except ComfyUIError:
                pass  # asked again below: that answer, or its error, is the one that counts
        return await self.reader.size(ref.filename, ref.subfolder, ref.type, prompt_id=prompt_id)

    def cancel(self) -> None:
        """Stop asking for what was not used."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()


def _retrieve(task: asyncio.Task[int]) -> None:
    """An early size nobody awaits must not be reported as a lost exception."""
    if not task.cancelled():
        task.exception()


@asynccontextmanager
async def local_file(source: OutputSource) -> AsyncIterator[Path]:
    """A path holding the source's bytes: its own file, or a temporary copy streamed to disk."""
    if source.path is not None:
        yield source.path
        return
    handle, name = tempfile.mkstemp(prefix="comfyui-output-")
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            async for chunk in source.chunks():
                await anyio.to_thread.run_sync(file.write, chunk)
        yield path
    finally:
        discard(path)


async def measure(source: OutputSource) -> int:
    """The size of the source, reading it through only when it is not known beforehand."""
    if source.size is not None:
        return source.size
    size = 0
    async for chunk in source.chunks():
        size += len(chunk)
    return size


def discard(path: Path) -> None:
    """Remove a temporary file. Synchronous on purpose: it runs in `finally` blocks, also
    while the task is being cancelled, and is one fast system call."""
    path.unlink(missing_ok=True)


def _describe(filename: str, subfolder: str, folder_type: str) -> str:
    return "/".join(part for part in (folder_type, subfolder, filename) if part)
