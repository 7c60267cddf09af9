"""Input images and output delivery against a real ComfyUI (the 2024 server)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests import graphs
from tests.e2e.real_comfyui import RealComfyUI
from tests.e2e.test_worker_e2e import fresh_color
from tests.harness import running_worker, sync, worker_settings

pytestmark = pytest.mark.e2e


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def load_and_save(name: str) -> dict[str, dict[str, object]]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "in"}},
    }


async def test_input_images_reach_load_image_even_when_the_name_is_taken(
    comfy: RealComfyUI,
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}.png"
    first, second = png(6, 4, (255, 0, 0)), png(3, 5, (0, 0, 255))
    async with running_worker(worker_settings(comfy.address)) as worker:
        answers = [
            await sync(
                worker,
                load_and_save(name),
                images=[{"name": name, "image": base64.b64encode(data).decode()}],
                output={"mode": "base64"},
            )
            for data in (first, second)
        ]
    sizes = []
    for answer in answers:
        assert answer.status_code == 200, answer.text
        with Image.open(io.BytesIO(base64.b64decode(answer.json()["files"][0]["data"]))) as image:
            sizes.append(image.size)
    assert sizes == [(6, 4), (3, 5)]  # each request loaded its own picture
    assert (comfy.input_dir / name).read_bytes() == first


async def test_every_mode_reads_real_outputs(comfy: RealComfyUI, tmp_path: Path) -> None:
    graph = {
        **graphs.save("modes", color=fresh_color()),
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "5": {"class_type": "ShowText", "inputs": {"text": "from e2e"}},
    }
    settings = worker_settings(
        comfy.address,
        comfyui_output_dir=comfy.output_dir,
        comfyui_temp_dir=comfy.temp_dir,
        store_dir=tmp_path / "store",
    )
    async with running_worker(worker_settings(comfy.address)) as via_view:
        reference = await sync(via_view, graph)
        assert reference.status_code == 200, reference.text
        async with via_view.http() as http:
            for item in reference.json()["files"]:
                served = await http.get(item["url"])
                assert served.status_code == 200 and len(served.content) == item["size"]
                folder = comfy.output_dir if item["type"] == "output" else comfy.temp_dir
                assert served.content == (folder / item["filename"]).read_bytes()
    assert reference.json()["texts"] == [{"node_id": "5", "text": "from e2e"}]
    assert sorted(f["type"] for f in reference.json()["files"]) == ["output", "temp"]

    async with running_worker(settings) as colocated:
        stored = await sync(
            colocated, graph, output={"mode": "store", "convert": {"format": "webp"}}
        )
    assert stored.status_code == 200, stored.text
    for item in stored.json()["files"]:
        path = Path(item["path"])
        assert path.suffix == ".webp" and item["mime_type"] == "image/webp"
        with Image.open(path) as image:
            assert image.format == "WEBP"
        sidecar = json.loads(path.with_name(path.name + ".json").read_text())
        assert sidecar["provenance"][0]["prompt_id"] == stored.json()["prompt_id"]
