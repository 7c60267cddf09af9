"""Property-based run of schemathesis over the worker's OpenAPI document: no 5xx answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from comfyui import url_fetch
from comfyui.delivery import modes
from tests.fake_comfyui import FakeComfyUI
from tests.harness import running_worker, worker_settings

ST = Path(sys.executable).with_name("st")


@pytest.fixture
def no_outbound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated URLs and S3 endpoints must reach nothing: refuse every address and name."""

    async def refuse(host: str, *args: Any, **kwargs: Any) -> Any:
        raise url_fetch.BlockedAddressError(host, [])

    async def refuse_name(self: object, host: str, *args: Any, **kwargs: Any) -> Any:
        raise url_fetch.BlockedAddressError(host, [])

    monkeypatch.setattr(url_fetch.AddressPolicy, "permits", lambda self, address: False)
    monkeypatch.setattr(url_fetch.GuardedResolver, "resolve", refuse_name)
    monkeypatch.setattr(modes, "check_endpoint", refuse)


@pytest.mark.parametrize("generation", ["0.8"])
@pytest.mark.usefixtures("no_outbound")
async def test_openapi_fuzzing_finds_no_server_error(fake: FakeComfyUI, generation: str) -> None:
    settings = worker_settings(
        fake.address,
        default_timeout=5.0,
        max_timeout=5.0,
        # The default S3 endpoint is a closed loopback port, never a real service.
        s3_endpoint_url="http://127.0.0.1:9",
    )
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
