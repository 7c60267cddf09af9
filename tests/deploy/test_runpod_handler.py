"""The RunPod adapter: job input mapping, and the SDK's local test mode against the fake."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import os
from typing import Any

import pytest

from comfyui.exceptions import InvalidRequestError
from deploy.runpod_handler import RunPodAdapter
from tests import graphs
from tests.deploy.procs import DEPLOY_DIR, PYTHON, REPO_ROOT
from tests.fake_comfyui import FakeComfyUI
from tests.harness import worker_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def adapter(**overrides: Any) -> RunPodAdapter:
    return RunPodAdapter(worker_settings("127.0.0.1:9", **overrides), ready_timeout=5)


def test_workflow_maps_to_prompt_and_outputs_default_to_base64() -> None:
    request, timeout = adapter().parse(
        {"workflow": graphs.save(), "images": [], "output": {"convert": {"format": "webp"}}}
    )
    assert request.prompt == graphs.save()
    assert request.output is not None
    assert request.output.mode == "base64"
    assert request.output.convert is not None and request.output.convert.format == "webp"
    assert timeout == 60.0  # DEFAULT_TIMEOUT of the test settings


def test_explicit_modes_and_timeout_are_kept() -> None:
    request, timeout = adapter().parse(
        {"prompt": graphs.save(), "output": {"mode": "reference"}, "timeout": 7}
    )
    assert request.output is not None and request.output.mode == "reference"
    assert timeout == 7.0
    request, _ = adapter(output_mode="store").parse({"workflow": graphs.save()})
    assert request.output is None  # OUTPUT_MODE (store) applies


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not an object", "must be an object"),
        ({}, "prompt: Field required"),
        ({"workflow": {}}, "the graph has no nodes"),
        ({"workflow": graphs.save(), "prompt": graphs.save()}, "not both"),
        ({"workflow": graphs.save(), "timeout": 0}, "at least 1"),
        ({"workflow": graphs.save(), "timeout": "soon"}, "at least 1"),
        ({"workflow": graphs.save(), "timeout": 10_000}, "exceeds the maximum"),
    ],
)
def test_bad_input_is_refused(payload: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        adapter().parse(payload)


async def test_errors_become_runpod_error_outputs() -> None:
    answer = await adapter().handle({"id": "j1", "input": {"workflow": {}}})
    body = json.loads(answer["error"])
    assert body["error"] == "invalid_request"
    assert "the graph has no nodes" in body["detail"]


async def run_local(fake: FakeComfyUI, job_input: dict[str, Any]) -> tuple[int, str]:
    """`python deploy/runpod_handler.py --test_input ...`: one job through the SDK, then exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFY", "RUNPOD_"))}
    env.update(COMFYUI_SERVER_ADDRESS=fake.address, COMFYUI_WAIT_TIMEOUT="20")
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        str(DEPLOY_DIR / "runpod_handler.py"),
        "--test_input",
        json.dumps({"input": job_input}),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return await proc.wait(), output.decode(errors="replace")


def job_result(output: str) -> dict[str, Any]:
    """The `Job result: {...}` line the SDK prints in local test mode."""
    for line in output.splitlines():
        if "Job result: " in line:
            result: dict[str, Any] = ast.literal_eval(line.split("Job result: ", 1)[1])
            return result
    raise AssertionError(f"no job result in:\n{output}")


async def test_local_test_mode_runs_a_job_through_the_worker(fake: FakeComfyUI) -> None:
    code, output = await run_local(
        fake, {"workflow": graphs.preview_and_text("from runpod"), "timeout": 30}
    )
    assert code == 0, output
    result = job_result(output)["output"]
    assert result["status"] == "success"
    assert result["texts"] == [{"node_id": "3", "text": "from runpod"}]
    (image,) = result["files"]
    assert image["type"] == "temp"
    data = base64.b64decode(image["data"])
    assert data.startswith(PNG_MAGIC)
    assert data == (fake.temp_dir / image["filename"]).read_bytes()
    assert "Unclosed client session" not in output


async def test_local_test_mode_reports_a_failing_node_as_an_error(fake: FakeComfyUI) -> None:
    code, output = await run_local(fake, {"workflow": graphs.failing("boom from runpod")})
    assert code == 1, output
    line = next(line for line in output.splitlines() if "failed with error: " in line)
    body = json.loads(line.split("failed with error: ", 1)[1])
    assert body["error"] == "execution_error"
    assert "boom from runpod" in body["detail"]
    assert body["node_errors"]["2"]["class_type"] == "FailAlways"


async def test_unreachable_comfyui_fails_the_job_after_the_ready_timeout() -> None:
    runpod = RunPodAdapter(worker_settings("127.0.0.1:9"), ready_timeout=0.3)
    try:
        answer = await runpod.handle({"id": "j2", "input": {"workflow": graphs.save()}})
    finally:
        await runpod.close()
    body = json.loads(answer["error"])
    assert body["error"] == "comfyui_unavailable"
    assert "not ready" in body["detail"]


async def test_progress_is_reported_to_runpod_while_the_prompt_runs(
    fake: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpod.serverless

    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        runpod.serverless, "progress_update", lambda job, data: sent.append((job["id"], data))
    )
    monkeypatch.setattr("deploy.runpod_handler.PROGRESS_INTERVAL", 0.05)
    runpod_adapter = RunPodAdapter(
        worker_settings(fake.address), ready_timeout=10, report_progress=True
    )
    try:
        answer = await runpod_adapter.handle(
            {"id": "j3", "input": {"workflow": graphs.slow(0.6, steps=3, color=9)}}
        )
    finally:
        await runpod_adapter.close()
    assert answer["status"] == "success", answer
    assert {job_id for job_id, _ in sent} == {"j3"}
    running = [data for _, data in sent if data["state"] == "running"]
    assert any(data["node"] == "2" and data["max"] == 3 for data in running), sent
    assert all(data["prompt_id"] == answer["prompt_id"] for _, data in sent)
