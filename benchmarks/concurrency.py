"""Many `/prompt_sync` requests waiting at once on a ComfyUI that completes them after a delay.

For each level N: the fake's queue is held, N requests are sent at once, and once all N
prompts are pending on the fake (so N requests wait in the worker) the worker's RSS, its
websockets and its TCP connections to ComfyUI are read. After `hold_s` the queue is
released; the fake runs the prompts one after another (as ComfyUI does) and the answers
are timed. RSS per waiter is (RSS while N wait - RSS before) / N.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.clients import SMALL_GRAPH, Run, RunFailed, WorkerClient
from benchmarks.common import (
    Child,
    Summary,
    cpu_seconds,
    free_port,
    ms,
    now_ns,
    rss,
    spawn,
    tcp_connections,
    wait_http,
)
from benchmarks.latency import completion_ms, fetch_final_sent


async def _stats(http: aiohttp.ClientSession, fake_url: str) -> dict[str, int]:
    async with http.get(fake_url + "/bench/stats") as response:
        data: dict[str, int] = await response.json()
        return data


async def _hold(http: aiohttp.ClientSession, fake_url: str, hold: bool) -> None:
    async with http.post(fake_url + "/bench/hold", json={"hold": hold}) as response:
        response.raise_for_status()


async def level(
    worker: Child, fake: Child, fake_port: int, waiters: int, *, hold_s: float = 1.0
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        client = WorkerClient(http, worker.url)
        await client.run(SMALL_GRAPH)  # warm (and the graph cached on the fake)
        await fetch_final_sent(http, fake.url)
        await asyncio.sleep(0.3)
        before = rss(worker.pid)
        await _hold(http, fake.url, True)
        tasks = [asyncio.create_task(client.run(SMALL_GRAPH)) for _ in range(waiters)]
        deadline = time.monotonic() + 120
        while (await _stats(http, fake.url))["pending"] < waiters:
            if time.monotonic() > deadline or any(t.done() for t in tasks):
                await _hold(http, fake.url, False)
                failed = [t for t in tasks if t.done() and t.exception() is not None]
                raise RunFailed(f"{len(failed)} requests failed before all were waiting")
            await asyncio.sleep(0.02)
        submitted = now_ns()
        await asyncio.sleep(hold_s)
        waiting = rss(worker.pid)
        stats = await _stats(http, fake.url)
        connections = tcp_connections(worker.pid, fake_port)
        cpu_before = cpu_seconds(worker.pid)
        released = now_ns()
        await _hold(http, fake.url, False)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        drained = now_ns()
        cpu = cpu_seconds(worker.pid) - cpu_before
        runs = [r for r in results if isinstance(r, Run)]
        errors = [repr(r) for r in results if not isinstance(r, Run)]
        final_sent = await fetch_final_sent(http, fake.url)
        after_connections = tcp_connections(worker.pid, fake_port)
    drain_s = (drained - released) / 1e9
    return {
        "waiters": waiters,
        "ok": len(runs),
        "errors": len(errors),
        "error_examples": errors[:3],
        "websockets_to_comfyui": stats["websockets"],
        "tcp_connections_to_comfyui_while_waiting": connections,
        "tcp_connections_to_comfyui_after": after_connections,
        "rss_before_mb": round(before / 1e6, 2),
        "rss_waiting_mb": round(waiting / 1e6, 2),
        "rss_per_waiter_kb": round((waiting - before) / waiters / 1e3, 2),
        "submit_s": round((submitted - min(r.started_ns for r in runs)) / 1e9, 3) if runs else None,
        "drain_s": round(drain_s, 3),
        "throughput_per_s": round(len(runs) / drain_s, 1) if drain_s > 0 else None,
        "worker_cpu_ms_per_request": round(cpu * 1000 / max(1, len(runs)), 3),
        # From the release of the queue: how long each answer waited for its turn, plus.
        "answer_after_release_ms": Summary.of([ms(r.ended_ns - released) for r in runs]).as_dict(),
        "completion_ms": Summary.of(completion_ms(runs, final_sent)).as_dict(),
    }


async def run_levels(
    worker: Child, fake: Child, fake_port: int, levels: list[int], *, hold_s: float = 1.0
) -> list[dict[str, Any]]:
    return [await level(worker, fake, fake_port, n, hold_s=hold_s) for n in levels]


#: Floor configurations: (row name, server kind, load client, environment, tracemalloc).
#: `aiohttp` is the benchmark's own client (one connection per request, as a waiting
#: HTTP/1.1 request needs); `streams` writes the same bytes over plain asyncio streams;
#: `idle` opens the connections and sends nothing (the cost of a connection alone).
FLOOR_CONFIGS: tuple[tuple[str, str, str, dict[str, str], bool], ...] = (
    ("raw_idle_connection", "raw", "idle", {}, False),
    ("raw_protocol", "raw", "aiohttp", {}, False),
    ("uvicorn_bare_asgi", "asgi", "aiohttp", {}, False),
    ("fastapi", "fastapi", "aiohttp", {}, False),
    ("fastapi_streams_client", "fastapi", "streams", {}, False),
    ("fastapi_malloc_arena_max_1", "fastapi", "aiohttp", {"MALLOC_ARENA_MAX": "1"}, False),
    ("raw_protocol_traced", "raw", "aiohttp", {}, True),
    ("uvicorn_bare_asgi_traced", "asgi", "aiohttp", {}, True),
    ("fastapi_traced", "fastapi", "aiohttp", {}, True),
)


async def _count(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/count") as response:
        data: dict[str, Any] = await response.json()
        return data


async def _streams_request(port: int, body: bytes) -> None:
    """POST /wait over a plain asyncio stream; return once the answer has come."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /wait HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def floor_once(
    log_dir: Path,
    waiters: int,
    *,
    kind: str = "fastapi",
    client: str = "aiohttp",
    env: dict[str, str] | None = None,
    trace: bool = False,
) -> dict[str, Any]:
    """One process of `benchmarks.floor_app` holding `waiters` requests (or connections):
    (RSS while they wait - RSS before) / N, and the same for tracemalloc's bytes."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.floor_app", "--kind", kind, "--port", str(port)]
    app = spawn(
        f"floor-{port}",
        [*argv, *(["--trace"] if trace else [])],
        env or {},
        log_dir,
        f"http://127.0.0.1:{port}",
    )
    body = json.dumps({"prompt": SMALL_GRAPH}).encode()
    held: list[asyncio.StreamWriter] = []
    try:
        await wait_http(app, "/count")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.sleep(0.3)
            before, traced_before = rss(app.pid), (await _count(http, app.url))["traced"]

            async def one() -> None:
                if client == "streams":
                    await _streams_request(port, body)
                    return
                async with http.post(app.url + "/wait", data=body, headers=_JSON) as response:
                    await response.read()

            tasks = []
            if client == "idle":
                for _ in range(waiters):
                    held.append((await asyncio.open_connection("127.0.0.1", port))[1])
            else:
                tasks = [asyncio.create_task(one()) for _ in range(waiters)]
            key = "connections" if client == "idle" else "waiting"
            deadline = time.monotonic() + 120
            # The /count connection of the session is one of the raw server's connections.
            while (await _count(http, app.url))[key] < waiters + (key == "connections"):
                if time.monotonic() > deadline:
                    raise RunFailed("the floor app did not get every request")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            waiting, traced = rss(app.pid), (await _count(http, app.url))["traced"]
            async with http.post(app.url + "/release") as response:
                response.raise_for_status()
            await asyncio.gather(*tasks)
    finally:
        for writer in held:
            writer.close()
        app.stop()
    return {
        "rss_idle_mb": round(before / 1e6, 2),
        "rss_per_waiter_kb": round((waiting - before) / waiters / 1e3, 2),
        "traced_per_waiter_kb": (
            round((traced - traced_before) / waiters / 1e3, 2) if trace else None
        ),
    }


_JSON = {"Content-Type": "application/json"}


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": values,
    }


async def floor(log_dir: Path, waiters: int, *, repeats: int = 3) -> dict[str, Any]:
    """RSS per waiting request, layer by layer, under the same method: a raw protocol,
    uvicorn with a bare ASGI app, FastAPI (also with another client and one malloc arena),
    and bytes traced by tracemalloc. `rss_per_waiter_kb` stays the FastAPI median."""
    rows: dict[str, Any] = {}
    for name, kind, client, env, trace in FLOOR_CONFIGS:
        runs = [
            await floor_once(log_dir, waiters, kind=kind, client=client, env=env, trace=trace)
            for _ in range(repeats)
        ]
        metric = "traced_per_waiter_kb" if trace else "rss_per_waiter_kb"
        rows[name] = {
            "kind": kind,
            "client": client,
            "env": env,
            "measure": "tracemalloc" if trace else "rss",
            "per_waiter_kb": _spread([run[metric] for run in runs]),
            "rss_idle_mb": statistics.median(run["rss_idle_mb"] for run in runs),
        }
    return {
        "waiters": waiters,
        "repeats": repeats,
        "rss_idle_mb": rows["fastapi"]["rss_idle_mb"],
        "rss_per_waiter_kb": rows["fastapi"]["per_waiter_kb"]["median"],
        "breakdown": rows,
    }
