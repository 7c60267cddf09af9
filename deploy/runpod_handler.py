"""RunPod serverless adapter: queue-endpoint jobs run through the worker's own machinery.

The container runs this instead of the HTTP server when WORKER_MODE=runpod (chosen by
deploy/entrypoint.sh on a RunPod queue endpoint). Each job goes through the same
`PromptSyncRequest` model and `PromptHandler.run` as `POST /prompt_sync`.

Job input (RunPod's `input` object):

    workflow             the API-format graph (`prompt` is accepted as well)
    images               input images, as in /prompt_sync
    output               delivery options, as in /prompt_sync; with no mode given the outputs
                         come back as base64 (a RunPod caller cannot reach the worker's
                         /outputs URLs), unless OUTPUT_MODE names s3 or store
    timeout              seconds to wait (default DEFAULT_TIMEOUT, at most MAX_TIMEOUT)
    extra_data, return_image_base64, client_id   as in /prompt_sync

Job output: the /prompt_sync answer (`prompt_id`, `outputs`, `images`, `files`, `texts`,
...). A failure is `{"error": "<the worker's JSON error body as a string>"}`, which RunPod
reports as a failed job.

Try it locally against a running ComfyUI (RunPod's local test mode runs one job and exits):

    COMFYUI_SERVER_ADDRESS=127.0.0.1:8188 python deploy/runpod_handler.py \\
        --test_input '{"input": {"workflow": {...}}}'
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the worker's modules are one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from pydantic import ValidationError

from comfyui.answer import materialize
from comfyui.bridge import Bridge
from comfyui.exceptions import ComfyUIConnectionError, ComfyUIError, InvalidRequestError
from comfyui.job import Job
from comfyui.logs import configure_logging
from comfyui.progress import Progress, follow
from comfyui.schemas import OutputOptions, PromptSyncRequest
from config import Settings, get_settings

log = structlog.get_logger("runpod")

#: Seconds between progress reports sent to RunPod while a job runs.
PROGRESS_INTERVAL = 2.0


class RunPodAdapter:
    """Turns RunPod jobs into `/prompt_sync` runs on one long-lived bridge to ComfyUI."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        ready_timeout: float | None = None,
        report_progress: bool = False,
        single_job: bool = False,
    ) -> None:
        self.settings = settings or get_settings()
        self.ready_timeout = (
            float(os.environ.get("COMFYUI_WAIT_TIMEOUT", "600"))
            if ready_timeout is None
            else ready_timeout
        )
        self.report_progress = report_progress
        self.single_job = single_job
        self._bridge: Bridge | None = None
        self._reporters: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """RunPod's handler: one job in, its output (or `{"error": ...}`) out."""
        job_id = str(job.get("id", ""))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(runpod_job=job_id)
        started = time.perf_counter()
        try:
            request, timeout = self.parse(job.get("input"))
            bridge = await self.bridge()
            await self.wait_ready(bridge)
            with bridge.admission.slot():
                bridge.admission.check_submission(request.prompt)
                answer = await bridge.handler.run(
                    request,
                    timeout,
                    base_url=self.settings.public_base_url,
                    on_queued=self._progress_reporter(job) if self.report_progress else None,
                )
        except ComfyUIError as exc:
            log.warning("job_failed", error=exc.code, detail=exc.detail)
            return {"error": json.dumps(exc.to_body())}
        finally:
            log.info("job_done", duration_ms=round((time.perf_counter() - started) * 1000, 2))
            if self.single_job:  # RunPod's local test mode exits right after the job
                await self.close()
        return materialize(answer).model_dump(mode="json")

    def parse(self, payload: Any) -> tuple[PromptSyncRequest, float]:
        """The job input as a /prompt_sync request and its timeout."""
        if not isinstance(payload, dict):
            raise InvalidRequestError("the job input must be an object with a `workflow`")
        body = dict(payload)
        timeout = body.pop("timeout", None)
        if "workflow" in body:
            if "prompt" in body:
                raise InvalidRequestError("give the graph as `workflow` or `prompt`, not both")
            body["prompt"] = body.pop("workflow")
        try:
            request = PromptSyncRequest.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err.get('loc', ())) or 'input'}: {err.get('msg')}"
                for err in exc.errors()
            )
            raise InvalidRequestError(f"invalid job input: {problems}") from None
        wait = self.settings.default_timeout if timeout is None else timeout
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 1:
            raise InvalidRequestError("`timeout` must be a number of seconds, at least 1")
        if wait > self.settings.max_timeout:
            raise InvalidRequestError(
                f"timeout {wait:g} exceeds the maximum of {self.settings.max_timeout:g} seconds"
            )
        mode = request.output.mode if request.output else None
        if mode is None and not request.return_image_base64:
            if self.settings.output_mode == "reference":
                options = request.output or OutputOptions()
                request.output = options.model_copy(update={"mode": "base64"})
        return request, float(wait)

    async def bridge(self) -> Bridge:
        """The bridge of the running event loop, started on first use."""
        loop = asyncio.get_running_loop()
        if self._bridge is None or self._loop is not loop:
            bridge = Bridge.create(self.settings)
            await bridge.start()
            self._bridge, self._loop = bridge, loop
            log.info("bridge_started", comfyui=self.settings.comfyui_url)
        return self._bridge

    async def wait_ready(self, bridge: Bridge) -> None:
        """Wait until ComfyUI answers and the websocket is up (at most `ready_timeout`)."""
        deadline = time.monotonic() + self.ready_timeout
        while reasons := bridge.not_ready_reasons():
            if time.monotonic() >= deadline:
                raise ComfyUIConnectionError(
                    f"the worker is not ready after {self.ready_timeout:g} s: " + "; ".join(reasons)
                )
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._bridge is not None:
            await self._bridge.close()
            self._bridge = None

    def _progress_reporter(self, job: dict[str, Any]) -> Callable[[Job], None]:
        """`on_queued` callback: report the prompt's progress to RunPod while it runs."""

        def start(queued: Job) -> None:
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - always called from the handler's task
                return
            reporter = asyncio.create_task(self._report(job, queued, task), name="runpod-progress")
            self._reporters.add(reporter)
            reporter.add_done_callback(self._reporters.discard)

        return start

    async def _report(self, job: dict[str, Any], queued: Job, run: asyncio.Task[Any]) -> None:
        from runpod.serverless import progress_update

        async for progress in follow(queued, run, interval=PROGRESS_INTERVAL):
            if progress.state in ("queued", "running"):
                progress_update(job, _describe(queued.prompt_id, progress))


def _describe(prompt_id: str, progress: Progress) -> dict[str, Any]:
    return {"prompt_id": prompt_id, **progress.as_dict()}


def main() -> None:
    import runpod

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_output)
    # As the SDK decides: with --test_input or off a RunPod endpoint it runs one job locally.
    local = "--test_input" in sys.argv or not os.environ.get("RUNPOD_WEBHOOK_GET_JOB")
    adapter = RunPodAdapter(settings, report_progress=not local, single_job=local)
    runpod.serverless.start({"handler": adapter.handle})


if __name__ == "__main__":
    main()
