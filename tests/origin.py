"""A tiny HTTP origin on 127.0.0.1 for URL inputs: serves given files, redirects, misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


class Origin:
    """Records the paths it was asked for. `/redirect?to=URL` redirects there, `/loop` to
    itself, `/big` and `/big-chunked` send 2048 bytes (announced, or chunked), `/slow`
    answers after 5 s; a path in `files` answers those bytes; anything else 404."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.files: dict[str, bytes] = {"/image.png": b"\x89PNG fake"}
        self.port = 0
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path in self.files:
            return web.Response(body=self.files[request.path], content_type="image/png")
        if request.path.startswith("/redirect"):
            raise web.HTTPFound(request.query["to"])
        if request.path == "/loop":
            raise web.HTTPFound("/loop")
        if request.path == "/big":
            return web.Response(body=b"x" * 2048)
        if request.path == "/big-chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(4):
                await response.write(b"y" * 512)
            await response.write_eof()
            return response
        if request.path == "/slow":
            await asyncio.sleep(5)
            return web.Response(body=b"late")
        return web.Response(status=404)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@asynccontextmanager
async def serve_origin() -> AsyncIterator[Origin]:
    """An `Origin` listening on 127.0.0.1 (free port) until the block ends."""
    server = Origin()
    runner = web.AppRunner(server.app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()
