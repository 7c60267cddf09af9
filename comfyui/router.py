"""Routes ComfyUI events to the tracker of their `prompt_id`.

Events can arrive before the worker knows a prompt's id: a fast (or fully cached) prompt may
finish before `POST /prompt` has answered, and the 2024 server ignores the id the worker
proposes. Such events wait in a small bounded buffer and are replayed when the id is tracked.
"""

from __future__ import annotations

from collections import OrderedDict

from comfyui import events
from comfyui.events import Event
from comfyui.tracker import PromptState, PromptTracker

_ORPHAN_PROMPTS = 256  # prompts whose early events are kept
_ORPHAN_EVENTS = 64  # events kept per such prompt


class EventRouter:
    """Holds the trackers of every prompt someone waits on, keyed by prompt id."""

    def __init__(self) -> None:
        self._trackers: dict[str, PromptTracker] = {}
        self._orphans: OrderedDict[str, list[Event]] = OrderedDict()

    def track(self, prompt_id: str) -> PromptTracker:
        tracker = PromptTracker(prompt_id)
        self._trackers[prompt_id] = tracker
        self._replay(tracker)
        return tracker

    def rekey(self, tracker: PromptTracker, prompt_id: str) -> None:
        """ComfyUI chose another id than the one proposed: follow the real one."""
        if self._trackers.get(tracker.prompt_id) is tracker:
            del self._trackers[tracker.prompt_id]
        tracker.prompt_id = prompt_id
        self._trackers[prompt_id] = tracker
        self._replay(tracker)

    def untrack(self, tracker: PromptTracker) -> None:
        if self._trackers.get(tracker.prompt_id) is tracker:
            del self._trackers[tracker.prompt_id]
        self._orphans.pop(tracker.prompt_id, None)

    def get(self, prompt_id: str) -> PromptTracker | None:
        return self._trackers.get(prompt_id)

    def trackers(self) -> list[PromptTracker]:
        return list(self._trackers.values())

    def __len__(self) -> int:
        return len(self._trackers)

    def dispatch(self, event: Event) -> bool:
        """Deliver a prompt event; True when a tracker took it."""
        if event.type not in events.PROMPT_EVENTS:
            return False
        prompt_id = event.prompt_id
        if prompt_id is None:
            return False
        tracker = self._trackers.get(prompt_id)
        if tracker is not None:
            tracker.feed(event)
            return True
        self._buffer(prompt_id, event)
        return False

    def has_unstarted(self) -> bool:
        """Is any submitted prompt still waiting in ComfyUI's queue?"""
        return any(t.state is PromptState.QUEUED for t in self._trackers.values())

    def note_disconnect(self) -> None:
        for tracker in self._trackers.values():
            tracker.note_disconnect()

    def _buffer(self, prompt_id: str, event: Event) -> None:
        pending = self._orphans.get(prompt_id)
        if pending is None:
            pending = self._orphans[prompt_id] = []
            if len(self._orphans) > _ORPHAN_PROMPTS:
                self._orphans.popitem(last=False)
        pending.append(event)
        # The last events matter most (they carry the outcome): keep the newest.
        del pending[:-_ORPHAN_EVENTS]

    def _replay(self, tracker: PromptTracker) -> None:
        for event in self._orphans.pop(tracker.prompt_id, ()):
            tracker.feed(event)
