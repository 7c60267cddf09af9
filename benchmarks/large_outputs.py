"""Large outputs: one image of 5 or 50 MB, returned as base64 and as a reference.

Each row gets a fresh worker. After a warm-up (which also makes the fake write the file),
the worker's peak RSS is reset (`clear_refs`), then the request is repeated; the peak is
VmHWM afterwards, and what the output cost is that peak minus the RSS before. Throughput is
output bytes / the median time until the caller holds them:

* base64: the whole `/prompt_sync` answer read;
* reference: the answer, then the file read through the worker's `url` (`/outputs/...`).

The caller is `LeanClient` (stdlib http.client into a buffer kept across requests): a caller
slower than the worker would measure itself.

`via` is how the worker reads the file: `view` (ComfyUI's /view) or `disk`
(`COMFYUI_OUTPUT_DIR` set: the worker is colocated with ComfyUI).
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from benchmarks.clients import LeanClient, WorkerClient, blob_graph, session
from benchmarks.common import (
    Child,
    cpu_seconds,
    ms,
    peak_rss,
    reset_peak_rss,
    rss,
    spawn_worker,
    wait_http,
)


async def one_case(
    log_dir: Path,
    fake: Child,
    fake_output_dir: Path,
    megabytes: float,
    mode: str,
    via: str,
    repeats: int,
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if via == "disk":
        settings["comfyui_output_dir"] = fake_output_dir
    worker = spawn_worker(log_dir, fake.url, **settings)
    try:
        await wait_http(worker, "/ready")
        graph = blob_graph(megabytes)
        async with session() as http:
            client = WorkerClient(http, worker.url)
            # The fake writes the file on the first run; a reference answer reads none of it.
            await client.run_and_fetch(blob_graph(0.01))
            await client.run(graph, output={"mode": "reference"})
            await asyncio.sleep(0.3)
            before = rss(worker.pid)
            peak_reset = reset_peak_rss(worker.pid)
            times: list[float] = []
            lean = LeanClient(worker.url)
            await lean.run(graph, mode)  # sizes the caller's buffer
            cpu_before = cpu_seconds(worker.pid)
            for _ in range(repeats):
                answer, run = await lean.run(graph, mode)
                times.append(ms(run.ended_ns - run.started_ns))
            cpu = (cpu_seconds(worker.pid) - cpu_before) / repeats
            peak = peak_rss(worker.pid)
        output_bytes = (fake_output_dir / f"bench_blob_{megabytes:g}mb.png").stat().st_size
        expected = output_bytes if mode == "reference" else answer.size
        if run.size != expected or (mode == "base64" and answer.size < output_bytes * 4 // 3):
            raise RuntimeError(f"{mode}: got {run.size} bytes for a {output_bytes}-byte output")
        median_ms = statistics.median(times)
        return {
            "megabytes": megabytes,
            "mode": mode,
            "via": via,
            "output_bytes": output_bytes,
            "answer_bytes": answer.size,
            "repeats": repeats,
            "median_ms": round(median_ms, 2),
            "max_ms": round(max(times), 2),
            "throughput_mb_s": round(output_bytes / 1e6 / (median_ms / 1e3), 1),
            # The worker's own cost: output MB per second of worker CPU.
            "worker_cpu_ms": round(cpu * 1e3, 1),
            "worker_mb_per_cpu_s": round(output_bytes / 1e6 / cpu, 1) if cpu > 0 else None,
            "rss_before_mb": round(before / 1e6, 2),
            "peak_rss_mb": round(peak / 1e6, 2),
            "peak_increment_mb": round((peak - before) / 1e6, 2),
            "peak_increment_x_output": round((peak - before) / output_bytes, 2),
            "peak_was_reset": peak_reset,
        }
    finally:
        worker.stop()


async def large_outputs(
    log_dir: Path,
    fake: Child,
    fake_output_dir: Path,
    sizes: list[float],
    repeats: dict[float, int],
) -> list[dict[str, Any]]:
    rows = []
    for megabytes in sizes:
        for mode, via in (("base64", "view"), ("base64", "disk"), ("reference", "view")):
            rows.append(
                await one_case(
                    log_dir, fake, fake_output_dir, megabytes, mode, via, repeats[megabytes]
                )
            )
    return rows
