"""Submit a graph to ComfyUI and wait for its outcome: the heart of `/prompt_sync`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from comfyui.client import ComfyUIClient
from comfyui.delivery import Deliveries, DeliveryContext, DeliveryPlan, deliver_outputs
from comfyui.exceptions import (
    ClientDisconnectedError,
    ComfyUIError,
    ComfyUIProtocolError,
    PromptTimeoutError,
    PromptValidationError,
)
from comfyui.inputs import InputImages
from comfyui.job import Job
from comfyui.outputs import (
    EarlySizes,
    OutputReader,
    collect_files,
    collect_images,
    collect_texts,
)
from comfyui.schemas import FileOutput, ImageOutput, PromptSyncRequest, PromptSyncResponse
from comfyui.tracker import PromptState
from comfyui.url_fetch import AddressPolicy, UrlFetcher
from comfyui.watcher import PromptWatcher
from config import Settings

log = structlog.get_logger(__name__)

#: Resolves when the caller has gone away.
DisconnectWatch = Callable[[], Awaitable[None]]
#: Told the outcome of each run: "success" or an error code, and the execution time.
OutcomeObserver = Callable[[str, float | None], None]
#: Told the job once its prompt is on ComfyUI's queue (e.g. to report progress).
QueuedCallback = Callable[[Job], None]


class PromptHandler:
    """Queues prompts with the worker's client id and follows them to completion."""

    def __init__(self, client: ComfyUIClient, watcher: PromptWatcher, settings: Settings) -> None:
        self.client = client
        self.watcher = watcher
        self.settings = settings
        self.observers: list[OutcomeObserver] = []
        self._background: set[asyncio.Task[None]] = set()
        self.fetcher = UrlFetcher(
            AddressPolicy(
                allow_private=settings.allow_private_input_urls,
                allowed_networks=settings.input_url_allowed_network_list,
            ),
            max_bytes=settings.input_image_max_bytes,
            timeout=settings.input_url_timeout,
            max_redirects=settings.input_url_max_redirects,
        )
        self.inputs = InputImages(client, self.fetcher, settings)
        self.reader = OutputReader(
            client, output_dir=settings.comfyui_output_dir, temp_dir=settings.comfyui_temp_dir
        )
        self.deliveries = Deliveries(settings)

    async def submit(
        self,
        prompt: dict[str, Any],
        extra_data: dict[str, Any] | None = None,
        *,
        on_output: Callable[[str, Any], None] | None = None,
    ) -> Job:
        """Queue a graph; the returned job is already tracked, so no event is missed.
        `on_output` is told each node output as its `executed` event arrives."""
        proposed = str(uuid.uuid4())
        # Track before submitting: a fast prompt can finish before POST /prompt answers.
        tracker = self.watcher.track(proposed)
        tracker.on_output = on_output
        try:
            response = await self.client.queue_prompt(
                prompt, prompt_id=proposed, extra_data=extra_data
            )
            body = _json_or_none(response.body)
            if response.status == 200 and isinstance(body, dict) and "prompt_id" in body:
                prompt_id = str(body["prompt_id"])
                if prompt_id != proposed:  # the 2024 server picks its own id
                    self.watcher.rekey(tracker, prompt_id)
                tracker.mark_submitted()
                log.info("prompt_queued", prompt_id=prompt_id, number=body.get("number"))
                return Job(self.client, tracker, poll_interval=self.settings.comfyui_poll_interval)
            raise await self._rejection(response.status, body, prompt)
        except BaseException:
            self.watcher.untrack(tracker)
            raise

    async def run(
        self,
        request: PromptSyncRequest,
        timeout: float,
        disconnected: DisconnectWatch | None = None,
        base_url: str | None = None,
        on_queued: QueuedCallback | None = None,
    ) -> PromptSyncResponse:
        """Upload the inputs, queue, wait at most `timeout` seconds, deliver the outputs.

        On timeout, caller disconnect or cancellation the prompt is cancelled on ComfyUI.
        `base_url` is where the caller reached the worker (for worker URLs of outputs).
        `on_queued` gets the job as soon as ComfyUI accepted the prompt; its tracker shows
        the live state (`state`, `current_node`, `progress`) until the run ends.
        In base64 mode `data` fields hold tokens: `comfyui.answer.render_answer` renders
        the HTTP answer, `comfyui.answer.materialize` gives a copy with the text.
        """
        try:
            response = await self._run(request, timeout, disconnected, base_url, on_queued)
        except ComfyUIError as exc:
            self._observe(exc.code, None)
            raise
        except asyncio.CancelledError:
            self._observe("cancelled", None)
            raise
        self._observe("success", response.execution_time)
        return response

    def _observe(self, outcome: str, execution_time: float | None) -> None:
        structlog.contextvars.bind_contextvars(outcome=outcome)
        for observer in self.observers:
            observer(outcome, execution_time)

    async def _run(
        self,
        request: PromptSyncRequest,
        timeout: float,
        disconnected: DisconnectWatch | None,
        base_url: str | None,
        on_queued: QueuedCallback | None,
    ) -> PromptSyncResponse:
        # Options and inputs first: a bad one is refused before anything is queued.
        plan = await self.deliveries.plan(request)
        graph = await self.inputs.apply(request.images, request.prompt)
        # A description needs the sizes of the files: asked for as soon as a node names them.
        early = None if plan.delivery.reads_bytes else EarlySizes(self.reader)
        job = await self.submit(
            graph, request.extra_data, on_output=early.add if early is not None else None
        )
        # Every later line of this request, the request line included, names the prompt.
        structlog.contextvars.bind_contextvars(prompt_id=job.prompt_id)
        bound = log.bind(prompt_id=job.prompt_id)
        try:
            if on_queued is not None:
                on_queued(job)
            history = await _race_disconnect(job.result(timeout), disconnected, job.prompt_id)
        except PromptTimeoutError:
            bound.warning("prompt_timeout", timeout=timeout)
            await self._abort_quietly(job)
            raise PromptTimeoutError(
                f"Prompt did not finish within {timeout:g} s; it was cancelled on ComfyUI",
                prompt_id=job.prompt_id,
            ) from None
        except (ClientDisconnectedError, asyncio.CancelledError):
            bound.warning("caller_gone")
            self._abort_in_background(job)
            raise
        finally:
            self.watcher.untrack(job.tracker)
            if early is not None and job.tracker.state is not PromptState.SUCCESS:
                early.cancel()

        outputs = history.get("outputs") or {}
        context = DeliveryContext(
            prompt_id=job.prompt_id,
            graph=graph,
            request=_provenance(request, plan),
            base_url=base_url,
        )
        files = await deliver_outputs(
            collect_files(outputs),
            self.reader,
            plan,
            context,
            concurrency=self.settings.output_fetch_concurrency,
            early_sizes=early,
        )
        images = _with_delivered(collect_images(outputs), files, request.return_image_base64)
        execution_time = round(job.tracker.execution_time, 4)
        bound.info(
            "prompt_succeeded",
            execution_time=execution_time,
            files=len(files),
            mode=plan.delivery.mode,
        )
        answer = PromptSyncResponse(
            prompt_id=job.prompt_id,
            execution_time=execution_time,
            outputs=outputs,
            images=images,
            files=files,
            texts=collect_texts(outputs),
        )
        answer._inline = context.inline.payloads
        return answer

    async def close(self) -> None:
        """Let pending cancellations reach ComfyUI before the worker exits."""
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.fetcher.close()

    # -- internals ---------------------------------------------------------------------

    async def _rejection(self, status: int, body: Any, prompt: dict[str, Any]) -> ComfyUIError:
        """Turn a non-200 answer of POST /prompt into the error the caller gets."""
        if status == 400 and isinstance(body, dict):
            error = body.get("error")
            node_errors = body.get("node_errors")
            return PromptValidationError(
                _validation_detail(error, node_errors),
                node_errors=node_errors if isinstance(node_errors, dict) else {},
            )
        # The 2024 server answers an unknown node class with a bare 500: name it.
        unknown = await self._unknown_classes(prompt) if status >= 500 else []
        if unknown:
            return PromptValidationError(
                f"Cannot execute because node {unknown[0][1]} does not exist.",
                node_errors={
                    node_id: {
                        "errors": [
                            {
                                "type": "invalid_prompt",
                                "message": f"Node class {class_type} does not exist",
                                "details": f"Node ID '#{node_id}'",
                                "extra_info": {},
                            }
                        ],
                        "dependent_outputs": [],
                        "class_type": class_type,
                    }
                    for node_id, class_type in unknown
                },
            )
        return ComfyUIProtocolError(f"ComfyUI refused the prompt with HTTP {status}")

    async def _unknown_classes(self, prompt: dict[str, Any]) -> list[tuple[str, str]]:
        classes = sorted({str(node.get("class_type")) for node in prompt.values()})
        try:
            exists = dict(
                zip(
                    classes,
                    await asyncio.gather(*(self.client.node_exists(c) for c in classes)),
                    strict=True,
                )
            )
        except ComfyUIError:
            return []
        return [
            (node_id, str(node.get("class_type")))
            for node_id, node in prompt.items()
            if not exists.get(str(node.get("class_type")), True)
        ]

    async def _abort_quietly(self, job: Job) -> None:
        try:
            await job.abort()
        except ComfyUIError as exc:
            log.error("prompt_cancel_failed", prompt_id=job.prompt_id, error=exc.detail)

    def _abort_in_background(self, job: Job) -> None:
        # The request's own task is being torn down: cancel from a task of our own.
        task = asyncio.create_task(self._abort_quietly(job), name=f"abort-{job.prompt_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _race_disconnect(
    result: Awaitable[dict[str, Any]], disconnected: DisconnectWatch | None, prompt_id: str
) -> dict[str, Any]:
    """Await `result` unless the caller disconnects first.

    `result` runs in the calling task; a disconnect cancels that task. Racing two tasks with
    `asyncio.wait` cost ~2 KB more per waiting request (a task, a set, callbacks)."""
    if disconnected is None:
        return await result
    task = asyncio.current_task()
    assert task is not None
    watch = asyncio.ensure_future(disconnected())
    gone = False

    def caller_gone(finished: asyncio.Future[None]) -> None:
        nonlocal gone
        if finished.cancelled():
            return
        finished.exception()  # retrieved: a failed watch counts as the caller gone
        gone = True
        task.cancel()

    watch.add_done_callback(caller_gone)
    try:
        return await result
    except asyncio.CancelledError:
        # Only our own cancellation becomes a disconnect; any other is passed on.
        if gone and task.uncancel() == 0:
            raise ClientDisconnectedError(
                "The caller disconnected; the prompt was cancelled", prompt_id=prompt_id
            ) from None
        raise
    finally:
        watch.remove_done_callback(caller_gone)
        watch.cancel()


def _with_delivered(
    images: list[ImageOutput], files: list[FileOutput], data_in_images: bool
) -> list[ImageOutput]:
    """The compatible `images` list, with the MIME type their delivery gave them.

    The bytes of a file appear once in an answer (a 50 MB image is 67 MB of base64): in
    `files[].data`, or, when the caller asked with the compatible `return_image_base64`, in
    `images[].data`, moved there from `files`.
    """
    delivered = {(f.type, f.subfolder, f.filename): (f, f.data) for f in files}
    for image in images:
        found = delivered.get((image.type, image.subfolder, image.filename))
        if found is not None:
            item, data = found
            image.mime_type = item.mime_type
            if data_in_images:
                image.data, item.data = data, None
    return images


def _provenance(request: PromptSyncRequest, plan: DeliveryPlan) -> dict[str, Any]:
    """What is kept about the request beside stored outputs: never credentials, and not
    `extra_data` (it may carry API keys of API nodes)."""
    options = request.output
    conversion = plan.conversion
    return {
        "request_id": structlog.contextvars.get_contextvars().get("request_id"),
        "client_id": request.client_id,
        "mode": plan.delivery.mode,
        "convert": (
            {"format": conversion.format, "quality": conversion.quality} if conversion else None
        ),
        "input_images": [image.name for image in request.images],
        "metadata": options.metadata if options else None,
    }


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _validation_detail(error: Any, node_errors: Any) -> str:
    if isinstance(error, dict):
        text = str(error.get("message") or "Prompt rejected by ComfyUI")
        details = error.get("details")
        if details:
            text = f"{text}: {details}"
    else:
        text = str(error or "Prompt rejected by ComfyUI")
    if isinstance(node_errors, dict) and node_errors:
        reasons = []
        for node_id, node_error in node_errors.items():
            for item in (
                (node_error or {}).get("errors", []) if isinstance(node_error, dict) else []
            ):
                reasons.append(f"node {node_id}: {item.get('message')} ({item.get('details')})")
        if reasons:
            text = f"{text}: " + "; ".join(reasons)
    return text
