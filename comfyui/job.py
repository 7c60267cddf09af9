"""A handle on one queued prompt: `status()`, `result(timeout)`, `abort()`."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from comfyui.client import ComfyUIClient
from comfyui.exceptions import (
    ComfyUIConnectionError,
    ComfyUIError,
    ExecutionError,
    PromptDeletedError,
    PromptInterruptedError,
    PromptLostError,
    PromptTimeoutError,
)
from comfyui.tracker import PromptState, PromptTracker

log = structlog.get_logger(__name__)


class Job:
    """A prompt queued on ComfyUI by this worker."""

    def __init__(
        self, client: ComfyUIClient, tracker: PromptTracker, *, poll_interval: float
    ) -> None:
        self._client = client
        self._tracker = tracker
        self._poll_interval = poll_interval

    @property
    def prompt_id(self) -> str:
        return self._tracker.prompt_id

    @property
    def tracker(self) -> PromptTracker:
        return self._tracker

    def status(self) -> PromptState:
        return self._tracker.state

    async def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the outcome; the history entry on success, else a typed error.

        Raises `PromptTimeoutError` when `timeout` seconds pass first (the prompt is left
        as it is: call `abort()` to cancel it).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        tracker = self._tracker
        while True:
            state = tracker.state
            if state is PromptState.SUCCESS and tracker.history is not None:
                return tracker.history
            if state.is_final:
                raise self._failure()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PromptTimeoutError(
                    f"Prompt did not finish within {timeout:g} s and was cancelled",
                    prompt_id=self.prompt_id,
                )
            if state is PromptState.FINISHED:
                entry = tracker.history_from_events()
                if entry is None:
                    entry = await self._client.get_history(self.prompt_id)
                if entry is not None:
                    tracker.apply_history(entry)
                    continue
                # `execution_success` precedes the history write; the `executing` (node
                # null) that follows it wakes us. Polling covers a missed event.
                await tracker.wait_changed(min(self._poll_interval, remaining))
                continue
            await tracker.wait_changed(remaining)

    async def abort(self) -> None:
        """Cancel the prompt on ComfyUI: dequeue it if pending, interrupt it if running."""
        prompt_id = self.prompt_id
        # Deleting first closes the race where it starts between our look and our act.
        await self._client.delete_queued([prompt_id])
        snapshot = await self._client.get_queue()
        if prompt_id in snapshot.running:
            # The 2024 server interrupts whatever runs, hence the check above.
            await self._client.interrupt(prompt_id)
            log.info("prompt_interrupted", prompt_id=prompt_id)
        else:
            log.info("prompt_dequeued", prompt_id=prompt_id)

    def _failure(self) -> ComfyUIError:
        tracker = self._tracker
        state = tracker.state
        prompt_id = self.prompt_id
        error = tracker.error or {}
        if state is PromptState.ERROR:
            return execution_error(prompt_id, error)
        if state is PromptState.INTERRUPTED:
            node = _node_label(error)
            return PromptInterruptedError(
                f"Prompt was interrupted on ComfyUI{node}", prompt_id=prompt_id
            )
        if state is PromptState.DELETED:
            return PromptDeletedError(
                "Prompt was removed from ComfyUI's queue before it ran", prompt_id=prompt_id
            )
        if state is PromptState.LOST:
            return PromptLostError(
                "ComfyUI no longer knows the prompt (it restarted while the worker waited)",
                prompt_id=prompt_id,
            )
        if state is PromptState.UNREACHABLE:
            return ComfyUIConnectionError(
                "ComfyUI stopped answering while the prompt was queued or running",
                prompt_id=prompt_id,
            )
        raise AssertionError(f"no failure for state {state}")  # pragma: no cover


def execution_error(prompt_id: str, error: dict[str, Any]) -> ExecutionError:
    """Build the error for ComfyUI's `execution_error` data (event or history message)."""
    node_id = _str_or_none(error.get("node_id"))
    node_type = _str_or_none(error.get("node_type"))
    exception_type = _str_or_none(error.get("exception_type")) or "Exception"
    message = str(error.get("exception_message") or "").strip()
    node_errors: dict[str, Any] = {}
    if node_id is not None:
        node_errors[node_id] = {
            "class_type": node_type,
            "errors": [
                {
                    "type": exception_type,
                    "message": message,
                    "details": "",
                    "extra_info": {"traceback": error.get("traceback") or []},
                }
            ],
        }
    return ExecutionError(
        f"Node {node_id} ({node_type}) raised {exception_type}: {message}",
        prompt_id=prompt_id,
        node_id=node_id,
        node_type=node_type,
        exception_type=exception_type,
        exception_message=message,
        node_errors=node_errors,
    )


def _node_label(error: dict[str, Any]) -> str:
    node_id, node_type = error.get("node_id"), error.get("node_type")
    if node_id is None:
        return ""
    return f" at node {node_id} ({node_type})" if node_type else f" at node {node_id}"


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
