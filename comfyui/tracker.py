"""What the worker knows about one prompt, fed by websocket events or by history."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import Any

from comfyui import events
from comfyui.events import Event


class PromptState(enum.StrEnum):
    SUBMITTING = "submitting"  # waiter registered, POST /prompt not answered yet
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"  # ComfyUI says the run ended; history tells how
    SUCCESS = "success"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    DELETED = "deleted"  # left the queue without running
    LOST = "lost"  # ComfyUI forgot it while we were cut off (restart)
    UNREACHABLE = "unreachable"  # ComfyUI stopped answering while we waited

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        PromptState.SUCCESS,
        PromptState.ERROR,
        PromptState.INTERRUPTED,
        PromptState.DELETED,
        PromptState.LOST,
        PromptState.UNREACHABLE,
    }
)


class PromptTracker:
    """Mutable state of one prompt plus a wake-up signal for whoever waits on it."""

    __slots__ = (
        "_changed",
        "_waiters",
        "cached_nodes",
        "current_node",
        "error",
        "executed",
        "finished_at",
        "history",
        "history_written",
        "on_output",
        "progress",
        "progress_node",
        "prompt_id",
        "saw_disconnect",
        "saw_start",
        "saw_success",
        "started_at",
        "state",
        "submitted_at",
    )

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.state = PromptState.SUBMITTING
        self.current_node: str | None = None
        self.progress: tuple[float, float] | None = None
        self.progress_node: str | None = None  # the node `progress` was reported for
        self.cached_nodes: list[str] = []
        self.executed: dict[str, Any] = {}
        #: Told each node output as its `executed` event arrives: (node id, ui output).
        self.on_output: Callable[[str, Any], None] | None = None
        self.error: dict[str, Any] | None = None
        self.history: dict[str, Any] | None = None
        self.history_written = False
        self.saw_disconnect = False
        self.saw_start = False
        self.saw_success = False
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        # A flag and futures made only while someone waits, not an asyncio.Event: an Event
        # allocates a deque (~600 B) up front, for each of up to thousands of waiters.
        self._changed = False
        self._waiters: list[asyncio.Future[None]] | None = None

    # -- transitions -------------------------------------------------------------------

    def mark_submitted(self) -> None:
        if self.state is PromptState.SUBMITTING:
            self._set(PromptState.QUEUED)

    def feed(self, event: Event) -> None:
        """Apply one websocket event about this prompt."""
        kind, data = event.type, event.data
        if kind == events.EXECUTION_START:
            self.saw_start = True
            self.started_at = self.started_at or time.monotonic()
            self._advance(PromptState.RUNNING)
        elif kind == events.EXECUTION_CACHED:
            nodes = data.get("nodes")
            if isinstance(nodes, list):
                self.cached_nodes = [str(n) for n in nodes]
            self._advance(PromptState.RUNNING)
        elif kind == events.EXECUTING:
            if event.is_run_finished:
                self.history_written = True
                self._advance(PromptState.FINISHED)
            else:
                self.current_node = str(data.get("node"))
                self._advance(PromptState.RUNNING)
        elif kind == events.PROGRESS:
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)):
                self.progress = (value, maximum)
                node = data.get("node")
                self.progress_node = self.current_node if node is None else str(node)
            self._advance(PromptState.RUNNING)
        elif kind == events.EXECUTED:
            node = data.get("node")
            if node is not None:
                self.executed[str(node)] = data.get("output")
                if self.on_output is not None:
                    self.on_output(str(node), data.get("output"))
        elif kind == events.EXECUTION_SUCCESS:
            self.saw_success = True
            self._advance(PromptState.FINISHED)
        elif kind == events.EXECUTION_ERROR:
            self.error = data
            self._advance(PromptState.ERROR)
        elif kind == events.EXECUTION_INTERRUPTED:
            self.error = data
            self._advance(PromptState.INTERRUPTED)
        self._notify()

    def apply_history(self, entry: dict[str, Any]) -> None:
        """Settle the outcome from a `/history/{id}` entry."""
        self.history = entry
        self.history_written = True
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        if status.get("status_str", "success") == "success" and status.get("completed", True):
            self._set(PromptState.SUCCESS)
            return
        for message in reversed(messages):
            if not (isinstance(message, (list, tuple)) and len(message) == 2):
                continue
            name, data = message
            if name == events.EXECUTION_INTERRUPTED:
                self.error = data if isinstance(data, dict) else {}
                self._set(PromptState.INTERRUPTED)
                return
            if name == events.EXECUTION_ERROR:
                self.error = data if isinstance(data, dict) else {}
                self._set(PromptState.ERROR)
                return
        self.error = self.error or {}
        self._set(PromptState.ERROR)

    def history_from_events(self) -> dict[str, Any] | None:
        """The history entry the events of an unbroken run add up to, else None.

        ComfyUI 0.8 sends `executed` for every node with a UI output, cached ones included,
        and its history `outputs` are exactly those outputs, in that order; then
        `execution_success`. So a run watched from `execution_start` to `execution_success`
        without a websocket drop needs no `/history` request (on the benchmark machine that
        request was two thirds of the time from the last event to the answer). Servers
        without `execution_success` (2024) and runs with a gap are settled from `/history`.
        """
        if not (self.saw_start and self.saw_success) or self.saw_disconnect:
            return None
        outputs = {node: output for node, output in self.executed.items() if output is not None}
        return {
            "outputs": outputs,
            "status": {"status_str": "success", "completed": True, "messages": []},
        }

    def mark_gone(self) -> None:
        """Neither queued nor in history: deleted, or lost if we were cut off meanwhile."""
        self._set(PromptState.LOST if self.saw_disconnect else PromptState.DELETED)

    def mark_running(self) -> None:
        self.started_at = self.started_at or time.monotonic()
        self._advance(PromptState.RUNNING)

    def mark_unreachable(self) -> None:
        self._set(PromptState.UNREACHABLE)

    def note_disconnect(self) -> None:
        self.saw_disconnect = True
        self._notify()

    def poke(self) -> None:
        """Wake the waiter without changing state (e.g. the websocket went down)."""
        self._notify()

    # -- waiting -----------------------------------------------------------------------

    async def wait_changed(self, timeout: float | None) -> None:
        """Return when something changed, or after `timeout` seconds."""
        if not self._changed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own.
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._changed = False

    @property
    def execution_time(self) -> float:
        """Seconds from execution start (or submission, if the start was not seen) to the end."""
        end = self.finished_at or time.monotonic()
        return max(0.0, end - (self.started_at or self.submitted_at))

    # -- internals ---------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _advance(self, state: PromptState) -> None:
        """Move forward only: late or replayed events never undo an outcome."""
        if self.state.is_final:
            return
        if state is PromptState.RUNNING and self.state is PromptState.FINISHED:
            return
        self._set(state)

    def _set(self, state: PromptState) -> None:
        if self.state.is_final and state is not self.state:
            return
        self.state = state
        if state in (PromptState.FINISHED,) or state.is_final:
            self.finished_at = self.finished_at or time.monotonic()
        self._notify()
