"""ComfyUI websocket messages, parsed into small typed events.

Both protocol generations are understood: ComfyUI 0.8 ends a run with `execution_success`
(sent before history is written) followed by `executing` with `node: null` (sent after);
the 2024 server sends only the latter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STATUS = "status"
EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
PROGRESS = "progress"
EXECUTED = "executed"
EXECUTION_SUCCESS = "execution_success"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"

#: Events that concern one prompt and are routed to its waiter.
PROMPT_EVENTS = frozenset(
    {
        EXECUTION_START,
        EXECUTION_CACHED,
        EXECUTING,
        PROGRESS,
        EXECUTED,
        EXECUTION_SUCCESS,
        EXECUTION_ERROR,
        EXECUTION_INTERRUPTED,
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One websocket message from ComfyUI."""

    type: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None

    @property
    def is_run_finished(self) -> bool:
        """`executing` with a null node: the run is over and history is written."""
        return self.type == EXECUTING and self.data.get("node") is None


def parse_event(text: str) -> Event | None:
    """Parse a text frame; None for anything that is not a ComfyUI event object."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    data = message.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        return None
    return Event(kind, data)
