"""Helpers for the worker's long-lived background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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


async def gather_or_cancel(*coroutines: Coroutine[Any, Any, T]) -> list[T]:
    """Run the coroutines concurrently; their results in order. When one fails, the others
    are cancelled (and awaited) before its error is raised."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
