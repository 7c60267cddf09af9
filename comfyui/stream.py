"""`POST /prompt_sync` as a progress stream (Server-Sent Events), for clients that ask for it.

A request with `Accept: text/event-stream` runs exactly as a plain one (same body, same
checks, same handler) but, once ComfyUI has queued the prompt, is answered with 200 and a
stream of events:

    event: queued     data: {"prompt_id"}
    event: status     data: {"prompt_id", "state", "node", "value", "max"}   state changed
    event: executing  data: the same, when another node starts
    event: progress   data: the same, when a node reports progress (value of max)
    event: result     data: the /prompt_sync answer (base64 data inline)         last
    event: error      data: the error body, plus "status" (the HTTP status a plain request
                      would have got)                                          last

Failures before the prompt is queued (invalid body or inputs, backpressure, ComfyUI down)
are answered as plain JSON errors with their own status, as without streaming. Bursts of
progress are coalesced (the newest state every `interval`). A comment line is sent every
`keepalive` seconds without events, so proxies keep the connection open. A caller that goes
away cancels the prompt on ComfyUI, as for a plain request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from starlette.responses import Response, StreamingResponse

from comfyui.answer import materialize, render_answer
from comfyui.exceptions import ComfyUIError, error_body
from comfyui.job import Job
from comfyui.progress import Progress
from comfyui.schemas import PromptSyncResponse

log = structlog.get_logger(__name__)

MEDIA_TYPE = "text/event-stream"

#: Runs the prompt; calls the given callback with the job once ComfyUI has queued it.
Runner = Callable[[Callable[[Job], None]], Awaitable[PromptSyncResponse]]


def wants_stream(accept: str | None) -> bool:
    """Does an Accept header ask for the event stream?"""
    return any(
        part.split(";", 1)[0].strip().lower() == MEDIA_TYPE for part in (accept or "").split(",")
    )


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event (data as one line of JSON)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_prompt(run: Runner, *, interval: float = 0.1, keepalive: float = 15.0) -> Response:
    """Start `run`; answer with its event stream once queued, or with its early error."""
    loop = asyncio.get_running_loop()
    queued: asyncio.Future[Job] = loop.create_future()

    def on_queued(job: Job) -> None:
        if not queued.done():
            queued.set_result(job)

    task = asyncio.ensure_future(run(on_queued))
    either: list[asyncio.Future[Any]] = [task, queued]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not queued.done():
        # Refused or failed before anything was queued: the plain answer, status and all.
        return render_answer(task.result())
    return StreamingResponse(
        _events(queued.result(), task, interval, keepalive),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    job: Job, task: asyncio.Future[PromptSyncResponse], interval: float, keepalive: float
) -> AsyncIterator[bytes]:
    prompt_id = job.prompt_id
    loop = asyncio.get_running_loop()
    try:
        yield sse("queued", {"prompt_id": prompt_id})
        last: Progress | None = None
        quiet_since = loop.time()
        while True:
            now = Progress.of(job)
            for event in _changes(last, now):
                yield sse(event, {"prompt_id": prompt_id, **now.as_dict()})
                quiet_since = loop.time()
            last = now
            if task.done():
                break
            if loop.time() - quiet_since >= keepalive:
                yield b": keepalive\n\n"
                quiet_since = loop.time()
            await asyncio.wait({task}, timeout=interval)
        try:
            answer = task.result()
        except ComfyUIError as exc:
            yield sse("error", {**exc.to_body(), "status": exc.status_code})
            return
        except Exception:
            log.exception("stream_failed", prompt_id=prompt_id)
            body = error_body("internal_error", "Internal error in the worker; see its logs")
            yield sse("error", {**body, "prompt_id": prompt_id, "status": 500})
            return
        yield sse("result", materialize(answer).model_dump(mode="json"))
    finally:
        # The caller went away mid-stream: cancelling the run cancels the prompt on ComfyUI.
        if not task.done():
            task.cancel()


_NOTHING = Progress(state="", node=None, value=None, max=None)


def _changes(last: Progress | None, now: Progress) -> list[str]:
    """The events telling how `now` differs from what was sent last."""
    last = last or _NOTHING
    events = []
    if now.state != last.state:
        events.append("status")
    if now.node != last.node and now.node is not None:
        events.append("executing")
    if (now.value, now.max) != (last.value, last.max) and now.value is not None:
        events.append("progress")
    return events
