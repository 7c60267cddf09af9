"""Soak: many sequential `/prompt_sync` requests; the worker's RSS must stay flat.

After a warm-up (allocator arenas, caches, first connections), the worker's RSS is read
every `every` requests. Growth is judged between the middle and the end, when anything
that only fills once has filled: a leak keeps growing there.
"""

from __future__ import annotations

from typing import Any

from benchmarks.clients import SMALL_GRAPH, WorkerClient, session
from benchmarks.common import Child, Summary, cpu_seconds, rss


async def soak(
    worker: Child, requests: int, *, warmup: int = 200, every: int = 500
) -> dict[str, Any]:
    samples: list[tuple[int, int]] = []
    elapsed: list[float] = []
    async with session() as http:
        client = WorkerClient(http, worker.url)
        for _ in range(warmup):
            await client.run(SMALL_GRAPH)
        cpu_before = cpu_seconds(worker.pid)
        samples.append((0, rss(worker.pid)))
        for i in range(1, requests + 1):
            elapsed.append((await client.run(SMALL_GRAPH)).elapsed_ms)
            if i % every == 0 or i == requests:
                samples.append((i, rss(worker.pid)))
        cpu = cpu_seconds(worker.pid) - cpu_before
    start, end = samples[0][1], samples[-1][1]
    middle = min(samples, key=lambda s: abs(s[0] - requests // 2))[1]
    return {
        "requests": requests,
        "warmup": warmup,
        "rss_start_mb": round(start / 1e6, 2),
        "rss_middle_mb": round(middle / 1e6, 2),
        "rss_end_mb": round(end / 1e6, 2),
        "growth_start_to_end_kb": round((end - start) / 1e3, 1),
        "growth_middle_to_end_kb": round((end - middle) / 1e3, 1),
        "rss_samples_mb": [[n, round(value / 1e6, 2)] for n, value in samples],
        "request_ms": Summary.of(elapsed).as_dict(),
        "worker_cpu_ms_per_request": round(cpu * 1000 / requests, 3),
    }
