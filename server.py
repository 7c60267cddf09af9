"""FastAPI app: routes and exception handlers. The work happens in the `comfyui` package."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyui.bridge import Bridge
from comfyui.client import RawResponse
from comfyui.exceptions import ComfyUIError, InvalidRequestError, error_body
from comfyui.logs import configure_logging
from comfyui.schemas import (
    ErrorResponse,
    HealthResponse,
    PromptSyncRequest,
    PromptSyncResponse,
    QueuedPrompt,
    UnhealthyResponse,
)
from config import Settings, get_settings

log = structlog.get_logger("server")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Invalid request, or graph rejected by ComfyUI (`node_errors` says why)",
        409: "Interrupted or deleted on ComfyUI by someone else",
        422: "Request body does not match the schema",
        500: "A node raised during execution (`node_errors` names it)",
        502: "ComfyUI answered something unexpected, or an output could not be read",
        503: "ComfyUI is unreachable (see Retry-After)",
        504: "Timeout: the prompt was cancelled on ComfyUI",
    }.items()
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the worker app; the ComfyUI connection opens and closes with its lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bridge = Bridge.create(settings)
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
    app.add_middleware(RequestLogMiddleware)
    _add_exception_handlers(app)
    _add_routes(app, settings)
    return app


def _bridge(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


def _add_routes(app: FastAPI, settings: Settings) -> None:
    @app.post(
        "/prompt_sync",
        response_model=PromptSyncResponse,
        responses=_ERRORS,
        summary="Run a workflow and answer with its outputs",
    )
    async def prompt_sync(
        body: PromptSyncRequest,
        request: Request,
        timeout: float | None = Query(
            None,
            gt=0,
            description="Seconds to wait (default DEFAULT_TIMEOUT, at most MAX_TIMEOUT).",
        ),
    ) -> PromptSyncResponse:
        wait = settings.default_timeout if timeout is None else timeout
        if wait > settings.max_timeout:
            raise InvalidRequestError(
                f"timeout {wait:g} exceeds the maximum of {settings.max_timeout:g} seconds"
            )
        if body.client_id:
            structlog.contextvars.bind_contextvars(caller_client_id=body.client_id)
        return await _bridge(request).handler.run(
            body, wait, disconnected=lambda: _until_disconnected(request)
        )

    @app.post(
        "/prompt",
        response_model=QueuedPrompt,
        responses={400: {"description": "ComfyUI's own validation body, or invalid JSON"}},
        summary="Queue a workflow (ComfyUI-compatible passthrough)",
    )
    async def queue_prompt(request: Request) -> Response:
        raw = await request.body()
        try:
            json.loads(raw)
        except ValueError:
            raise InvalidRequestError("request body is not valid JSON") from None
        answer = await _bridge(request).client.forward(
            "POST", "/prompt", body=raw, headers={"Content-Type": "application/json"}
        )
        return _passthrough(answer)

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": UnhealthyResponse}},
        summary="Is ComfyUI answering?",
    )
    async def health(request: Request) -> Any:
        bridge = _bridge(request)
        now = datetime.now(UTC).isoformat()
        try:
            running, pending = await bridge.client.queue_counts()
        except ComfyUIError as exc:
            return JSONResponse(
                UnhealthyResponse(error=exc.detail, timestamp=now).model_dump(), status_code=503
            )
        return HealthResponse(
            queue_running=running,
            queue_pending=pending,
            websocket_connected=bridge.client.connected,
            timestamp=now,
        )

    # ComfyUI-compatible read and control endpoints, passed through unchanged.
    for method, path, summary in (
        ("GET", "/prompt", "Queue remaining"),
        ("GET", "/queue", "Running and pending prompts"),
        ("POST", "/queue", "Delete pending prompts or clear the queue"),
        ("GET", "/history", "Prompt history"),
        ("GET", "/history/{prompt_id}", "History of one prompt"),
        ("POST", "/history", "Delete or clear history"),
        ("POST", "/interrupt", "Interrupt the running prompt"),
        ("GET", "/view", "An output, temp or input file"),
        ("POST", "/upload/image", "Upload an input image (multipart)"),
        ("GET", "/object_info", "Every node class"),
        ("GET", "/object_info/{node_class}", "One node class"),
        ("GET", "/system_stats", "ComfyUI system information"),
        ("GET", "/embeddings", "Embedding names"),
    ):
        app.add_api_route(
            path,
            _forwarder(method),
            methods=[method],
            summary=f"{summary} (ComfyUI passthrough)",
            name=f"comfyui_{method.lower()}_{path}",
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
    headers = {
        k: v
        for k, v in answer.headers.items()
        if k.lower() in ("content-disposition", "cache-control")
    }
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
        return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}"
            for err in exc.errors()
        )
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body("http_error", str(exc.detail)),
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


class RequestLogMiddleware:
    """One log line per request, with a request id bound for every line logged meanwhile."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_output)
    uvicorn.run(
        create_app(settings),
        host=settings.server_host,
        port=settings.server_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
