"""The fake ComfyUI of the tests, as its own process, with what the benchmarks need on top.

    python -m benchmarks.fake_server --port N [--root DIR] [--generation 0.8|2024]

Everything ComfyUI-facing is `tests.fake_comfyui.FakeComfyUI` unchanged. Added here, under
`/bench/` (routes ComfyUI does not have):

* `GET /bench/final-sent`: `{prompt_id: ns}`, when the prompt's first end-of-run websocket
  event (`execution_success`, else `executing` with `node: null`) was written to the
  socket, in `time.monotonic_ns()` (CLOCK_MONOTONIC: one clock for every process of the
  machine). Answering empties it.
* `POST /bench/hold` `{"hold": bool}`: hold the queue (prompts stay pending) or release it.
* `GET /bench/stats`: websockets connected, prompts pending and running.
* Node `BenchBlob` (`megabytes`): an output node whose image is an incompressible PNG of about
  that size, written once per size and named again by every later run.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from aiohttp import web

from tests import fake_comfyui
from tests.fake_comfyui import FakeComfyUI, Generation, Json, RunContext

#: Final-event timestamps kept at most (the benchmark collects them far more often).
MAX_TIMESTAMPS = 200_000


def noise_png(path: Path, megabytes: float) -> int:
    """Write an RGB PNG of random pixels, stored without compression (about `megabytes`
    MB, so /view serves that many bytes); answer its size."""
    width = 1024
    height = max(1, int(megabytes * 1_000_000 / (3 * width + 1)))
    rows = os.urandom(height * 3 * width)
    stride = 3 * width
    raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)
    return len(png)


class BenchFake(FakeComfyUI):
    """The tests' fake ComfyUI plus the `/bench/` routes and the `BenchBlob` node."""

    def __init__(self, *, generation: Generation = "0.8", root: Path | None = None) -> None:
        super().__init__(generation=generation, root=root)
        self.final_sent_ns: dict[str, int] = {}
        self.on_sent = self._note_sent
        self.register_node(
            "BenchBlob",
            self._blob,
            output_node=True,
            inputs={"megabytes": ("FLOAT", {"default": 5.0, "min": 0.001, "max": 1000.0})},
        )

    def _note_sent(self, event: str, data: Json, sid: str | None) -> None:
        # The first end-of-run event: execution_success (0.8), else executing with node
        # null. The worker may answer on the first; the direct client waits for the second.
        final = event == "execution_success" or (event == "executing" and data.get("node") is None)
        prompt_id = data.get("prompt_id")
        if final and isinstance(prompt_id, str) and prompt_id not in self.final_sent_ns:
            if len(self.final_sent_ns) >= MAX_TIMESTAMPS:
                self.final_sent_ns.pop(next(iter(self.final_sent_ns)))
            self.final_sent_ns[prompt_id] = time.monotonic_ns()

    def _blob(self, ctx: RunContext, inputs: Json) -> tuple[tuple[Any, ...], Json]:
        megabytes = float(inputs["megabytes"])
        name = f"bench_blob_{megabytes:g}mb.png"
        path = self.output_dir / name
        if not path.is_file():
            noise_png(path, megabytes)
        return (), {"images": [{"filename": name, "subfolder": "", "type": "output"}]}

    def _routes(self) -> list[web.RouteDef]:
        return [
            *super()._routes(),
            web.get("/bench/final-sent", self._bench_final_sent),
            web.post("/bench/hold", self._bench_hold),
            web.get("/bench/stats", self._bench_stats),
        ]

    async def _bench_final_sent(self, request: web.Request) -> web.Response:
        sent, self.final_sent_ns = self.final_sent_ns, {}
        self.requests.clear()  # the fake's request log would otherwise grow for the whole run
        return web.json_response(sent)

    async def _bench_hold(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.hold = bool(body.get("hold"))
        return web.json_response({"hold": self.hold})

    async def _bench_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "websockets": len(self.ws_clients),
                "pending": len(self._state.queue),
                "running": len(self._state.running),
            }
        )


def main() -> None:
    fake_comfyui.main(BenchFake, __doc__.splitlines()[0] if __doc__ else "")


if __name__ == "__main__":
    main()
