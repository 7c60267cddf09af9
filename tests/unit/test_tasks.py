"""gather_or_cancel: results in order, or the first error with the rest cancelled."""

from __future__ import annotations

import asyncio

import pytest

from comfyui.tasks import gather_or_cancel


async def test_results_come_in_order() -> None:
    async def value(v: int) -> int:
        await asyncio.sleep(0)
        return v

    assert await gather_or_cancel(value(1), value(2), value(3)) == [1, 2, 3]


async def test_a_failure_cancels_the_others() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def forever() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def fail() -> int:
        await started.wait()
        raise ValueError("first failure")

    with pytest.raises(ValueError, match="first failure"):
        await gather_or_cancel(forever(), fail())
    assert cancelled.is_set()
