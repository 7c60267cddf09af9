"""Property-based run of schemathesis over the worker's OpenAPI document: no 5xx answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.fake_comfyui import FakeComfyUI
from tests.harness import running_worker, worker_settings

ST = Path(sys.executable).with_name("st")


@pytest.mark.parametrize("generation", ["0.8"])
async def test_openapi_fuzzing_finds_no_server_error(fake: FakeComfyUI, generation: str) -> None:
    settings = worker_settings(fake.address, default_timeout=5.0, max_timeout=5.0)
    async with running_worker(settings) as worker:
        process = await asyncio.create_subprocess_exec(
            str(ST),
            "run",
            f"{worker.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 300)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
