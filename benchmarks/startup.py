"""Start-up: how soon the worker is ready.

* `cold`: ComfyUI is up; from the worker's process start (just before fork/exec) to its
  first HTTP answer (`/health`) and to `GET /ready` answering 200.
* `late_comfyui`: the worker starts first and waits; ComfyUI (the fake) starts `delay_s`
  later. From ComfyUI's first answer (`/system_stats`) to the worker's `/ready` 200. Both
  are polled every 5 ms.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Child,
    free_port,
    ms,
    spawn_fake,
    spawn_worker,
    wait_http,
)


async def cold(log_dir: Path, fake: Child, repeats: int) -> dict[str, Any]:
    to_http: list[float] = []
    to_ready: list[float] = []
    for _ in range(repeats):
        worker = spawn_worker(log_dir, fake.url)
        try:
            answered, ready = await asyncio.gather(
                wait_http(worker, "/health"), wait_http(worker, "/ready")
            )
            to_http.append(ms(answered - worker.started_ns))
            to_ready.append(ms(ready - worker.started_ns))
        finally:
            worker.stop()
    return {
        "repeats": repeats,
        "process_start_to_first_answer_ms": _summary(to_http),
        "process_start_to_ready_ms": _summary(to_ready),
    }


async def late_comfyui(log_dir: Path, repeats: int, delay_s: float = 2.0) -> dict[str, Any]:
    after_comfyui: list[float] = []
    for _ in range(repeats):
        port = free_port()
        worker = spawn_worker(log_dir, f"http://127.0.0.1:{port}")
        fake: Child | None = None
        try:
            await wait_http(worker, "/health")
            await asyncio.sleep(delay_s)
            fake = spawn_fake(log_dir, port=port)
            comfyui_up, ready = await asyncio.gather(
                wait_http(fake, "/system_stats"), wait_http(worker, "/ready")
            )
            after_comfyui.append(ms(ready - comfyui_up))
        finally:
            worker.stop()
            if fake is not None:
                fake.stop()
    return {
        "repeats": repeats,
        "comfyui_delay_s": delay_s,
        "comfyui_answers_to_ready_ms": _summary(after_comfyui),
    }


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "all": [round(v, 1) for v in values],
    }
