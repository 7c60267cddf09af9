"""scripts/run.sh with no ComfyUI running: it starts the real CPU ComfyUI beside the worker.

End-to-end (the registry-installed ComfyUI of scripts/comfyui-test-server.sh): skipped when
that server is not installed, unless E2E or CI is set (then it is installed first).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.deploy.procs import REPO_ROOT, answers, free_port, process_group, wait_for
from tests.e2e.real_comfyui import installed

pytestmark = pytest.mark.e2e


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@pytest.mark.skipif(
    not (_flag("E2E") or _flag("CI") or installed()),
    reason="real ComfyUI is not installed (scripts/comfyui-test-server.sh install, or E2E=1)",
)
def test_run_sh_starts_comfyui_beside_the_worker_and_prints_a_working_curl(
    tmp_path: Path,
) -> None:
    comfy_port, worker_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMFY", "SERVER_", "WORKER_", "SUPERVISOR_", "API_KEYS"))
    }
    if "COMFYUI_TEST_HOME" in os.environ:
        env["COMFYUI_TEST_HOME"] = os.environ["COMFYUI_TEST_HOME"]
    env.update(
        COMFYUI_SERVER_ADDRESS=f"127.0.0.1:{comfy_port}",
        SERVER_HOST="127.0.0.1",
        SERVER_PORT=str(worker_port),
        SUPERVISOR_RUN_DIR=str(tmp_path / "run"),
        SHUTDOWN_GRACE_S="5",
    )
    log = tmp_path / "run.log"
    worker = f"http://127.0.0.1:{worker_port}"
    with process_group(["bash", str(REPO_ROOT / "scripts" / "run.sh")], env=env, log=log) as proc:
        # The first run may install the server (about a minute).
        wait_for(lambda: "curl -s -X POST" in log.read_text(), 900, "the ready banner", log)
        output = log.read_text()
        assert "starting a local CPU ComfyUI beside the worker" in output
        assert f"The worker is ready at {worker}" in output
        assert answers(f"http://127.0.0.1:{comfy_port}/system_stats")
        (curl,) = re.findall(r"^curl .*$", output, re.M)
        run = subprocess.run(
            ["bash", "-c", curl], capture_output=True, text=True, timeout=120, check=False
        )
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout)
        assert answer["status"] == "success", answer
        assert answer["images"][0]["data"]
        assert httpx.get(f"{worker}/ready", timeout=5).status_code == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped: worker (exit status 0)" in log.read_text()
        assert not answers(f"http://127.0.0.1:{comfy_port}/system_stats")
