"""The three ways of running a graph that the benchmarks compare.

* `DirectClient`: a well-behaved client of ComfyUI itself: one websocket for all its prompts,
  `POST /prompt`, wait for the prompt's final event (`executing` with `node: null`, sent once
  history is written), `GET /history/{id}`. The least any bridge must do.
* `PollingClient`: the seed's loop: `POST /prompt`, then `GET /history/{id}` at once and every
  1 s until the entry is there. No websocket.
* `WorkerClient`: `POST /prompt_sync` to the worker.

Each run answers a `Run`: its prompt id and when it started and ended (monotonic ns, the
clock the fake stamps its final event with).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from benchmarks.common import now_ns

Graph = dict[str, dict[str, Any]]

#: EmptyImage -> ImageInvert -> SaveImage, 64x64: model-free, in ComfyUI's core node set.
SMALL_GRAPH: Graph = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
}


def timed_graph(seconds: float, color: int) -> Graph:
    """EmptyImage -> SleepWithProgress (`seconds`, one step) -> SaveImage: a job that takes
    time. A different `color` is a different graph, so ComfyUI's cache does not answer it."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "SleepWithProgress",
            "inputs": {"image": ["1", 0], "seconds": round(seconds, 3), "steps": 1},
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "bench_timed"},
        },
    }


def blob_graph(megabytes: float) -> Graph:
    """One `BenchBlob` node (benchmarks/fake_server.py): an output of about that size."""
    return {"1": {"class_type": "BenchBlob", "inputs": {"megabytes": megabytes}}}


@dataclass(frozen=True, slots=True)
class Run:
    prompt_id: str
    started_ns: int
    ended_ns: int
    size: int = 0  # bytes of the answer (and of the fetched file, for references)

    @property
    def elapsed_ms(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e6


class RunFailed(Exception):
    pass


def session(limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=600),
    )


async def queue_prompt(
    http: aiohttp.ClientSession, comfyui_url: str, graph: Graph, client_id: str
) -> str:
    """POST /prompt to ComfyUI as `client_id`; the prompt id it answers."""
    body = {"prompt": graph, "client_id": client_id}
    async with http.post(comfyui_url + "/prompt", json=body) as response:
        answer = await response.json()
        if response.status != 200:
            raise RunFailed(f"POST /prompt answered {response.status}: {answer}")
    return str(answer["prompt_id"])


class DirectClient:
    """A direct websocket client of ComfyUI. `await start()`, `await run(graph)`, `close()`."""

    def __init__(self, http: aiohttp.ClientSession, comfyui_url: str) -> None:
        self.http = http
        self.url = comfyui_url
        self.client_id = uuid.uuid4().hex
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        # prompt id -> when its final event arrived (or the error it ended with). Events may
        # come before POST /prompt answers, so whoever comes first creates the future.
        self._done: dict[str, asyncio.Future[int]] = {}

    async def start(self) -> None:
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self._ws = await self.http.ws_connect(ws_url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    def _future(self, prompt_id: str) -> asyncio.Future[int]:
        future = self._done.get(prompt_id)
        if future is None:
            future = self._done[prompt_id] = asyncio.get_running_loop().create_future()
        return future

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            kind, data = event.get("type"), event.get("data") or {}
            prompt_id = data.get("prompt_id")
            if not isinstance(prompt_id, str):
                continue
            if kind == "executing" and data.get("node") is None:
                future = self._future(prompt_id)
                if not future.done():
                    future.set_result(now_ns())
            elif kind in ("execution_error", "execution_interrupted"):
                future = self._future(prompt_id)
                if not future.done():
                    future.set_exception(RunFailed(f"{kind}: {data}"))

    async def run(self, graph: Graph, timeout: float = 60.0) -> Run:
        started = now_ns()
        prompt_id = await queue_prompt(self.http, self.url, graph, self.client_id)
        try:
            await asyncio.wait_for(self._future(prompt_id), timeout)
        finally:
            self._done.pop(prompt_id, None)
        async with self.http.get(f"{self.url}/history/{prompt_id}") as response:
            history = await response.json()
        if prompt_id not in history:
            raise RunFailed(f"no history for {prompt_id}")
        return Run(prompt_id, started, now_ns())


class PollingClient:
    """The seed's completion loop: check `/history/{id}`, sleep `interval`, check again."""

    def __init__(self, http: aiohttp.ClientSession, comfyui_url: str, interval: float = 1.0):
        self.http = http
        self.url = comfyui_url
        self.interval = interval
        self.client_id = uuid.uuid4().hex

    async def run(self, graph: Graph, timeout: float = 60.0) -> Run:
        started = now_ns()
        prompt_id = await queue_prompt(self.http, self.url, graph, self.client_id)
        for _ in range(int(timeout / self.interval) + 1):
            async with self.http.get(f"{self.url}/history/{prompt_id}") as response:
                history = await response.json()
            if prompt_id in history:
                return Run(prompt_id, started, now_ns())
            await asyncio.sleep(self.interval)
        raise RunFailed(f"{prompt_id} not in history after {timeout} s")


class WorkerClient:
    """`POST /prompt_sync` to the worker; the whole answer is read before the clock stops."""

    def __init__(self, http: aiohttp.ClientSession, worker_url: str) -> None:
        self.http = http
        self.url = worker_url

    async def run(self, graph: Graph, timeout: float = 600.0, **body: Any) -> Run:
        started = now_ns()
        payload = {"prompt": graph, **body}
        async with self.http.post(
            self.url + "/prompt_sync", json=payload, params={"timeout": str(timeout)}
        ) as response:
            raw = await response.read()
            ended = now_ns()
            if response.status != 200:
                raise RunFailed(f"/prompt_sync answered {response.status}: {raw[:500]!r}")
        prompt_id = _prompt_id(raw)
        return Run(prompt_id, started, ended, len(raw))

    async def run_and_fetch(self, graph: Graph, timeout: float = 600.0) -> tuple[Run, Run]:
        """Reference mode: the answer, then every file's bytes through the worker's `url`.
        Answers (the answer alone, answer + files)."""
        started = now_ns()
        async with self.http.post(
            self.url + "/prompt_sync",
            json={"prompt": graph, "output": {"mode": "reference"}},
            params={"timeout": str(timeout)},
        ) as response:
            answer = await response.json()
            answered = now_ns()
            if response.status != 200:
                raise RunFailed(f"/prompt_sync answered {response.status}: {answer}")
        size = 0
        for item in answer["files"]:
            async with self.http.get(item["url"]) as response:
                if response.status != 200:
                    raise RunFailed(f"GET {item['url']} answered {response.status}")
                async for chunk in response.content.iter_chunked(1 << 20):
                    size += len(chunk)
        ended = now_ns()
        prompt_id = str(answer["prompt_id"])
        return Run(prompt_id, started, answered), Run(prompt_id, started, ended, size)


def _prompt_id(raw: bytes) -> str:
    """The prompt id of an answer, without parsing megabytes of base64 (it comes first)."""
    head = raw[:200].decode("ascii", "replace")
    marker = '"prompt_id":"'
    start = head.find(marker)
    if start < 0:
        return str(json.loads(raw)["prompt_id"])
    start += len(marker)
    return head[start : head.index('"', start)]


def _lean_request(
    url: str, method: str, body: bytes | None, buffer: bytearray
) -> tuple[int, memoryview]:
    """One HTTP/1.1 request on a new connection; the body read straight into `buffer`
    (grown to the announced length if needed) and returned as a view of it. Blocking: run
    it in a thread."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        length = int(response.getheader("Content-Length") or 0)
        if len(buffer) < length:
            buffer.extend(bytes(length - len(buffer)))
        view = memoryview(buffer)[:length]
        received = 0
        while received < length:
            count = response.readinto(view[received:])
            if not count:
                raise RunFailed(f"{url}: connection closed after {received} of {length} bytes")
            received += count
        return response.status, view
    finally:
        connection.close()


class LeanClient:
    """A caller that costs little when answers are large: stdlib http.client reading into
    one buffer kept across requests. Measured on the benchmark machine for a 67 MB answer:
    aiohttp's read() manages ~460 MB/s, and a fresh 67 MB buffer per request costs more than
    the transfer (its pages are faulted in as they are written); into a reused buffer the
    read takes about as long as curl's into /dev/null (15-20 ms)."""

    def __init__(self, worker_url: str) -> None:
        self.url = worker_url
        self.buffer = bytearray()

    async def run(self, graph: Graph, mode: str, timeout: float = 600.0) -> tuple[Run, Run]:
        """`/prompt_sync` in `mode`; for reference mode every file is then read through its
        worker `url`. Answers (the answer alone, answer + files)."""
        body = json.dumps({"prompt": graph, "output": {"mode": mode}}).encode()
        url = f"{self.url}/prompt_sync?timeout={timeout:g}"
        started = now_ns()
        status, answer = await asyncio.to_thread(_lean_request, url, "POST", body, self.buffer)
        answered = now_ns()
        if status != 200:
            raise RunFailed(f"/prompt_sync answered {status}: {bytes(answer[:500])!r}")
        prompt_id = _prompt_id(bytes(answer[:200]))
        size = answer_size = len(answer)
        if mode == "reference":
            files = json.loads(bytes(answer))["files"]
            answer.release()  # the buffer may grow for the files
            size = 0
            for item in files:
                status, data = await asyncio.to_thread(
                    _lean_request, item["url"], "GET", None, self.buffer
                )
                if status != 200:
                    raise RunFailed(f"GET {item['url']} answered {status}")
                size += len(data)
                data.release()
        ended = now_ns()
        return Run(prompt_id, started, answered, answer_size), Run(prompt_id, started, ended, size)
