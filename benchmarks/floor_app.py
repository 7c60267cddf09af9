"""The least a waiting request can cost, layer by layer, for the floor of the concurrency
benchmark. Each kind parses the same JSON body, keeps it and waits:

* `raw`: an asyncio protocol on uvloop that reads the request itself (no HTTP library);
* `asgi`: uvicorn (httptools, uvloop) with a bare ASGI app;
* `fastapi`: uvicorn with a FastAPI endpoint (the worker's stack).

    python -m benchmarks.floor_app --kind raw|asgi|fastapi --port N [--trace]

`POST /wait` waits until `POST /release`; `GET /count` answers `{"waiting": n, "connections":
c, "traced": b}` (`connections`: open ones, raw kind only; `traced`: bytes tracemalloc traces,
with `--trace`, else null).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tracemalloc
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI

_release = asyncio.Event()
_waiting = 0
_connections = 0  # open connections (raw kind only)


def _count() -> dict[str, Any]:
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    return {"waiting": _waiting, "connections": _connections, "traced": traced}


async def _hold(body: Any) -> dict[str, Any]:
    global _waiting
    _waiting += 1
    try:
        await _release.wait()
    finally:
        _waiting -= 1
    return {"nodes": len(body.get("prompt") or {}) if isinstance(body, dict) else 0}


# -- fastapi -----------------------------------------------------------------------------

app = FastAPI()


@app.post("/wait")
async def wait(body: dict[str, Any]) -> dict[str, Any]:
    return await _hold(body)


@app.get("/count")
async def count() -> dict[str, Any]:
    return _count()


@app.post("/release")
async def release() -> None:
    _release.set()


# -- bare ASGI ---------------------------------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    path = scope["path"]
    answer: Any = None
    if path == "/wait":
        answer = await _hold(json.loads(b"".join(chunks)))
    elif path == "/count":
        answer = _count()
    elif path == "/release":
        _release.set()
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- raw protocol ------------------------------------------------------------------------


class RawHttp(asyncio.Protocol):
    """Just enough HTTP/1.1 for the benchmark's requests (Content-Length bodies, keep-alive)."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        global _connections
        self.transport = transport
        _connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        global _connections
        _connections -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        path = head[0].split(" ")[1].split("?")[0]
        if path == "/wait":
            asyncio.get_running_loop().create_task(self._wait(json.loads(body)))
        elif path == "/count":
            self._answer(_count())
        else:
            _release.set()
            self._answer(None)

    async def _wait(self, body: Any) -> None:
        self._answer(await _hold(body))

    def _answer(self, answer: Any) -> None:
        body = json.dumps(answer).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head.encode() + b"\r\n\r\n" + body)


async def _serve_raw(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(RawHttp, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare endpoint that waits.")
    parser.add_argument("--kind", choices=["raw", "asgi", "fastapi"], default="fastapi")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--trace", action="store_true", help="count bytes with tracemalloc")
    args = parser.parse_args()
    if args.trace:
        tracemalloc.start()  # after the imports: only what serving allocates is traced
    if args.kind == "raw":
        uvloop.run(_serve_raw(args.port))
        return
    target: Any = app if args.kind == "fastapi" else asgi_app
    uvicorn.run(target, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
