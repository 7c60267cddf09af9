"""Soak: many sequential `/prompt_sync` requests; the worker's RSS must stay flat.

After a warm-up (caches, first connections), the worker's RSS is read every `every`
requests: at the start, middle and end of the first `requests`, then on to `extend_to`.
On the benchmark machine RSS takes one step of about 1 MB near the 7,500th request, outside
Python's heap (tracemalloc's traced total does not grow between 1,000 and 10,000 requests);
a leak keeps growing after it, so flatness is judged on the continuation.
"""

from __future__ import annotations

from typing import Any

from benchmarks.clients import SMALL_GRAPH, WorkerClient, session
from benchmarks.common import Child, Summary, cpu_seconds, rss


async def soak(
    worker: Child, requests: int, extend_to: int, *, warmup: int = 200, every: int = 500
) -> dict[str, Any]:
    samples: list[tuple[int, int]] = []
    elapsed: list[float] = []
    async with session() as http:
        client = WorkerClient(http, worker.url)
        for _ in range(warmup):
            await client.run(SMALL_GRAPH)
        cpu_before = cpu_seconds(worker.pid)
        samples.append((0, rss(worker.pid)))
        for i in range(1, max(requests, extend_to) + 1):
            elapsed.append((await client.run(SMALL_GRAPH)).elapsed_ms)
            if i % every == 0 or i in (requests, extend_to):
                samples.append((i, rss(worker.pid)))
        cpu = cpu_seconds(worker.pid) - cpu_before
    total = len(elapsed)
    at = dict(samples)
    start, middle, end = at[0], at[min(at, key=lambda n: abs(n - requests // 2))], at[requests]
    return {
        "requests": requests,
        "extended_to": total,
        "warmup": warmup,
        "rss_start_mb": round(start / 1e6, 2),
        "rss_middle_mb": round(middle / 1e6, 2),
        "rss_end_mb": round(end / 1e6, 2),
        "growth_start_to_end_kb": round((end - start) / 1e3, 1),
        "growth_middle_to_end_kb": round((end - middle) / 1e3, 1),
        "rss_extended_end_mb": round(at[total] / 1e6, 2),
        "growth_over_extension_kb": round((at[total] - end) / 1e3, 1),
        "rss_samples_mb": [[n, round(value / 1e6, 2)] for n, value in samples],
        "request_ms": Summary.of(elapsed).as_dict(),
        "worker_cpu_ms_per_request": round(cpu * 1000 / total, 3),
    }
