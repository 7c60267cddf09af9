"""`GET /outputs/{type}/{subfolder/}{filename}`: the bytes behind reference mode's `url`.

Served from disk when the worker is colocated with ComfyUI, else streamed from `/view`
without holding the file in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response, StreamingResponse

from comfyui.exceptions import InvalidRequestError
from comfyui.outputs import OutputNotFoundError, OutputReader, OutputSource, mime_type_of

SERVED_FOLDERS = frozenset({"output", "temp"})


async def serve_output(reader: OutputReader, folder_type: str, path: str) -> Response:
    segments = path.split("/")
    if any(segment in ("", ".", "..") or "\x00" in segment for segment in segments):
        raise InvalidRequestError("the file path must be relative and stay in its folder")
    if folder_type not in SERVED_FOLDERS:
        raise HTTPException(404, f"no such folder: {folder_type}")
    subfolder, filename = "/".join(segments[:-1]), segments[-1]
    media_type = mime_type_of(filename)
    local = reader.local_path(filename, subfolder, folder_type)
    if local is not None:
        if not local.is_file():
            raise HTTPException(404, f"no such {folder_type} file: {path}")
        return FileResponse(local, media_type=media_type)

    stack = AsyncExitStack()
    try:
        source = await stack.enter_async_context(reader.open(filename, subfolder, folder_type))
    except OutputNotFoundError:
        await stack.aclose()
        raise HTTPException(404, f"no such {folder_type} file: {path}") from None
    except BaseException:
        await stack.aclose()
        raise
    headers = {"Content-Length": str(source.size)} if source.size is not None else None
    return StreamingResponse(
        _stream(source, stack),
        media_type=media_type,
        headers=headers,
        # Also runs when the caller leaves before the body was sent.
        background=BackgroundTask(stack.aclose),
    )


async def _stream(source: OutputSource, stack: AsyncExitStack) -> AsyncIterator[bytes]:
    try:
        async for chunk in source.chunks():
            yield chunk
    finally:
        await stack.aclose()
