"""What every scenario shares: child processes, their memory and CPU, percentiles, the machine.

The worker (`python server.py`) and the fake ComfyUI (`python -m benchmarks.fake_server`) each
run as their own process, so neither shares an event loop with the load generator (this
process) and the worker's RSS is its own. Children get SIGTERM if this process dies.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def now_ns() -> int:
    """CLOCK_MONOTONIC, the clock the fake stamps its events with (same on every process)."""
    return time.monotonic_ns()


def ms(ns: float) -> float:
    return ns / 1e6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A child process of the benchmark, its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started_ns: int
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def spawn(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path, url: str) -> Child:
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        started = now_ns()
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    return Child(name, process, log, started, url)


def spawn_fake(log_dir: Path, *, generation: str = "0.8", port: int | None = None) -> Child:
    port = port or free_port()
    root = log_dir / f"fake-{port}"
    argv = [sys.executable, "-m", "benchmarks.fake_server", "--port", str(port)]
    argv += ["--root", str(root), "--generation", generation]
    return spawn(f"fake-{port}", argv, {}, log_dir, f"http://127.0.0.1:{port}")


def spawn_worker(log_dir: Path, comfyui: str, *, port: int | None = None, **settings: Any) -> Child:
    """`python server.py` on a loopback port; `settings` become environment variables."""
    port = port or free_port()
    env = {
        "COMFYUI_SERVER_ADDRESS": comfyui.removeprefix("http://"),
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **{key.upper(): str(value) for key, value in settings.items()},
    }
    return spawn(
        f"worker-{port}", [sys.executable, "server.py"], env, log_dir, f"http://127.0.0.1:{port}"
    )


async def wait_http(child: Child, path: str, *, timeout: float = 60.0, every: float = 0.005) -> int:
    """Poll `path` until it answers 200; the monotonic ns of that answer."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
            try:
                async with http.get(child.url + path) as response:
                    if response.status == 200:
                        return now_ns()
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(every)
    raise TimeoutError(f"{child.name} did not answer {path} within {timeout} s:\n{child.tail()}")


# -- memory and CPU of a process --------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def rss(pid: int) -> int:
    """Resident set size in bytes."""
    return _status(pid)["VmRSS"]


def peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) in bytes."""
    return _status(pid)["VmHWM"]


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5); False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tcp_connections(pid: int, remote_port: int) -> int:
    """Established TCP connections of the process to 127.0.0.1:`remote_port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            remote, state, inode = cols[2], cols[3], cols[9]
            port = int(remote.rsplit(":", 1)[1], 16)
            if state == "01" and inode in inodes and port == remote_port:
                count += 1
    return count


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Summary:
    """Percentiles of a sample (milliseconds unless said otherwise)."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            mean=sum(values) / len(values),
            min=min(values),
            max=max(values),
        )

    def as_dict(self, digits: int = 3) -> dict[str, Any]:
        return {
            "n": self.n,
            **{
                key: round(getattr(self, key), digits)
                for key in ("p50", "p90", "p99", "mean", "min", "max")
            },
        }


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions: dict[str, str | None] = {}
    for package in ("aiohttp", "fastapi", "uvicorn", "pydantic", "starlette"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "packages": versions,
    }
