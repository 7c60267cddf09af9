"""Added latency and completion latency: the same graph direct, through the worker, polled.

Each round runs the small graph once through a direct websocket client of ComfyUI and once
through `/prompt_sync`, in random order; every `poll_every`-th round also through the seed's
1 s polling loop. The added latency is the per-round difference worker - direct.

Completion latency (fake only) is the time from the fake writing a prompt's final event to
the client holding the whole answer: the fake stamps the write (CLOCK_MONOTONIC), the client
stamps the last byte read. The same graph is queued every time, so ComfyUI serves it from
its cache: its own execution time is near zero and what remains is the bridge.
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
)
from benchmarks.common import Summary, ms


@dataclass
class LatencyResult:
    direct: list[Run] = field(default_factory=list)
    worker: list[Run] = field(default_factory=list)
    polling: list[Run] = field(default_factory=list)

    def added_ms(self) -> list[float]:
        return [w.elapsed_ms - d.elapsed_ms for d, w in zip(self.direct, self.worker, strict=True)]

    def summary(self, final_sent: dict[str, int] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rounds": len(self.worker),
            "added_ms": Summary.of(self.added_ms()).as_dict(),
            "direct_ms": Summary.of([r.elapsed_ms for r in self.direct]).as_dict(),
            "worker_ms": Summary.of([r.elapsed_ms for r in self.worker]).as_dict(),
            "polling_ms": Summary.of([r.elapsed_ms for r in self.polling]).as_dict(),
        }
        if final_sent is not None:
            out["completion_ms"] = {
                arm: Summary.of(completion_ms(runs, final_sent)).as_dict()
                for arm, runs in (
                    ("direct", self.direct),
                    ("worker", self.worker),
                    ("polling", self.polling),
                )
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
    polls: int,
    warmup: int = 20,
    fake: bool = True,
    seed: int = 7,
) -> dict[str, Any]:
    """Run `rounds` rounds (and `polls` polled runs spread among them); the summary."""
    order = random.Random(seed)
    result = LatencyResult()
    final_sent: dict[str, int] = {}
    async with session() as http:
        direct = DirectClient(http, comfyui_url)
        await direct.start()
        try:
            worker = WorkerClient(http, worker_url)
            polling = PollingClient(http, comfyui_url)
            for _ in range(warmup):
                await direct.run(SMALL_GRAPH)
                await worker.run(SMALL_GRAPH)
            if fake:
                await fetch_final_sent(http, comfyui_url)  # forget the warm-up's
            poll_every = max(1, rounds // polls) if polls else 0
            for i in range(rounds):
                arms = ["direct", "worker"]
                if poll_every and i % poll_every == 0 and len(result.polling) < polls:
                    arms.append("polling")
                order.shuffle(arms)
                for arm in arms:
                    if arm == "direct":
                        result.direct.append(await direct.run(SMALL_GRAPH))
                    elif arm == "worker":
                        result.worker.append(await worker.run(SMALL_GRAPH))
                    else:
                        result.polling.append(await polling.run(SMALL_GRAPH))
                if fake and i % 500 == 499:
                    final_sent.update(await fetch_final_sent(http, comfyui_url))
            if fake:
                final_sent.update(await fetch_final_sent(http, comfyui_url))
        finally:
            await direct.close()
    return result.summary(final_sent if fake else None)
