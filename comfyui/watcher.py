"""Keeps every tracked prompt's state true, whether or not the websocket is up.

Events from the websocket are routed to trackers as they arrive (the hot path). One
background loop reconciles trackers against `/queue` and `/history` when events cannot be
trusted to tell the whole story:

* while the websocket is down: every `COMFYUI_POLL_INTERVAL` (the polling fallback);
* right after it reconnects: once, for whatever happened while it was down;
* when a `status` broadcast says the queue changed and some prompt has not started yet:
  a prompt deleted from the queue gets no event of its own, only that broadcast.

One `/queue` request serves all waiters of a round, so the cost does not grow with them.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from comfyui import events
from comfyui.client import ComfyUIClient
from comfyui.events import Event
from comfyui.exceptions import ComfyUIConnectionError, ComfyUIError
from comfyui.router import EventRouter
from comfyui.tasks import running, stop_task
from comfyui.tracker import PromptState, PromptTracker
from config import Settings

log = structlog.get_logger(__name__)

_RECONCILED_STATES = (PromptState.QUEUED, PromptState.RUNNING)


class PromptWatcher:
    """Owns the event router and the reconciliation loop of one ComfyUI backend."""

    def __init__(self, client: ComfyUIClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.router = EventRouter()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unreachable_since: float | None = None
        client.on_event(self._on_event)
        client.on_connect(self._on_connect)
        client.on_disconnect(self._on_disconnect)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="comfyui-reconcile")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    @property
    def alive(self) -> bool:
        return running(self._task)

    # -- tracking ----------------------------------------------------------------------

    def track(self, prompt_id: str) -> PromptTracker:
        return self.router.track(prompt_id)

    def rekey(self, tracker: PromptTracker, prompt_id: str) -> None:
        self.router.rekey(tracker, prompt_id)

    def untrack(self, tracker: PromptTracker) -> None:
        self.router.untrack(tracker)

    @property
    def waiting(self) -> int:
        return len(self.router)

    # -- callbacks from the client -----------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.type == events.STATUS:
            if self.router.has_unstarted():
                self._wakeup.set()
            return
        self.router.dispatch(event)

    def _on_connect(self) -> None:
        self._wakeup.set()

    def _on_disconnect(self) -> None:
        self.router.note_disconnect()
        self._wakeup.set()

    # -- reconciliation ----------------------------------------------------------------

    async def _loop(self) -> None:
        interval = self.settings.comfyui_poll_interval
        while True:
            if self.client.connected:
                await self._wakeup.wait()
            else:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), interval)
                except TimeoutError:
                    pass
            self._wakeup.clear()
            try:
                await self.reconcile()
            except Exception:  # the loop must outlive any one bad round
                log.exception("reconcile_failed")
            if self.client.connected:
                # Status broadcasts come in bursts: one /queue per interval is enough.
                await asyncio.sleep(interval)

    async def reconcile(self) -> None:
        """Bring queued and running trackers in line with ComfyUI's queue and history."""
        # Take the candidates before asking: a prompt submitted after the /queue request
        # left could be missing from its answer without being gone.
        candidates = [t for t in self.router.trackers() if t.state in _RECONCILED_STATES]
        if not candidates:
            self._unreachable_since = None
            return
        try:
            snapshot = await self.client.get_queue()
            for tracker in candidates:
                if tracker.state.is_final or tracker.state is PromptState.FINISHED:
                    continue
                if tracker.prompt_id in snapshot.running:
                    tracker.mark_running()
                elif tracker.prompt_id in snapshot.pending:
                    continue
                else:
                    # Queue before history: a prompt moves from one to the other atomically,
                    # so absent from both means it is gone.
                    entry = await self.client.get_history(tracker.prompt_id)
                    if entry is not None:
                        tracker.apply_history(entry)
                    else:
                        log.warning("prompt_vanished", prompt_id=tracker.prompt_id)
                        tracker.mark_gone()
        except ComfyUIConnectionError as exc:
            self._note_unreachable(candidates, exc)
            return
        except ComfyUIError as exc:
            log.warning("reconcile_error", error=exc.detail)
            return
        self._unreachable_since = None

    def _note_unreachable(self, trackers: list[PromptTracker], exc: ComfyUIError) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._unreachable_since < self.settings.comfyui_unreachable_grace:
            return
        for tracker in trackers:
            if not tracker.state.is_final:
                log.error("prompt_unreachable", prompt_id=tracker.prompt_id, error=exc.detail)
                tracker.mark_unreachable()
