"""HTTP and websocket connection to one ComfyUI backend.

One `aiohttp.ClientSession` and one persistent websocket (`/ws?clientId=<worker id>`) serve
every request of the worker. Websocket events go to a single callback; connection changes
to two more. Requests that are safe to repeat are retried with exponential backoff; a
prompt submission is retried only when the connection was refused, since then ComfyUI
cannot have queued it.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_chain,
    wait_exponential,
    wait_fixed,
    wait_random,
)

from comfyui.events import Event, parse_event
from comfyui.exceptions import ComfyUIConnectionError, ComfyUIProtocolError
from comfyui.tasks import running, stop_task
from config import Settings

log = structlog.get_logger(__name__)

EventCallback = Callable[[Event], None]
StateCallback = Callable[[], None]

# Errors after which repeating an idempotent request is safe and may help.
_TRANSIENT = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
# Errors that prove the request never reached ComfyUI.
_NOT_SENT = (aiohttp.ClientConnectorError,)

_WS_MAX_MESSAGE = 64 * 1024 * 1024
# Submissions sent at once. ComfyUI validates and queues one POST /prompt at a time, so more
# gain nothing; without a cap a burst of N sync requests opened N connections to ComfyUI
# that then idled in the pool while the requests waited (memory and file descriptors).
_SUBMIT_CONCURRENCY = 16
#: Connections to ComfyUI at most (the websocket is one of them). ComfyUI answers HTTP on
#: one event loop, so more connections queue there instead of here; unbounded, a burst of
#: 1,000 prompts finishing together (each waiter asks for its history and the size of its
#: file at once) left ~1,270 connections open in the pool afterwards. Every response is
#: read to its end before the worker waits on anything else (files are copied or encoded as
#: they stream), so a held connection is only ever held for one transfer.
_POOL_LIMIT = 64
#: Read-ahead for output files from /view. aiohttp's default (64 KiB) pauses the socket
#: every 128 KiB: a 50 MB file took ~90 ms to read on the benchmark machine, ~45 ms with this.
_VIEW_READ_BUFFER = 1024 * 1024


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Prompt ids in ComfyUI's queue; `pending` in execution order (by number)."""

    running: list[str]
    pending: list[str]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A ComfyUI answer passed through as it is."""

    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str]


class ComfyUIClient:
    """Talks to ComfyUI. Create, `await start()`, use, `await close()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = settings.comfyui_url
        self.client_id = client_id or uuid.uuid4().hex
        self._session = session
        self._owns_session = session is None
        self._ws_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._event_callbacks: list[EventCallback] = []
        self._connect_callbacks: list[StateCallback] = []
        self._disconnect_callbacks: list[StateCallback] = []
        self._reconnect_now = asyncio.Event()
        #: Websocket drops since start (for metrics).
        self.reconnects = 0
        #: Failed connection attempts since the websocket was last up.
        self.failed_connects = 0
        #: ComfyUI's `queue_remaining` (running + pending) from its last status broadcast.
        self.queue_remaining: int | None = None
        self._submissions = asyncio.Semaphore(_SUBMIT_CONCURRENCY)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and begin (re)connecting the websocket in the background."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.comfyui_request_timeout),
                connector=aiohttp.TCPConnector(limit=_POOL_LIMIT),
            )
        self._closing = False
        self._ws_task = asyncio.create_task(self._websocket_forever(), name="comfyui-ws")

    async def close(self) -> None:
        self._closing = True
        await stop_task(self._ws_task)
        self._ws_task = None
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ComfyUIClient.start() was not called")
        return self._session

    @property
    def alive(self) -> bool:
        """Is the websocket task still running (it only ends on close)?"""
        return running(self._ws_task)

    @property
    def connected(self) -> bool:
        """Is the websocket to ComfyUI up?"""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def reconnect_exhausted(self) -> bool:
        """Have the growing-delay attempts been spent (now retrying at the cap)?"""
        return self.failed_connects >= self.settings.comfy_reconnect_max_attempts

    def reconnect_soon(self) -> None:
        """Cut the current backoff delay short (ComfyUI was seen answering again)."""
        self._reconnect_now.set()

    def on_event(self, callback: EventCallback) -> None:
        self._event_callbacks.append(callback)

    def on_connect(self, callback: StateCallback) -> None:
        self._connect_callbacks.append(callback)

    def on_disconnect(self, callback: StateCallback) -> None:
        self._disconnect_callbacks.append(callback)

    # -- ComfyUI API -------------------------------------------------------------------

    async def queue_prompt(
        self,
        prompt: dict[str, Any],
        *,
        prompt_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> RawResponse:
        """POST /prompt with the worker's client id. Answers ComfyUI's reply unparsed."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        if extra_data:
            body["extra_data"] = extra_data
        async with self._submissions:
            return await self.request("POST", "/prompt", json=body, retry_on=_NOT_SENT)

    async def get_history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a prompt, or None while ComfyUI has none."""
        data = await self._get_json(f"/history/{prompt_id}")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    async def get_queue(self) -> QueueSnapshot:
        data = await self._get_json("/queue")
        if not isinstance(data, dict):
            raise ComfyUIProtocolError("ComfyUI /queue answered something that is not an object")
        return QueueSnapshot(
            running=_queue_ids(data.get("queue_running")),
            pending=_queue_ids(data.get("queue_pending")),
        )

    async def queue_counts(self) -> tuple[int, int]:
        snapshot = await self.get_queue()
        return len(snapshot.running), len(snapshot.pending)

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts (a no-op for running or unknown ones)."""
        await self._expect_ok("POST", "/queue", {"delete": prompt_ids})

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt a running prompt. ComfyUI 0.8 honours the id; the 2024 server
        interrupts whatever runs, so callers check first that `prompt_id` is running."""
        await self._expect_ok("POST", "/interrupt", {"prompt_id": prompt_id})

    async def upload_image(
        self,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        subfolder: str = "",
        folder_type: str = "input",
        overwrite: bool = False,
    ) -> RawResponse:
        """POST /upload/image with ComfyUI's multipart fields; ComfyUI's answer as it is."""

        def form() -> aiohttp.FormData:
            # A FormData is consumed by sending: build a new one for each attempt.
            body = aiohttp.FormData()
            body.add_field("image", data, filename=filename, content_type=content_type)
            body.add_field("subfolder", subfolder)
            body.add_field("type", folder_type)
            body.add_field("overwrite", "true" if overwrite else "false")
            return body

        url = self.base_url + "/upload/image"
        return await self._with_retry(lambda: self._raw("POST", url, data=form()), _NOT_SENT)

    async def node_exists(self, class_type: str) -> bool:
        data = await self._get_json(f"/object_info/{class_type}")
        return isinstance(data, dict) and class_type in data

    @asynccontextmanager
    async def open_view(
        self, filename: str, subfolder: str, folder_type: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Stream an output file from `/view`; the response is checked to be 200."""
        params = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        try:
            async with self.session.get(
                self.base_url + "/view", params=params, read_bufsize=_VIEW_READ_BUFFER
            ) as response:
                yield response
        except _TRANSIENT as exc:
            raise ComfyUIConnectionError(f"ComfyUI is unreachable: {_describe(exc)}") from exc

    async def forward(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        """Pass a request through to ComfyUI unchanged (ComfyUI-compatible endpoints)."""
        retry_on = _TRANSIENT if method in ("GET", "HEAD") else _NOT_SENT
        url = self.base_url + path + (f"?{query}" if query else "")
        return await self._with_retry(
            lambda: self._raw(method, url, data=body, headers=headers), retry_on
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        retry_on: tuple[type[BaseException], ...] = _TRANSIENT,
    ) -> RawResponse:
        url = self.base_url + path
        return await self._with_retry(lambda: self._raw(method, url, json=json), retry_on)

    # -- internals: HTTP ---------------------------------------------------------------

    async def _raw(self, method: str, url: str, **kwargs: Any) -> RawResponse:
        async with self.session.request(method, url, **kwargs) as response:
            body = await response.read()
            return RawResponse(
                status=response.status,
                body=body,
                content_type=response.headers.get("Content-Type"),
                headers=dict(response.headers),
            )

    async def _with_retry(
        self, call: Callable[[], Any], retry_on: tuple[type[BaseException], ...]
    ) -> RawResponse:
        settings = self.settings
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(retry_on),
                stop=stop_after_attempt(settings.comfyui_retry_attempts),
                wait=wait_exponential(
                    multiplier=settings.comfyui_retry_base_delay,
                    max=settings.comfyui_retry_max_delay,
                ),
                reraise=True,
            ):
                with attempt:
                    result: RawResponse = await call()
                    return result
        except _TRANSIENT as exc:
            raise ComfyUIConnectionError(f"ComfyUI is unreachable: {_describe(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_json(self, path: str) -> Any:
        response = await self.request("GET", path)
        if response.status != 200:
            raise ComfyUIProtocolError(f"ComfyUI GET {path} answered {response.status}")
        try:
            return jsonlib.loads(response.body)
        except ValueError as exc:
            raise ComfyUIProtocolError(f"ComfyUI GET {path} answered invalid JSON") from exc

    async def _expect_ok(self, method: str, path: str, json: Any) -> None:
        response = await self.request(method, path, json=json, retry_on=_TRANSIENT)
        if response.status != 200:
            raise ComfyUIProtocolError(f"ComfyUI {method} {path} answered {response.status}")

    # -- internals: websocket ----------------------------------------------------------

    async def _websocket_forever(self) -> None:
        """Keep one websocket open; reconnect with exponential backoff whenever it drops."""
        url = f"{self.settings.comfyui_ws_url}?clientId={self.client_id}"
        while not self._closing:
            ws = await self._connect(url)
            self._set_connected(True)
            try:
                await self._read(ws)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.warning("comfyui_ws_error", error=_describe(exc))
            finally:
                await ws.close()
                self._set_connected(False)

    async def _connect(self, url: str) -> aiohttp.ClientWebSocketResponse:
        settings = self.settings
        base, cap = settings.comfy_reconnect_base_delay_s, settings.comfy_reconnect_max_delay_s
        # Growing delays for the first attempts, then steady attempts at the cap.
        growing = [wait_exponential(multiplier=base, max=cap)] * (
            settings.comfy_reconnect_max_attempts - 1
        )
        self._reconnect_now.clear()
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((aiohttp.ClientError, asyncio.TimeoutError, OSError)),
            stop=stop_never,
            wait=wait_chain(*growing, wait_fixed(cap)) + wait_random(0, base / 2),
            sleep=self._backoff_sleep,
            before_sleep=self._connect_failed,
        ):
            with attempt:
                return await self.session.ws_connect(
                    url,
                    heartbeat=settings.comfyui_ws_heartbeat,
                    max_msg_size=_WS_MAX_MESSAGE,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    autoping=True,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect_failed(self, state: RetryCallState) -> None:
        self.failed_connects += 1
        log.info(
            "comfyui_ws_connect_failed",
            attempt=state.attempt_number,
            next_delay_s=round(state.upcoming_sleep, 2),
            error=_describe(state.outcome.exception()) if state.outcome else None,
        )

    async def _backoff_sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._reconnect_now.wait(), seconds)
        except TimeoutError:
            pass
        self._reconnect_now.clear()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                event = parse_event(message.data)
                if event is not None:
                    if event.type == "status":
                        self._note_status(event)
                    for callback in self._event_callbacks:
                        callback(event)
            elif message.type is aiohttp.WSMsgType.ERROR:
                raise aiohttp.ClientConnectionError(str(ws.exception()))
            # Binary frames are live previews: not needed to answer a request.

    def _note_status(self, event: Event) -> None:
        exec_info = (event.data.get("status") or {}).get("exec_info") or {}
        remaining = exec_info.get("queue_remaining")
        if isinstance(remaining, int):
            self.queue_remaining = remaining

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected.is_set():
            return
        if connected:
            self._connected.set()
            self.failed_connects = 0
            log.info("comfyui_ws_connected", url=self.base_url, client_id=self.client_id)
            callbacks = self._connect_callbacks
        else:
            self._connected.clear()
            if self._closing:
                return
            self.reconnects += 1
            log.warning("comfyui_ws_disconnected", url=self.base_url)
            callbacks = self._disconnect_callbacks
        for callback in callbacks:
            callback()


def _queue_ids(items: Any) -> list[str]:
    """Prompt ids of /queue items `[number, prompt_id, ...]`, sorted by number."""
    if not isinstance(items, list):
        return []
    rows = [i for i in items if isinstance(i, list) and len(i) >= 2]
    rows.sort(key=lambda item: item[0] if isinstance(item[0], (int, float)) else 0)
    return [str(item[1]) for item in rows]


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
