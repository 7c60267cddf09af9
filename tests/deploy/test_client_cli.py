"""client.py end to end: the real CLI (a subprocess) against the worker and the fake ComfyUI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests import graphs
from tests.deploy.procs import PYTHON, REPO_ROOT
from tests.fake_comfyui import FakeComfyUI, png_bytes
from tests.harness import Worker, running_worker, worker_settings


@pytest.fixture
async def worker(fake: FakeComfyUI) -> AsyncIterator[Worker]:
    async with running_worker(worker_settings(fake.address)) as running:
        yield running


async def client(*args: str) -> tuple[int, str, str]:
    """Run `python client.py ARGS...`; its exit status, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        str(REPO_ROOT / "client.py"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return await proc.wait(), out.decode(), err.decode()


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


async def test_progress_and_downloaded_outputs(
    worker: Worker, fake: FakeComfyUI, tmp_path: Path
) -> None:
    workflow = write(tmp_path / "slow.json", graphs.slow(0.8, steps=4, prefix="cli", color=21))
    out = tmp_path / "out"
    code, stdout, stderr = await client(
        str(workflow), "--url", worker.url, "--out", str(out), "--timeout", "30"
    )
    assert code == 0, stderr
    assert "queued as " in stderr
    assert "running node 2 (SleepWithProgress)" in stderr
    assert re.search(r"^progress [1-4]/4 node 2 \(SleepWithProgress\)$", stderr, re.M), stderr
    assert "node 3 (SaveImage)" not in stderr.split("running node 3 (SaveImage)")[1]
    (saved,) = (Path(line) for line in stdout.splitlines())
    assert saved.parent == out and saved.name.startswith("cli_")
    assert saved.read_bytes() == (fake.output_dir / saved.name).read_bytes()
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "success"
    assert result["files"][0]["url"].startswith(worker.url)


async def test_base64_body_file_with_conversion_and_text(worker: Worker, tmp_path: Path) -> None:
    body = {
        "prompt": graphs.preview_and_text("hello from the client"),
        "output": {"convert": {"format": "webp", "quality": 80}},
    }
    workflow = write(tmp_path / "body.json", body)
    out = tmp_path / "out"
    # Conversion needs a mode that delivers bytes: reference (the default) is refused.
    code, stdout, stderr = await client(str(workflow), "--url", worker.url, "--out", str(out))
    assert code == 1
    assert "error: invalid_request: " in stderr

    code, stdout, stderr = await client(
        str(workflow), "--url", worker.url, "--out", str(out), "--base64"
    )
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert "text from node 3: hello from the client" in lines
    (saved,) = (Path(line) for line in lines if not line.startswith("text from"))
    assert saved.suffix == ".webp"
    assert saved.read_bytes()[8:12] == b"WEBP"
    result = json.loads((out / "result.json").read_text())
    assert result["files"][0]["data"].endswith("base64 characters, saved>")


async def test_worker_error_is_reported(worker: Worker, tmp_path: Path) -> None:
    workflow = write(tmp_path / "fail.json", graphs.failing("client boom"))
    code, stdout, stderr = await client(str(workflow), "--url", worker.url, "--out", str(tmp_path))
    assert code == 1
    assert "error: execution_error: " in stderr
    assert "client boom" in stderr
    assert stdout == ""

    workflow = write(tmp_path / "unknown.json", {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    code, _, stderr = await client(str(workflow), "--url", worker.url, "--out", str(tmp_path))
    assert code == 1
    assert "error: invalid_prompt: " in stderr


async def test_usage_errors(tmp_path: Path) -> None:
    code, _, stderr = await client(str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in stderr
    workflow = write(tmp_path / "body.json", {"prompt": graphs.save(), "output": {"mode": "s3"}})
    code, _, stderr = await client(str(workflow), "--base64")
    assert code == 2 and "conflicts" in stderr


async def test_a_worker_without_the_stream_still_works(tmp_path: Path) -> None:
    """Degrades gracefully: a plain JSON answer (no event stream) is saved the same way."""
    image = png_bytes(4, 4, 0x00FF00)
    seen: list[str] = []

    async def prompt_sync(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept", ""))
        await asyncio.sleep(0.3)
        item = {
            "node_id": "3",
            "kind": "image",
            "filename": "plain_00001_.png",
            "subfolder": "",
            "type": "output",
            "mime_type": "image/png",
            "size": len(image),
            "data": base64.b64encode(image).decode(),
        }
        answer = {"prompt_id": "p1", "status": "success", "execution_time": 0.3}
        return web.json_response({**answer, "outputs": {}, "images": [], "files": [item]})

    app = web.Application()
    app.router.add_post("/prompt_sync", prompt_sync)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        workflow = write(tmp_path / "graph.json", graphs.save())
        out = tmp_path / "out"
        code, stdout, stderr = await client(
            str(workflow), "--url", f"http://127.0.0.1:{port}", "--out", str(out), "--base64"
        )
    finally:
        await runner.cleanup()
    assert code == 0, stderr
    assert "text/event-stream" in seen[0]
    assert "waiting for the worker..." in stderr
    assert (out / "plain_00001_.png").read_bytes() == image
    assert stdout.strip() == str(out / "plain_00001_.png")
