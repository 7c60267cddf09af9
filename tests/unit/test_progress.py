"""Live progress read from a tracker: which node a progress report belongs to."""

from __future__ import annotations

from typing import Any, cast

from comfyui.client import ComfyUIClient
from comfyui.events import Event
from comfyui.job import Job
from comfyui.progress import Progress
from comfyui.tracker import PromptTracker


def job_with(*events: tuple[str, dict[str, Any]]) -> Job:
    tracker = PromptTracker("p1")
    tracker.mark_submitted()
    for kind, data in events:
        tracker.feed(Event(kind, {"prompt_id": "p1", **data}))
    return Job(cast(ComfyUIClient, None), tracker, poll_interval=1.0)


def test_progress_of_the_running_node() -> None:
    job = job_with(
        ("execution_start", {}),
        ("executing", {"node": "2"}),
        ("progress", {"node": "2", "value": 3, "max": 4}),
    )
    assert Progress.of(job) == Progress("running", "2", 3, 4)


def test_a_new_node_does_not_inherit_the_previous_progress() -> None:
    job = job_with(
        ("executing", {"node": "2"}),
        ("progress", {"node": "2", "value": 4, "max": 4}),
        ("executing", {"node": "3"}),
    )
    assert Progress.of(job) == Progress("running", "3", None, None)


def test_progress_without_a_node_belongs_to_the_running_one() -> None:
    job = job_with(("executing", {"node": "5"}), ("progress", {"value": 1, "max": 2}))
    assert Progress.of(job).as_dict() == {"state": "running", "node": "5", "value": 1, "max": 2}


def test_queued_prompt_has_no_node() -> None:
    assert Progress.of(job_with()) == Progress("queued", None, None, None)
