"""Helpers for the worker's long-lived background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def running(task: asyncio.Task[Any] | None) -> bool:
    """Is a background task started and not yet finished?"""
    return task is not None and not task.done()
