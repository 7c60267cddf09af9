"""History outputs read into files and texts; colocated reads stay inside their folders."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from comfyui.client import ComfyUIClient
from comfyui.delivery.inline import encode_base64
from comfyui.delivery.reference import file_path
from comfyui.events import Event
from comfyui.exceptions import OutputFetchError
from comfyui.outputs import (
    CHUNK_SIZE,
    EarlySizes,
    OutputNotFoundError,
    OutputReader,
    OutputSource,
    collect_files,
    collect_images,
    collect_texts,
)
from comfyui.tracker import PromptTracker
from config import Settings

HISTORY_OUTPUTS: dict[str, Any] = {
    "9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
    "10": {
        "images": [{"filename": "p_00001_.png", "subfolder": "", "type": "temp"}],
        "animated": [False],
    },
    "11": {
        "gifs": [
            {
                "filename": "clip_00001.mp4",
                "subfolder": "vids",
                "type": "output",
                "format": "video/h264-mp4",
                "frame_rate": 8.0,
            }
        ]
    },
    "12": {"audio": [{"filename": "song_00001_.flac", "subfolder": "audio", "type": "output"}]},
    "13": {"3d": [{"filename": "mesh_00001_.glb", "subfolder": "3d", "type": "output"}]},
    "14": {"text": ["first", "second"]},
    "15": {"images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}]},
    "16": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
    "17": {"result": [{"filename": "notes.txt", "type": "output"}], "text": "one string"},
    "18": {"images": [{"filename": "v_00001_.webm", "subfolder": "", "type": "output"}]},
}


def test_every_file_of_every_kind_is_collected_once() -> None:
    files = collect_files(HISTORY_OUTPUTS)
    described = [(f.node_id, f.kind, f.filename, f.subfolder, f.type, f.mime_type) for f in files]
    assert described == [
        ("9", "image", "a_00001_.png", "", "output", "image/png"),
        ("10", "image", "p_00001_.png", "", "temp", "image/png"),
        ("11", "video", "clip_00001.mp4", "vids", "output", "video/mp4"),
        ("12", "audio", "song_00001_.flac", "audio", "output", "audio/flac"),
        ("13", "3d", "mesh_00001_.glb", "3d", "output", "model/gltf-binary"),
        ("15", "image", "anim_00001_.webp", "", "output", "image/webp"),
        ("17", "file", "notes.txt", "", "output", "text/plain"),
        ("18", "video", "v_00001_.webm", "", "output", "video/webm"),
    ]


def test_texts_come_back_as_text() -> None:
    assert [(t.node_id, t.text) for t in collect_texts(HISTORY_OUTPUTS)] == [
        ("14", "first"),
        ("14", "second"),
        ("17", "one string"),
    ]


def test_the_compatible_images_list_is_unchanged() -> None:
    images = collect_images(HISTORY_OUTPUTS)
    assert [(i.node_id, i.filename, i.type) for i in images] == [
        ("9", "a_00001_.png", "output"),
        ("10", "p_00001_.png", "temp"),
        ("15", "anim_00001_.webp", "output"),
        ("16", "a_00001_.png", "output"),
        ("18", "v_00001_.webm", "output"),
    ]
    assert all(i.data is None for i in images)


def test_colocated_paths_must_stay_in_their_folder(tmp_path: Path) -> None:
    output = tmp_path / "output"
    (output / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", output / "link.png")
    reader = OutputReader(None, output_dir=output, temp_dir=None)  # type: ignore[arg-type]
    assert reader.local_path("x.png", "sub", "output") == (output / "sub" / "x.png").resolve()
    assert reader.local_path("x.png", "", "temp") is None  # not colocated: read via /view
    for filename, subfolder in [
        ("../secret.txt", ""),
        ("secret.txt", ".."),
        ("secret.txt", "sub/../.."),
        ("/etc/passwd", ""),
        ("link.png", ""),
        ("", ""),
    ]:
        with pytest.raises(OutputFetchError, match="outside the output folder"):
            reader.local_path(filename, subfolder, "output")


async def test_colocated_files_are_read_from_disk(tmp_path: Path) -> None:
    (tmp_path / "out.bin").write_bytes(b"z" * (CHUNK_SIZE + 10))
    reader = OutputReader(None, output_dir=tmp_path, temp_dir=None)  # type: ignore[arg-type]
    async with reader.open("out.bin", "", "output") as source:
        assert source.size == CHUNK_SIZE + 10
        chunks = [chunk async for chunk in source.chunks()]
    assert [len(c) for c in chunks] == [CHUNK_SIZE, 10]
    with pytest.raises(OutputFetchError, match="not found"):
        async with reader.open("missing.bin", "", "output"):
            pass


class OddChunks(OutputSource):
    """A stream cut at awkward places, as /view's network chunks are."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes = data, sizes

    async def chunks(self) -> AsyncIterator[bytes]:
        position, index = 0, 0
        while position < len(self.data):
            size = self.sizes[index % len(self.sizes)]
            yield self.data[position : position + size]
            position += size
            index += 1


@pytest.mark.parametrize(
    ("length", "sizes"),
    [
        *((length, sizes) for length in (0, 1, 2, 3, 4, 100) for sizes in ([1], [2, 5], [7, 3])),
        (CHUNK_SIZE + 1, [CHUNK_SIZE]),
        (3 * CHUNK_SIZE + 2, [7, 3, 100_000]),
    ],
)
async def test_base64_from_a_stream_equals_base64_of_the_whole(
    length: int, sizes: list[int]
) -> None:
    data = os.urandom(length)
    for announced in (None, length, length // 2):  # unknown, right, wrong
        source = OddChunks(data, sizes)
        source.size = announced
        encoded, size = await encode_base64(source)
        assert b"".join(encoded.pieces) == base64.b64encode(data)
        assert size == length


def test_worker_urls_quote_every_part() -> None:
    assert file_path("output", "", "a b#1.png") == "/outputs/output/a%20b%231.png"
    assert file_path("temp", "x/y", "p.png") == "/outputs/temp/x/y/p.png"


VIEW = re.compile(r"^http://comfy\.test:8188/view\?.*$")


async def test_sizes_come_from_head_and_the_file_is_not_transferred(tmp_path: Path) -> None:
    settings = Settings(comfyui_server_address="http://comfy.test:8188", comfyui_retry_attempts=1)
    async with aiohttp.ClientSession() as session:
        reader = OutputReader(
            ComfyUIClient(settings, session=session), output_dir=None, temp_dir=None
        )
        with aioresponses() as mocked:
            mocked.head(VIEW, status=200, headers={"Content-Length": "1234"})
            assert await reader.size("a.png", "sub", "output") == 1234
            assert [method for method, _ in mocked.requests] == ["HEAD"]
        with aioresponses() as mocked:
            mocked.head(VIEW, status=404)
            with pytest.raises(OutputNotFoundError, match=r"output/sub/a\.png"):
                await reader.size("a.png", "sub", "output")
        # A HEAD that tells nothing (refused, or no length): the file is read through instead.
        for head in ({"status": 405}, {"status": 200, "headers": {"Content-Length": ""}}):
            with aioresponses() as mocked:
                mocked.head(VIEW, **head)
                mocked.get(VIEW, status=200, body=b"x" * 10)
                assert await reader.size("a.png", "", "temp") == 10
        # Colocated: the size on disk, no request at all.
        (tmp_path / "b.png").write_bytes(b"y" * 7)
        local = OutputReader(
            ComfyUIClient(settings, session=session), output_dir=tmp_path, temp_dir=None
        )
        with aioresponses() as mocked:
            assert await local.size("b.png", "", "output") == 7
            assert not mocked.requests


async def test_sizes_asked_early_are_used_once_and_failures_asked_again() -> None:
    settings = Settings(comfyui_server_address="http://comfy.test:8188", comfyui_retry_attempts=1)
    executed = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
    async with aiohttp.ClientSession() as session:
        reader = OutputReader(
            ComfyUIClient(settings, session=session), output_dir=None, temp_dir=None
        )
        (ref,) = collect_files({"9": executed})
        with aioresponses() as mocked:
            mocked.head(VIEW, status=200, headers={"Content-Length": "42"})
            early = EarlySizes(reader)
            early.add("9", executed)
            early.add("9", executed)  # the same file again (0.8 replays cached outputs)
            assert await early.size(ref) == 42
            assert [method for method, _ in mocked.requests] == ["HEAD"]
            assert len(next(iter(mocked.requests.values()))) == 1
        # An early answer that failed does not count: the size is asked for again.
        with aioresponses() as mocked:
            mocked.head(VIEW, status=500)
            mocked.get(VIEW, status=500)
            mocked.head(VIEW, status=200, headers={"Content-Length": "43"})
            early = EarlySizes(reader)
            early.add("9", executed)
            await asyncio.sleep(0.05)
            assert await early.size(ref) == 43
        # Never asked early: asked now. What was not used is cancelled without a warning.
        with aioresponses() as mocked:
            mocked.head(VIEW, status=200, headers={"Content-Length": "44"})
            early = EarlySizes(reader)
            assert await early.size(ref) == 44
            early.add("7", {"images": [{"filename": "b.png", "type": "temp"}]})
            early.cancel()
            await asyncio.sleep(0)


def test_the_tracker_tells_each_executed_output() -> None:
    seen: list[tuple[str, Any]] = []
    tracker = PromptTracker("p")
    tracker.on_output = lambda node, output: seen.append((node, output))
    tracker.feed(Event("executed", {"node": "3", "output": {"images": []}, "prompt_id": "p"}))
    tracker.feed(Event("executing", {"node": None, "prompt_id": "p"}))
    assert seen == [("3", {"images": []})]
