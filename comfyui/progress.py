"""Live progress of one queued prompt, sampled from its tracker (for streams and RunPod).

The tracker is updated by the websocket router; this module only reads it, so any number of
observers can follow a prompt without taking events from the request that waits on it.
Sampling coalesces bursts: an observer sees the newest state, not every step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from comfyui.job import Job


@dataclass(frozen=True, slots=True)
class Progress:
    """What a prompt is doing now: its state, the node running and that node's progress."""

    state: str
    node: str | None
    value: float | None
    max: float | None

    @classmethod
    def of(cls, job: Job) -> Progress:
        """Progress counts only for the node it was reported for: a node that reports none
        does not show the previous node's."""
        tracker = job.tracker
        node = tracker.current_node
        value, maximum = (
            tracker.progress
            if tracker.progress is not None and tracker.progress_node == node
            else (None, None)
        )
        return cls(str(tracker.state), node, value, maximum)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "node": self.node, "value": self.value, "max": self.max}


async def follow(
    job: Job, until: asyncio.Future[Any], interval: float = 0.1
) -> AsyncIterator[Progress]:
    """Yield the job's progress now and whenever it changes, until `until` is done."""
    last: Progress | None = None
    while True:
        current = Progress.of(job)
        if current != last:
            last = current
            yield current
        if until.done():
            return
        await asyncio.wait({until}, timeout=interval)
