"""Added latency and completion latency: the same graph run directly and through the worker.

`interleaved`: each round runs the small graph once through a direct websocket client of
ComfyUI and once through `/prompt_sync`, in random order; the added latency is the
per-round difference worker - direct. The same graph is queued every time, so ComfyUI
serves it from its cache: its own execution time is near zero and what remains is the
bridge.

`comparison`: jobs that take time, run through the direct client, the worker and the seed's
1 s polling loop, side by side.

Completion latency (fake only) is the time from the fake writing a prompt's first end-of-run
event (`execution_success`, which precedes `executing` with node null) to the client holding
the whole answer: the fake stamps the write (CLOCK_MONOTONIC), the client stamps the last
byte read. It is an upper bound of "until the worker wrote its answer": it
also holds the loopback transfer and the client's read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.clients import (
    SMALL_GRAPH,
    DirectClient,
    PollingClient,
    Run,
    WorkerClient,
    session,
    timed_graph,
)
from benchmarks.common import Summary, ms


@dataclass
class LatencyResult:
    direct: list[Run] = field(default_factory=list)
    worker: list[Run] = field(default_factory=list)

    def added_ms(self) -> list[float]:
        return [w.elapsed_ms - d.elapsed_ms for d, w in zip(self.direct, self.worker, strict=True)]

    def summary(self, final_sent: dict[str, int] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rounds": len(self.worker),
            "added_ms": Summary.of(self.added_ms()).as_dict(),
            "direct_ms": Summary.of([r.elapsed_ms for r in self.direct]).as_dict(),
            "worker_ms": Summary.of([r.elapsed_ms for r in self.worker]).as_dict(),
        }
        if final_sent is not None:
            out["completion_ms"] = {
                arm: Summary.of(completion_ms(runs, final_sent)).as_dict()
                for arm, runs in (("direct", self.direct), ("worker", self.worker))
            }
        return out


def completion_ms(runs: list[Run], final_sent: dict[str, int]) -> list[float]:
    """Final event written by ComfyUI -> answer in the client's hands, per run."""
    return [ms(r.ended_ns - final_sent[r.prompt_id]) for r in runs if r.prompt_id in final_sent]


async def fetch_final_sent(http: aiohttp.ClientSession, fake_url: str) -> dict[str, int]:
    async with http.get(fake_url + "/bench/final-sent") as response:
        data: dict[str, int] = await response.json()
        return data


async def interleaved(
    comfyui_url: str,
    worker_url: str,
    *,
    rounds: int,
    warmup: int = 20,
    fake: bool = True,
    seed: int = 7,
) -> dict[str, Any]:
    """Run `rounds` interleaved rounds; the summary."""
    order = random.Random(seed)
    result = LatencyResult()
    final_sent: dict[str, int] = {}
    async with session() as http:
        direct = DirectClient(http, comfyui_url)
        await direct.start()
        try:
            worker = WorkerClient(http, worker_url)
            for _ in range(warmup):
                await direct.run(SMALL_GRAPH)
                await worker.run(SMALL_GRAPH)
            if fake:
                await fetch_final_sent(http, comfyui_url)  # forget the warm-up's
            for i in range(rounds):
                if order.random() < 0.5:
                    result.direct.append(await direct.run(SMALL_GRAPH))
                    result.worker.append(await worker.run(SMALL_GRAPH))
                else:
                    result.worker.append(await worker.run(SMALL_GRAPH))
                    result.direct.append(await direct.run(SMALL_GRAPH))
                if fake and i % 500 == 499:
                    final_sent.update(await fetch_final_sent(http, comfyui_url))
            if fake:
                final_sent.update(await fetch_final_sent(http, comfyui_url))
        finally:
            await direct.close()
    return result.summary(final_sent if fake else None)


async def comparison(
    comfyui_url: str,
    worker_url: str,
    *,
    jobs: int,
    fake: bool = True,
    seed: int = 11,
    shortest: float = 0.2,
    longest: float = 1.5,
) -> dict[str, Any]:
    """Jobs that take time (uniform `shortest`..`longest` s), each run by the three arms in
    random order: how long after the job's own duration each arm holds the answer, and
    (fake) how long after ComfyUI's final event."""
    rng = random.Random(seed)
    color = rng.randrange(1 << 20)
    arms: dict[str, list[Run]] = {"direct": [], "worker": [], "polling": []}
    beyond: dict[str, list[float]] = {arm: [] for arm in arms}
    async with session() as http:
        direct = DirectClient(http, comfyui_url)
        await direct.start()
        try:
            worker = WorkerClient(http, worker_url)
            polling = PollingClient(http, comfyui_url)
            if fake:
                await fetch_final_sent(http, comfyui_url)
            for _ in range(jobs):
                seconds = rng.uniform(shortest, longest)
                order = list(arms)
                rng.shuffle(order)
                for arm in order:
                    color += 1
                    graph = timed_graph(seconds, color)
                    if arm == "direct":
                        run = await direct.run(graph)
                    elif arm == "worker":
                        run = await worker.run(graph)
                    else:
                        run = await polling.run(graph)
                    arms[arm].append(run)
                    beyond[arm].append(run.elapsed_ms - seconds * 1000)
            final_sent = await fetch_final_sent(http, comfyui_url) if fake else None
        finally:
            await direct.close()
    out: dict[str, Any] = {
        "jobs": jobs,
        "job_seconds": [shortest, longest],
        "beyond_job_ms": {arm: Summary.of(values).as_dict() for arm, values in beyond.items()},
    }
    if final_sent is not None:
        out["completion_ms"] = {
            arm: Summary.of(completion_ms(runs, final_sent)).as_dict() for arm, runs in arms.items()
        }
    return out
