# mypy: disable-error-code="comparison-overlap"
"""PromptTracker and EventRouter fed with messages recorded from real ComfyUI servers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyui.events import Event, parse_event
from comfyui.router import EventRouter
from comfyui.tracker import PromptState, PromptTracker
from tests import transcripts


def _events(messages: list[dict[str, Any]]) -> list[Event]:
    return [Event(m["type"], m["data"]) for m in messages]


def _history(name: str, prompt_id: str) -> dict[str, Any]:
    (entry,) = [
        e["response"][prompt_id] for e in transcripts.responses(name, f"/history/{prompt_id}")
    ]
    assert isinstance(entry, dict)
    return entry


def _feed_all(name: str) -> tuple[PromptTracker, str]:
    messages = transcripts.ws_messages(name)
    prompt_id = next(m["data"]["prompt_id"] for m in messages if m["type"] == "execution_start")
    router = EventRouter()
    tracker = router.track(prompt_id)
    tracker.mark_submitted()
    for event in _events(messages):
        router.dispatch(event)
    return tracker, prompt_id


def test_success_run_finishes_and_history_settles_it() -> None:
    tracker, prompt_id = _feed_all("success.json")
    # execution_success comes before ComfyUI writes history: finished, not yet success.
    assert tracker.state is PromptState.FINISHED
    assert tracker.executed["3"]["images"][0]["filename"] == "rec_00002_.png"
    tracker.apply_history(_history("success.json", prompt_id))
    assert tracker.state is PromptState.SUCCESS
    assert tracker.history is not None and "3" in tracker.history["outputs"]


@pytest.mark.parametrize("name", ["success.json", "progress.json", "preview_and_text.json"])
def test_an_unbroken_08_run_adds_up_to_the_history_comfyui_wrote(name: str) -> None:
    tracker, prompt_id = _feed_all(name)
    entry = tracker.history_from_events()
    assert entry is not None
    recorded = _history(name, prompt_id)["outputs"]
    assert entry["outputs"] == recorded
    assert list(entry["outputs"]) == list(recorded)


def test_a_run_with_a_websocket_gap_is_left_to_history() -> None:
    tracker, _ = _feed_all("success.json")
    tracker.note_disconnect()
    assert tracker.history_from_events() is None
    failed, _ = _feed_all("runtime_error.json")
    assert failed.history_from_events() is None


def test_progress_is_recorded() -> None:
    tracker, _ = _feed_all("progress.json")
    assert tracker.progress == (4, 4)
    assert tracker.current_node == "3"
    assert tracker.state is PromptState.FINISHED


def test_runtime_error_is_final_with_node_details() -> None:
    tracker, _ = _feed_all("runtime_error.json")
    assert tracker.state is PromptState.ERROR
    assert tracker.error is not None
    assert tracker.error["node_id"] == "2" and tracker.error["node_type"] == "FailAlways"


def test_interrupted_run_is_final() -> None:
    messages = transcripts.ws_messages("interrupt_and_delete.json")
    prompt_id = next(m["data"]["prompt_id"] for m in messages if m["type"] == "execution_start")
    tracker = PromptTracker(prompt_id)
    for event in _events(messages):
        tracker.feed(event)
    assert tracker.state is PromptState.INTERRUPTED


def test_history_of_interrupted_and_failed_prompts() -> None:
    data = transcripts.load("interrupt_and_delete.json")
    (exchange,) = [
        e
        for e in data["exchanges"]
        if e.get("request", {}).get("path", "").startswith("/history/1c")
    ]
    ((prompt_id, entry),) = exchange["response"].items()
    tracker = PromptTracker(prompt_id)
    tracker.apply_history(entry)
    assert tracker.state is PromptState.INTERRUPTED
    assert tracker.error is not None and tracker.error["node_type"] == "SleepWithProgress"

    messages = transcripts.ws_messages("runtime_error.json")
    failed_id = messages[-2]["data"]["prompt_id"]
    failed = PromptTracker(failed_id)
    failed.apply_history(_history("runtime_error.json", failed_id))
    assert failed.state is PromptState.ERROR
    assert failed.error is not None and failed.error["exception_type"] == "RuntimeError"


def test_2024_run_ends_with_executing_null_and_cached_run_too() -> None:
    probe = transcripts.load("comfyui-2024/probe.json")
    for case in ("tiny_first", "tiny_cached"):
        body = probe[case]
        prompt_id = body["post_body"]["prompt_id"]
        tracker = PromptTracker(prompt_id)
        tracker.mark_submitted()
        for message in body["ws"]:
            tracker.feed(Event(message["type"], message["data"]))
        assert tracker.state is PromptState.FINISHED, case
        assert tracker.history_written
        tracker.apply_history(body["history"][prompt_id])
        assert tracker.state is PromptState.SUCCESS


def test_2024_runtime_error_history_without_timestamps() -> None:
    probe = transcripts.load("comfyui-2024/probe.json")
    ((prompt_id, entry),) = probe["GET /history?max_items=1"][1].items()
    tracker = PromptTracker(prompt_id)
    tracker.apply_history(entry)
    assert tracker.state is PromptState.ERROR
    assert tracker.error is not None and tracker.error["node_type"] == "SaveImage"


def test_late_events_never_undo_an_outcome() -> None:
    tracker = PromptTracker("p")
    tracker.feed(Event("execution_error", {"prompt_id": "p", "node_id": "2"}))
    tracker.feed(Event("executing", {"node": None, "prompt_id": "p"}))
    tracker.feed(Event("execution_start", {"prompt_id": "p"}))
    assert tracker.state is PromptState.ERROR
    tracker.apply_history({"status": {"status_str": "success", "completed": True}})
    assert tracker.state is PromptState.ERROR


def test_router_buffers_events_that_arrive_before_the_id_is_known() -> None:
    router = EventRouter()
    # The 2024 server ignores our proposed id; its events name its own id.
    for message in (
        {"type": "execution_start", "data": {"prompt_id": "real"}},
        {"type": "execution_cached", "data": {"nodes": ["1"], "prompt_id": "real"}},
        {"type": "executing", "data": {"node": None, "prompt_id": "real"}},
    ):
        event = parse_event(json.dumps(message))
        assert event is not None
        assert router.dispatch(event) is False
    tracker = router.track("proposed")
    assert tracker.state is PromptState.SUBMITTING
    router.rekey(tracker, "real")
    assert router.get("proposed") is None and router.get("real") is tracker
    assert tracker.state is PromptState.FINISHED
    assert tracker.cached_nodes == ["1"]


def test_router_ignores_other_prompts_and_bounds_its_buffer() -> None:
    router = EventRouter()
    tracker = router.track("mine")
    for i in range(1000):
        router.dispatch(Event("executing", {"node": "1", "prompt_id": f"other-{i}"}))
    assert tracker.state is PromptState.SUBMITTING
    assert len(router._orphans) <= 256
    # The earliest strangers were dropped, the latest kept.
    assert "other-999" in router._orphans and "other-0" not in router._orphans


def test_parse_event_rejects_non_events() -> None:
    assert parse_event("not json") is None
    assert parse_event("[1, 2]") is None
    assert parse_event('{"type": "status"}') is None
    event = parse_event('{"type": "executing", "data": {"node": null, "prompt_id": "x"}}')
    assert event is not None and event.is_run_finished and event.prompt_id == "x"
