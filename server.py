"""FastAPI app: routes and exception handlers. The work happens in the `comfyui` package."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import structlog
import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyui.access import OPEN_PATHS, ApiKeys, RateLimiter
from comfyui.answer import render_answer
from comfyui.bridge import Bridge
from comfyui.client import RawResponse
from comfyui.exceptions import (
    ComfyUIError,
    InvalidRequestError,
    PayloadTooLargeError,
    ShuttingDownError,
    UnauthorizedError,
    error_body,
)
from comfyui.file_route import serve_output
from comfyui.handler import QueuedCallback
from comfyui.logs import configure_logging
from comfyui.metrics import CONTENT_TYPE, LiveValues, Metrics
from comfyui.schemas import (
    ErrorResponse,
    HealthResponse,
    InterruptRequest,
    PromptSyncRequest,
    PromptSyncResponse,
    QueueChange,
    QueuedPrompt,
    ReadyResponse,
    UnhealthyResponse,
)
from comfyui.stream import stream_prompt, wants_stream
from config import Settings, get_settings

log = structlog.get_logger("server")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Invalid request, or graph rejected by ComfyUI (`node_errors` says why)",
        401: "API keys are configured and none was presented",
        409: "Interrupted or deleted on ComfyUI by someone else",
        413: "Request body or graph over the configured limit",
        422: "Request body does not match the schema",
        429: "Too many requests in flight, ComfyUI's queue is full, or rate limited",
        500: "A node raised during execution (`node_errors` names it)",
        502: "ComfyUI answered something unexpected, or an output could not be read",
        503: "ComfyUI is unreachable, or the worker is shutting down (see Retry-After)",
        504: "Timeout: the prompt was cancelled on ComfyUI",
    }.items()
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the worker app; the ComfyUI connection opens and closes with its lifespan."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bridge = Bridge.create(settings)
        bridge.handler.observers.append(metrics.observe_prompt)
        metrics.watch(
            lambda: LiveValues(
                queue_depth=bridge.client.queue_remaining,
                in_flight=bridge.admission.in_flight,
                waiting=bridge.watcher.waiting,
                reconnects=bridge.client.reconnects,
                connected=bridge.client.connected,
            )
        )
        await bridge.start()
        app.state.bridge = bridge
        log.info("worker_started", comfyui=settings.comfyui_url, client_id=bridge.client.client_id)
        try:
            yield
        finally:
            await bridge.close()
            log.info("worker_stopped")

    app = FastAPI(
        title="ComfyUI sync worker",
        version="1.0.0",
        description="Runs ComfyUI workflows synchronously: one request, one answer.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    # Added innermost first: the request log sees every answer, refusals included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=ApiKeys(settings.api_key_list))
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    _add_exception_handlers(app)
    _add_routes(app, settings)
    return app


def _bridge(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


async def rate_limited(request: Request) -> None:
    """Dependency: count the call against its caller's per-minute budget.

    Async although it never awaits: FastAPI runs a plain `def` dependency in a worker thread,
    a hop to another thread and back on every request (the limiter is in-memory and never
    blocks)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    caller = getattr(request.state, "caller", None) or (
        request.client.host if request.client else "unknown"
    )
    limiter.check(caller)


def _accepting(request: Request) -> Bridge:
    bridge = _bridge(request)
    if bridge.shutting_down:
        raise ShuttingDownError()
    return bridge


def _add_routes(app: FastAPI, settings: Settings) -> None:
    @app.post(
        "/prompt_sync",
        response_model=PromptSyncResponse,
        responses={
            200: {
                "description": "The outputs; with `Accept: text/event-stream`, progress events "
                "then a `result` (or `error`) event",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_ERRORS,
        },
        summary="Run a workflow and answer with its outputs",
        dependencies=[Depends(rate_limited)],
    )
    async def prompt_sync(
        body: PromptSyncRequest,
        request: Request,
        timeout: float | None = Query(
            None,
            ge=1,
            description="Seconds to wait (default DEFAULT_TIMEOUT, at most MAX_TIMEOUT).",
        ),
    ) -> Response:
        bridge = _accepting(request)
        wait = settings.default_timeout if timeout is None else timeout
        if wait > settings.max_timeout:
            raise InvalidRequestError(
                f"timeout {wait:g} exceeds the maximum of {settings.max_timeout:g} seconds"
            )
        if body.client_id:
            structlog.contextvars.bind_contextvars(caller_client_id=body.client_id)

        async def run(on_queued: QueuedCallback | None = None) -> PromptSyncResponse:
            with bridge.admission.slot():
                bridge.admission.check_submission(body.prompt)
                return await bridge.handler.run(
                    body,
                    wait,
                    disconnected=lambda: _until_disconnected(request),
                    base_url=str(request.base_url),
                    on_queued=on_queued,
                )

        if wants_stream(request.headers.get("accept")):
            # Progress events, then the answer (see comfyui/stream.py).
            return await stream_prompt(run)
        return render_answer(await run())

    @app.get(
        "/outputs/{folder_type}/{path:path}",
        response_class=Response,
        responses={
            200: {"description": "The file's bytes", "content": {"application/octet-stream": {}}},
            404: {"model": ErrorResponse, "description": "No such output or temp file"},
            502: _ERRORS[502],
        },
        summary="An output or temp file of ComfyUI (the `url` of reference mode)",
        dependencies=[Depends(rate_limited)],
    )
    async def output_file(folder_type: str, path: str, request: Request) -> Response:
        return await serve_output(_bridge(request).handler.reader, folder_type, path)

    @app.post(
        "/prompt",
        response_model=QueuedPrompt,
        responses={
            400: {"description": "ComfyUI's own validation body, or invalid JSON"},
            **{code: _ERRORS[code] for code in (401, 413, 429, 503)},
        },
        summary="Queue a workflow (ComfyUI-compatible passthrough)",
        dependencies=[Depends(rate_limited)],
    )
    async def queue_prompt(request: Request) -> Response:
        bridge = _accepting(request)
        raw = await request.body()
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise InvalidRequestError("request body is not valid JSON") from None
        if isinstance(parsed, dict):
            bridge.admission.check_submission(parsed.get("prompt"))
        answer = await bridge.client.forward(
            "POST", "/prompt", body=raw, headers={"Content-Type": "application/json"}
        )
        return _passthrough(answer)

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": UnhealthyResponse}},
        summary="Liveness: the worker process runs (no call to ComfyUI)",
    )
    async def health(request: Request) -> Any:
        bridge = _bridge(request)
        now = datetime.now(UTC).isoformat()
        if not bridge.alive:
            return JSONResponse(
                UnhealthyResponse(
                    error="a background task of the worker has stopped", timestamp=now
                ).model_dump(),
                status_code=503,
            )
        probe = bridge.watchdog.health
        return HealthResponse(
            comfyui_server="connected" if probe.ok else "disconnected",
            queue_running=probe.queue_running,
            queue_pending=probe.queue_pending,
            websocket_connected=bridge.client.connected,
            last_probe=probe.checked_at.isoformat() if probe.checked_at else None,
            timestamp=now,
        )

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse}},
        summary="Readiness: ComfyUI answers, websocket up, warm-up done, not stopping",
    )
    async def ready(request: Request) -> Any:
        reasons = _bridge(request).not_ready_reasons()
        body = ReadyResponse(
            status="not_ready" if reasons else "ready",
            reasons=reasons,
            timestamp=datetime.now(UTC).isoformat(),
        )
        return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus(request: Request) -> Response:
        metrics: Metrics = request.app.state.metrics
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # ComfyUI-compatible endpoints, passed through unchanged. Bodies ComfyUI parses as
    # JSON are checked first: ComfyUI answers a bare 500 to anything else.
    for path, summary in (
        ("/queue", "Delete pending prompts or clear the queue"),
        ("/history", "Delete or clear history"),
    ):
        app.add_api_route(
            path,
            _json_forwarder(path, QueueChange),
            methods=["POST"],
            summary=f"{summary} (ComfyUI passthrough)",
            name=f"comfyui_post_{path}",
            responses={400: _ERRORS[400]},
            openapi_extra=_body_doc(QueueChange),
        )
    app.add_api_route(
        "/interrupt",
        _json_forwarder("/interrupt", InterruptRequest, optional=True),
        methods=["POST"],
        summary="Interrupt the running prompt (ComfyUI passthrough)",
        responses={400: _ERRORS[400]},
        openapi_extra=_body_doc(InterruptRequest, required=False),
    )
    app.add_api_route(
        "/upload/image",
        _upload_forwarder,
        methods=["POST"],
        summary="Upload an input image, multipart (ComfyUI passthrough)",
        responses={400: _ERRORS[400], 413: _ERRORS[413]},
        openapi_extra=_UPLOAD_DOC,
    )
    for path, summary in (
        ("/prompt", "Queue remaining"),
        ("/queue", "Running and pending prompts"),
        ("/history", "Prompt history"),
        ("/history/{prompt_id}", "History of one prompt"),
        ("/view", "An output, temp or input file"),
        ("/object_info", "Every node class"),
        ("/object_info/{node_class}", "One node class"),
        ("/system_stats", "ComfyUI system information"),
        ("/embeddings", "Embedding names"),
    ):
        app.add_api_route(
            path,
            _forwarder("GET"),
            methods=["GET"],
            summary=f"{summary} (ComfyUI passthrough)",
            name=f"comfyui_get_{path}",
            dependencies=[Depends(rate_limited)] if path == "/view" else None,
            openapi_extra=_path_params_doc(path),
        )


def _json_forwarder(path: str, model: type[BaseModel], *, optional: bool = False) -> Any:
    """A passthrough whose body must be a JSON object of `model`'s shape (empty if optional)."""

    async def forward(request: Request) -> Response:
        raw = await request.body()
        if raw.strip() or not optional:
            try:
                body = model.model_validate_json(raw)
            except ValidationError as exc:
                raise InvalidRequestError(f"invalid {path} body: {_problems(exc)}") from None
            # Nulls are dropped: ComfyUI iterates `delete` and breaks on `null`.
            raw = body.model_dump_json(exclude_none=True).encode()
        answer = await _bridge(request).client.forward(
            "POST", path, body=raw, headers={"Content-Type": "application/json"}
        )
        return _passthrough(answer)

    return forward


async def _upload_forwarder(request: Request) -> Response:
    """`POST /upload/image`: multipart passed through; a malformed one is refused here
    (ComfyUI answers a bare 500 to a multipart type without a boundary)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        raise InvalidRequestError("upload needs a multipart/form-data body with a boundary")
    try:
        form = await request.form()
    except Exception as exc:  # python-multipart raises several types for broken bodies
        raise InvalidRequestError(f"malformed multipart body: {exc}") from None
    image = form.get("image")
    if isinstance(image, str) or image is None or not image.filename:
        raise InvalidRequestError("upload needs a file in the `image` field")
    for name in ("subfolder", "type", "overwrite"):
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(f"`{name}` must be a plain form field")
    subfolder = str(form.get("subfolder") or "")
    folder_type = str(form.get("type") or "input")
    check_upload_fields(filename=image.filename, subfolder=subfolder, folder_type=folder_type)
    # Only the fields ComfyUI reads are sent on: its multipart parser fails (500) on some
    # field names a client can send.
    answer = await _bridge(request).client.upload_image(
        await image.read(),
        filename=image.filename,
        content_type=image.content_type or "application/octet-stream",
        subfolder=subfolder,
        folder_type=folder_type,
        overwrite=str(form.get("overwrite") or "").lower() in ("true", "1"),
    )
    return _passthrough(answer)


def check_upload_fields(*, filename: str, subfolder: str, folder_type: str) -> None:
    """Untrusted names must stay inside ComfyUI's folders and be plain text."""
    if folder_type not in ("input", "temp", "output"):
        raise InvalidRequestError("`type` must be input, temp or output")
    for label, value in (("filename", filename), ("subfolder", subfolder)):
        if any(ord(ch) < 32 for ch in value) or "\\" in value:
            raise InvalidRequestError(f"{label} contains control characters or backslashes")
        parts = value.split("/")
        if value.startswith("/") or ".." in parts:
            raise InvalidRequestError(f"{label} must be a relative path inside the folder")


_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "subfolder": {"type": "string"},
                        "overwrite": {"type": "string", "enum": ["true", "false"]},
                        "type": {"type": "string", "enum": ["input", "temp", "output"]},
                    },
                }
            }
        },
    }
}


def _path_params_doc(path: str) -> dict[str, Any] | None:
    """Declare the `{name}` parts of a passthrough path, which reads them itself."""
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    if not names:
        return None
    return {
        "parameters": [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    }


def _body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI request body for a route that reads its body itself (to forward it raw)."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"content": schema, "required": required}}


def _problems(exc: ValidationError | RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ())) or 'body'}: {err.get('msg')}"
        for err in exc.errors()
    )


def _forwarder(method: str) -> Any:
    async def forward(request: Request) -> Response:
        headers = {}
        if "content-type" in request.headers:
            headers["Content-Type"] = request.headers["content-type"]
        body = await request.body() if method != "GET" else None
        answer = await _bridge(request).client.forward(
            method,
            request.url.path,
            query=request.url.query,
            body=body,
            headers=headers,
        )
        return _passthrough(answer)

    return forward


def _passthrough(answer: RawResponse) -> Response:
    kept = ("content-disposition", "cache-control")
    headers = {k: v for k, v in answer.headers.items() if k.lower() in kept}
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type=answer.content_type,
        headers=headers,
    )


async def _until_disconnected(request: Request) -> None:
    """Return when the caller closes the connection (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(ComfyUIError)
    async def comfyui_error(request: Request, exc: ComfyUIError) -> JSONResponse:
        structlog.contextvars.bind_contextvars(outcome=exc.code)
        return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", _problems(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(_HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(
            error_body("internal_error", "Internal error in the worker; see its logs"),
            status_code=500,
        )


async def _send_error(send: Send, error: ComfyUIError) -> None:
    response = JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - responses never read
    return {"type": "http.disconnect"}


class ApiKeyMiddleware:
    """When API keys are set, every route but liveness needs one (CORS preflight excepted)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys.enabled
            or scope["path"] in OPEN_PATHS
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        try:
            caller = self.keys.identify(HTTPConnection(scope))
        except UnauthorizedError as exc:
            await _send_error(send, exc)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse bodies over `MAX_BODY_BYTES` with 413, announced or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over {self.max_bytes} bytes (MAX_BODY_BYTES)"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, PayloadTooLargeError(detail))
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, detail)
            return message

        await self.app(scope, counting_receive, send)


class RequestLogMiddleware:
    """One log line and one metric per request; a request id bound for every line meanwhile."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


class WorkerServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT stop taking work first (readiness turns 503)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.worker_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        bridge: Bridge | None = getattr(self.worker_app.state, "bridge", None)
        if bridge is not None and not bridge.shutting_down:
            bridge.shutting_down = True
            log.info("shutdown_requested", signal=signal.Signals(sig).name)
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after its graceful shutdown, so the process
            # would die "by SIGTERM". A drained shutdown is a clean exit: status 0.
            self._captured_signals = [s for s in self._captured_signals if s != sig]


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_output)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.server_host,
        port=settings.server_port,
        log_config=None,
        access_log=False,
        # In-flight requests get this long after SIGTERM; then they are cancelled, which
        # cancels their prompts on ComfyUI before the process exits.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    WorkerServer(config, app).run()


if __name__ == "__main__":
    main()
