"""The least a waiting request can cost on the worker's HTTP stack: a bare FastAPI endpoint
that parses the same JSON body and waits, served by the same uvicorn (httptools, uvloop).

    python -m benchmarks.floor_app --port N

`POST /wait` waits until `POST /release`; `GET /count` says how many wait.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn
from fastapi import FastAPI

app = FastAPI()
_release = asyncio.Event()
_waiting = 0


@app.post("/wait")
async def wait(body: dict[str, Any]) -> dict[str, Any]:
    global _waiting
    _waiting += 1
    try:
        await _release.wait()
    finally:
        _waiting -= 1
    return {"nodes": len(body.get("prompt") or {})}


@app.get("/count")
async def count() -> int:
    return _waiting


@app.post("/release")
async def release() -> None:
    _release.set()


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare FastAPI endpoint that waits.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
