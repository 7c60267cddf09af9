"""Peak memory (RSS) of the worker delivering one large output, in each delivery mode.

Runs the fake ComfyUI and moto's S3 server in this process and the worker (`python
server.py`) as a child process, fresh for each scenario, then reads the child's peak
resident set size (VmHWM in /proc/<pid>/status) after one `/prompt_sync` whose single output
is a PNG of about `--mb` megabytes (incompressible noise). The idle row is the worker after
a request with a tiny output, so the difference is what the large output costs.

    .venv/bin/python -m benchmarks.output_memory [--mb 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer
from PIL import Image

from tests.fake_comfyui import FakeComfyUI, RunContext

ROOT = Path(__file__).resolve().parent.parent
BIG = "big_00001_.png"
SMALL = "small_00001_.png"


def noise_png(path: Path, megabytes: int) -> int:
    """An RGB PNG of random pixels, stored uncompressed: about `megabytes` MB."""
    side = max(8, int((megabytes * 1024 * 1024 / 3) ** 0.5))
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        path, format="PNG", compress_level=0
    )
    return path.stat().st_size


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def run_scenario(
    fake: FakeComfyUI, env: dict[str, str], filename: str, body: dict[str, Any]
) -> tuple[float, float]:
    """Start a worker, run one request, answer (peak RSS in MB, seconds for the request)."""
    port = free_port()
    child_env = {**os.environ, **env, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "server.py", cwd=ROOT, env=child_env, stdout=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            for _ in range(200):
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            graph = {"1": {"class_type": "BigOutput", "inputs": {"filename": filename}}}
            started = time.perf_counter()
            response = await http.post("/prompt_sync", json={"prompt": graph, **body})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
        return peak_rss_mb(child.pid), elapsed
    finally:
        child.terminate()
        await asyncio.wait_for(child.wait(), 10)


async def main(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        fake = FakeComfyUI(generation="0.8", root=root / "comfyui")

        async def big_output(ctx: RunContext, inputs: dict[str, Any]) -> Any:
            entry = {"filename": inputs["filename"], "subfolder": "", "type": "output"}
            return (), {"images": [entry]}

        fake.register_node("BigOutput", big_output, output_node=True)
        size = noise_png(fake.output_dir / BIG, megabytes)
        noise_png(fake.output_dir / SMALL, 0)
        await fake.start()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request lines
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        host, s3_port = moto.get_host_and_port()
        endpoint = f"http://{host}:{s3_port}"
        keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(
            Bucket="bench"
        )
        base = {
            "COMFYUI_SERVER_ADDRESS": fake.address,
            "LOG_LEVEL": "WARNING",
            "STORE_DIR": str(root / "store"),
            "S3_ENDPOINT_URL": endpoint,
            "S3_BUCKET": "bench",
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "bench",
            "S3_SECRET_ACCESS_KEY": "bench",
            "S3_ADDRESSING_STYLE": "path",
        }
        colocated = {**base, "COMFYUI_OUTPUT_DIR": str(fake.output_dir)}
        scenarios: list[tuple[str, dict[str, str], str, dict[str, Any]]] = [
            ("idle (tiny output, base64)", base, SMALL, {"output": {"mode": "base64"}}),
            ("reference", base, BIG, {}),
            ("base64 via /view", base, BIG, {"output": {"mode": "base64"}}),
            ("base64 colocated", colocated, BIG, {"output": {"mode": "base64"}}),
            ("store via /view", base, BIG, {"output": {"mode": "store"}}),
            ("store colocated", colocated, BIG, {"output": {"mode": "store"}}),
            ("s3 via /view", base, BIG, {"output": {"mode": "s3"}}),
            ("s3 colocated", colocated, BIG, {"output": {"mode": "s3"}}),
            (
                "store + jpeg conversion",
                colocated,
                BIG,
                {"output": {"mode": "store", "convert": {"format": "jpeg"}}},
            ),
        ]
        print(
            f"output: {size / 1e6:.1f} MB PNG; {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
        )
        print(f"{'scenario':<28} {'peak RSS MB':>12} {'request s':>10}")
        try:
            for name, env, filename, body in scenarios:
                peak, seconds = await run_scenario(fake, env, filename, body)
                print(f"{name:<28} {peak:>12.1f} {seconds:>10.2f}", flush=True)
        finally:
            moto.stop()
            await fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="size of the large output in MB")
    asyncio.run(main(parser.parse_args().mb))
