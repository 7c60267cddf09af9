"""Helpers for the deployment tests: loopback ports, waiting on HTTP, process groups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
PYTHON = sys.executable


def free_port() -> int:
    """A port nobody listens on right now (bound and released on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll `check` until it is true; fail with `what` (and the log's tail) at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n--- log tail ---\n{tail}")
        time.sleep(0.1)


def answers(url: str, status: int = 200) -> bool:
    """True when GET `url` answers `status`."""
    try:
        return httpx.get(url, timeout=2).status_code == status
    except httpx.HTTPError:
        return False


def group_alive(pgid: int) -> bool:
    """Does any process of the group still run?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - not ours
        return True
    return True


@contextmanager
def process_group(
    argv: list[str], *, env: Mapping[str, str], log: Path, cwd: Path = REPO_ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` as the leader of a new process group, output appended to `log`.

    Whatever happens in the block, the process and all its descendants are gone afterwards
    (SIGKILL to each of their process groups; supervisord gives each program its own), so a
    failing test leaves no server behind.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=10)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`, its descendants and their process groups (found before any dies)."""
    pids = [pid, *descendants(pid)]
    groups = set()
    for each in pids:
        try:
            groups.add(os.getpgid(each))
        except ProcessLookupError:
            pass
    for group in groups:
        if group != os.getpgid(0):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for each in pids:
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
