"""The real supervisord with deploy/supervisord.conf, started by deploy/entrypoint.sh.

A fake ComfyUI (``python -m tests.fake_comfyui``, its own process) stands in for ComfyUI and
the real worker (server.py) runs beside it, both on loopback ports. A request goes through,
ComfyUI is killed and supervisord restarts it, the worker recovers, and SIGTERM stops
everything cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx

from tests import graphs
from tests.deploy.procs import (
    DEPLOY_DIR,
    PYTHON,
    REPO_ROOT,
    answers,
    descendants,
    free_port,
    process_group,
    wait_for,
)


def supervisor_env(tmp_path: Path, comfy_port: int, worker_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFY", "SERVER_"))}
    env.update(
        WORKER_PYTHON=PYTHON,
        WORKER_DIR=str(REPO_ROOT),
        WORKER_MODE="http",
        COMFYUI_DIR=str(REPO_ROOT),
        COMFYUI_PORT=str(comfy_port),
        COMFYUI_COMMAND=(
            f"{PYTHON} -m tests.fake_comfyui --port {comfy_port} --root {tmp_path / 'comfy'}"
        ),
        SERVER_HOST="127.0.0.1",
        SERVER_PORT=str(worker_port),
        SUPERVISOR_RUN_DIR=str(tmp_path / "run"),
        SHUTDOWN_GRACE_S="5",
        COMFYUI_WAIT_TIMEOUT="30",
        # Recover quickly once ComfyUI is back.
        COMFY_RECONNECT_BASE_DELAY_S="0.1",
        COMFY_RECONNECT_MAX_DELAY_S="0.5",
        COMFYUI_UNREACHABLE_GRACE="1",
        LOG_LEVEL="INFO",
    )
    return env


def program_pid(env: dict[str, str], name: str) -> int:
    """The pid supervisord reports for a program (0 when it is not running)."""
    conf = str(DEPLOY_DIR / "supervisord.conf")
    answer = subprocess.run(
        [PYTHON, "-m", "supervisor.supervisorctl", "-c", conf, "pid", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    text = answer.stdout.strip()
    return int(text) if text.isdigit() else 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_supervisord_runs_restarts_and_stops_both(tmp_path: Path) -> None:
    comfy_port, worker_port = free_port(), free_port()
    env = supervisor_env(tmp_path, comfy_port, worker_port)
    worker = f"http://127.0.0.1:{worker_port}"
    comfy = f"http://127.0.0.1:{comfy_port}"
    log = tmp_path / "supervisord.log"

    with process_group(["bash", str(DEPLOY_DIR / "entrypoint.sh")], env=env, log=log) as proc:
        wait_for(lambda: answers(f"{worker}/ready"), 60, "the worker to be ready", log)
        answer = httpx.post(
            f"{worker}/prompt_sync", json={"prompt": graphs.save("sv", color=3)}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["files"][0]["filename"].startswith("sv_")

        # ComfyUI dies: supervisord starts a new one, the worker finds it again.
        first = program_pid(env, "comfyui")
        worker_pid = program_pid(env, "worker")
        assert first and worker_pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not answers(f"{comfy}/system_stats"), 10, "ComfyUI to go away", log)
        wait_for(
            lambda: program_pid(env, "comfyui") not in (0, first),
            30,
            "supervisord to restart ComfyUI",
            log,
        )
        wait_for(lambda: answers(f"{worker}/ready"), 30, "the worker to be ready again", log)
        answer = httpx.post(
            f"{worker}/prompt_sync", json={"prompt": graphs.save("sv2", color=4)}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert program_pid(env, "worker") == worker_pid, "the worker itself kept running"

        # SIGTERM: the worker drains and exits 0, ComfyUI stops, supervisord exits 0.
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not [pid for pid in children if alive(pid)], "a program outlived supervisord"
        output = log.read_text(errors="replace")
        assert "stopped: worker (exit status 0)" in output
        assert "exited: comfyui (terminated by SIGKILL; not expected)" in output
        assert not answers(f"{worker}/health")
