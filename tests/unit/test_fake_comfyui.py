"""The fake ComfyUI against the recordings of real servers, driven by a plain aiohttp client.

Every check compares what the fake says with what ComfyUI 0.8 (../shared/comfyui-protocol/*.json)
or the 2024 server (comfyui-2024/probe.json) said in the same situation.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import graphs
from tests.fake_comfyui import FakeComfyUI, RunContext, png_bytes
from tests.transcripts import load, responses, ws_messages

pytestmark = pytest.mark.asyncio

Msg = dict[str, Any]
CLIENT = "test-client"


class WsLog:
    """A websocket to the fake whose messages are collected in the background."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[Msg] = []
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
        self.closed.set()

    async def wait(self, predicate: Callable[[Msg], bool], timeout: float = 5.0) -> Msg:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                await asyncio.sleep(0.005)

    async def finished(self, prompt_id: str, timeout: float = 5.0) -> list[Msg]:
        """Messages up to the trailing `executing` with node None for `prompt_id`."""
        last = await self.wait(
            lambda m: (
                m["type"] == "executing"
                and m["data"]["node"] is None
                and m["data"].get("prompt_id") == prompt_id
            ),
            timeout,
        )
        return self.messages[: self.messages.index(last) + 1]

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def http(fake: FakeComfyUI) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(fake.url) as session:
        yield session


@pytest.fixture
async def ws(http: aiohttp.ClientSession) -> AsyncIterator[WsLog]:
    log = WsLog(await http.ws_connect(f"/ws?clientId={CLIENT}"))
    await log.wait(lambda m: m["type"] == "status")
    yield log
    await log.close()


async def submit(http: aiohttp.ClientSession, graph: Any, **body: Any) -> Msg:
    async with http.post("/prompt", json={"prompt": graph, "client_id": CLIENT, **body}) as r:
        assert r.status == 200, await r.text()
        answer: Msg = await r.json()
        return answer


async def history_of(http: aiohttp.ClientSession, prompt_id: str) -> Msg:
    async with http.get(f"/history/{prompt_id}") as r:
        assert r.status == 200
        body: Msg = await r.json()
        return body


def kinds(messages: list[Msg], *, progress_state: bool = False) -> list[str]:
    return [m["type"] for m in messages if progress_state or m["type"] not in ("progress_state",)]


def recorded_run(name: str) -> list[Msg]:
    """The websocket messages of the first run in a 0.8 transcript (after the initial status)."""
    messages = ws_messages(name)[1:]
    end = next(i for i, m in enumerate(messages) if m["type"] == "status" and i > 2)
    for i in range(end + 1, len(messages)):
        if messages[i]["type"] != "status":
            break
        end = i
    return messages[: end + 1]


def same_shape(ours: Any, theirs: Any) -> None:
    """Same JSON structure: equal key sets at every level, same types of leaves."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), (ours, theirs)
        assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
        for key in theirs:
            same_shape(ours[key], theirs[key])
    elif isinstance(theirs, list) and theirs and not isinstance(theirs[0], str):
        assert isinstance(ours, list) and ours, (ours, theirs)
        same_shape(ours[0], theirs[0])
    elif theirs is not None and not isinstance(theirs, bool | int | float):
        assert isinstance(ours, type(theirs)), (ours, theirs)


# -- a successful run and its fully cached re-run ----------------------------------------------


async def test_success_and_cached_rerun_match_08(tmp_path: Path) -> None:
    fake = FakeComfyUI(generation="0.8", root=tmp_path)
    await fake.start()
    recorded = load("success.json")
    graph = recorded["exchanges"][0]["request"]["json"]["prompt"]
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            log = WsLog(await http.ws_connect(f"/ws?clientId={CLIENT}"))
            first = await submit(http, graph)
            assert first["number"] == 0 and first["node_errors"] == {}
            run = (await log.finished(first["prompt_id"]))[1:]
            expected = recorded_run("success.json")
            # every message, progress_state included, in the recorded order and shape
            assert kinds(run, progress_state=True) == [
                *kinds(expected, progress_state=True),
                "executing",
            ]
            for ours, theirs in zip(run, expected, strict=False):
                same_shape(ours, theirs)
            states = [
                {k: v["state"] for k, v in m["data"]["nodes"].items()}
                for m in run
                if m["type"] == "progress_state"
            ]
            assert states == [
                {k: v["state"] for k, v in m["data"]["nodes"].items()}
                for m in expected
                if m["type"] == "progress_state"
            ]
            assert run[-1]["data"] == {"node": None, "prompt_id": first["prompt_id"]}
            entry = (await history_of(http, first["prompt_id"]))[first["prompt_id"]]
            recorded_entry = next(
                iter(responses("success.json", "/history/")[0]["response"].values())
            )
            same_shape(entry, recorded_entry)
            assert entry["outputs"]["3"]["images"][0]["filename"] == "rec_00001_.png"
            assert entry["prompt"][3]["client_id"] == CLIENT

            start = len(log.messages)
            second = await submit(http, graph)
            rerun = (await log.finished(second["prompt_id"]))[start:]
            assert kinds(rerun) == [
                "status",
                "status",
                "execution_start",
                "execution_cached",
                "executed",  # 0.8 replays the cached output node
                "execution_success",
                "status",
                "executing",
            ]
            assert rerun[3]["data"]["nodes"] == ["1", "2", "3"]
            again = (await history_of(http, second["prompt_id"]))[second["prompt_id"]]
            assert again["outputs"] == entry["outputs"]
            assert again["meta"] == entry["meta"]
            events = [m[0] for m in again["status"]["messages"]]
            assert events == ["execution_start", "execution_cached", "execution_success"]
            assert sorted(p.name for p in fake.output_dir.iterdir()) == ["rec_00001_.png"]
            await log.close()
    finally:
        await fake.stop()


async def test_success_and_cached_rerun_match_2024(tmp_path: Path) -> None:
    probe = load("comfyui-2024/probe.json")
    fake = FakeComfyUI(generation="2024", root=tmp_path)
    await fake.start()
    graph = probe["tiny_first"]["history"][probe["tiny_first"]["post_body"]["prompt_id"]]
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            log = WsLog(await http.ws_connect(f"/ws?clientId={CLIENT}"))
            for case in ("tiny_first", "tiny_cached"):
                start = len(log.messages)
                answer = await submit(http, graph["prompt"][2])
                assert set(answer) == set(probe[case]["post_body"])
                assert answer["node_errors"] == {}
                run = (await log.finished(answer["prompt_id"]))[start:]
                run = [m for m in run if not (m["type"] == "status" and "sid" in m["data"])]
                recorded = probe[case]["ws"]
                assert kinds(run) == [m["type"] for m in recorded]
                for ours, theirs in zip(run, recorded, strict=True):
                    same_shape(ours["data"], theirs["data"])
                entry = (await history_of(http, answer["prompt_id"]))[answer["prompt_id"]]
                recorded_entry = probe[case]["history"][probe[case]["post_body"]["prompt_id"]]
                same_shape(entry, recorded_entry)
                assert entry["outputs"] == recorded_entry["outputs"]
                assert entry["status"]["messages"][1][1]["nodes"] == (
                    [] if case == "tiny_first" else ["1", "2", "3"]
                )
            await log.close()
    finally:
        await fake.stop()


async def test_progress_sequence_matches(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    answer = await submit(http, graphs.slow(0.08, steps=4, prefix="prog"))
    run = await ws.finished(answer["prompt_id"])
    progress = [m["data"] for m in run if m["type"] == "progress"]
    assert progress == [
        {"value": i, "max": 4, "prompt_id": answer["prompt_id"], "node": "2"} for i in range(1, 5)
    ]
    if fake.generation == "0.8":
        expected = recorded_run("progress.json")
        ours = run[run.index(next(m for m in run if m["type"] == "execution_start")) - 2 :]
        assert kinds(ours, progress_state=True)[:-1] == kinds(expected, progress_state=True)
        for mine, theirs in zip(ours, expected, strict=False):
            same_shape(mine, theirs)


# -- errors during execution --------------------------------------------------------------------


async def test_runtime_error(fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog) -> None:
    answer = await submit(http, graphs.failing("planned failure"))
    run = await ws.finished(answer["prompt_id"])
    (error,) = [m["data"] for m in run if m["type"] == "execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "FailAlways"
    assert error["executed"] == ["1"] and error["exception_type"] == "RuntimeError"
    assert error["current_inputs"]["message"] == ["planned failure"]
    assert all(line.startswith("  File ") for line in error["traceback"])
    entry = (await history_of(http, answer["prompt_id"]))[answer["prompt_id"]]
    assert entry["outputs"] == {}
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    if fake.generation == "0.8":
        (recorded,) = [
            m["data"] for m in ws_messages("runtime_error.json") if m["type"] == "execution_error"
        ]
        same_shape(error, recorded)
        assert error["exception_message"] == "planned failure\n"
        assert sorted(error["current_outputs"]) == ["1", "2", "3"]
        assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_error"
        assert "execution_success" not in kinds(run)
    else:
        assert error["exception_message"] == "planned failure"
        assert set(error["current_outputs"]) == {"1"}
        assert "timestamp" not in error and "meta" not in entry


async def test_save_outside_output_folder_2024(tmp_path: Path) -> None:
    probe = load("comfyui-2024/probe.json")
    (recorded,) = [
        m["data"] for m in probe["runtime_error"]["ws"] if m["type"] == "execution_error"
    ]
    fake = FakeComfyUI(generation="2024", root=tmp_path)
    await fake.start()
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            log = WsLog(await http.ws_connect(f"/ws?clientId={CLIENT}"))
            answer = await submit(http, graphs.save("../escape"))
            run = await log.finished(answer["prompt_id"])
            (error,) = [m["data"] for m in run if m["type"] == "execution_error"]
            same_shape(error, recorded)
            for key in ("node_id", "node_type", "executed", "exception_type"):
                assert error[key] == recorded[key]
            assert error["exception_message"].startswith(recorded["exception_message"][:60])
            assert set(error["current_inputs"]) == set(recorded["current_inputs"])
            assert set(error["current_outputs"]) == set(recorded["current_outputs"])
            await log.close()
    finally:
        await fake.stop()


async def test_preview_and_text(fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog) -> None:
    answer = await submit(http, graphs.preview_and_text("hello bridge"))
    run = await ws.finished(answer["prompt_id"])
    order = [m["data"]["node"] for m in run if m["type"] == "executing"][:-1]
    entry = (await history_of(http, answer["prompt_id"]))[answer["prompt_id"]]
    assert entry["outputs"]["3"] == {"text": ["hello bridge"]}
    (image,) = entry["outputs"]["2"]["images"]
    assert image["type"] == "temp" and image["subfolder"] == ""
    name = image["filename"]
    assert name.startswith("ComfyUI_temp_") and name.endswith("_00001_.png") and len(name) == 29
    assert (fake.temp_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if fake.generation == "0.8":
        recorded = recorded_run("preview_and_text.json")
        assert order == [m["data"]["node"] for m in recorded if m["type"] == "executing"]
        assert kinds(run)[-8:] == [*kinds(recorded)[-7:], "executing"]
        assert sorted(entry["prompt"][4]) == ["2", "3"]
    else:
        assert order == ["3", "1", "2"]  # the output needing the fewest nodes runs first


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "invalid_class.json",
        "invalid_missing_input.json",
        "invalid_value.json",
        "invalid_no_output.json",
    ],
)
async def test_validation_bodies_08(tmp_path: Path, name: str) -> None:
    (exchange,) = load(name)["exchanges"]
    fake = FakeComfyUI(generation="0.8", root=tmp_path)
    await fake.start()
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            async with http.post("/prompt", json=exchange["request"]["json"]) as r:
                assert r.status == exchange["status"]
                body = await r.json()
        expected = exchange["response"]
        if name == "invalid_missing_input.json":  # ComfyUI walks a set: order varies
            for entry in (body, expected):
                for node in entry["node_errors"].values():
                    node["errors"].sort(key=lambda e: e["details"])
        assert body == expected
        assert not fake.history and not fake.pending_ids()
    finally:
        await fake.stop()


def _empty_image(**inputs: Any) -> dict[str, Any]:
    return {"class_type": "EmptyImage", "inputs": inputs}


BAD_GRAPHS_2024: dict[str, Any] = {  # the graphs behind the probe's error answers
    "err_missing_input": {**graphs.save(), "1": _empty_image(height=64, batch_size=1, color=0)},
    "err_bad_value_type": {
        **graphs.save(),
        "1": _empty_image(width="abc", height=64, batch_size=1, color=0),
    },
    "err_value_too_big": {
        **graphs.save(),
        "1": _empty_image(width=999999, height=64, batch_size=1, color=0),
    },
    "err_no_outputs": {"1": graphs.empty_image()},
    "err_dangling_link": {
        **graphs.save(),
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}},
    },
    "err_loadimage_missing": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "does-not-exist.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    },
}


async def test_validation_bodies_2024(tmp_path: Path) -> None:
    probe = load("comfyui-2024/probe.json")
    fake = FakeComfyUI(generation="2024", root=tmp_path)
    await fake.start()
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            for case, graph in BAD_GRAPHS_2024.items():
                async with http.post("/prompt", json={"prompt": graph}) as r:
                    assert r.status == probe[case]["status"], case
                    body = await r.json()
                expected = probe[case]["body"]
                if case == "err_dangling_link":
                    same_shape(body, expected)
                    (error,) = body["node_errors"]["2"]["errors"]
                    (recorded,) = expected["node_errors"]["2"]["errors"]
                    error["extra_info"].pop("traceback")
                    recorded["extra_info"].pop("traceback")
                    assert error == recorded
                else:
                    assert body == expected, case
            bad_class = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
            async with http.post("/prompt", json={"prompt": bad_class}) as r:
                assert (r.status, await r.text()) == (500, probe["err_bad_class"]["body"])
            async with http.post("/prompt", json={"nope": 1}) as r:
                assert (r.status, await r.json()) == (400, probe["err_no_prompt"]["body"])
            async with http.post("/prompt", data=b"not json") as r:
                assert (r.status, await r.text()) == (500, probe["err_not_json"]["body"])
        assert not fake.history and not fake.pending_ids()
    finally:
        await fake.stop()


async def test_other_validation_answers_08(tmp_path: Path) -> None:
    fake = FakeComfyUI(generation="0.8", root=tmp_path)
    await fake.start()
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            await _other_validation_answers_08(http)
    finally:
        await fake.stop()


async def _other_validation_answers_08(http: aiohttp.ClientSession) -> None:
    for exchange in responses("misc_endpoints.json", "/prompt"):
        body = exchange["request"].get("json")
        data = None if body is not None else exchange["request"]["body"].encode()
        async with http.post("/prompt", json=body, data=data) as r:
            assert r.status == exchange["status"]
            if "response" in exchange:
                assert await r.json() == exchange["response"]
            else:
                assert await r.text() == exchange["response_text"]
    dangling = {**graphs.save(), "2": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}}}
    async with http.post("/prompt", json={"prompt": dangling}) as r:
        assert r.status == 400
        body = await r.json()
    (error,) = body["node_errors"]["2"]["errors"]
    assert error["type"] == "exception_during_inner_validation"
    assert error["extra_info"]["exception_type"] == "KeyError"
    assert error["extra_info"]["input_config"] == ["IMAGE", {"tooltip": "The images to save."}]
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"]
    # one good output and one bad: queued, with the bad one reported
    mixed = {**graphs.preview_and_text(), "4": {"class_type": "ShowText", "inputs": {}}}
    async with http.post("/prompt", json={"prompt": mixed}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["node_errors"]["4"]["errors"][0]["type"] == "required_input_missing"


# -- queue, interrupt and delete ------------------------------------------------------------------


async def test_interrupt_running_and_delete_pending(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    running = await submit(http, graphs.slow(3.0, steps=30))
    pending = await submit(http, graphs.slow(3.1, steps=30))
    await ws.wait(lambda m: m["type"] == "progress")
    async with http.get("/queue") as r:
        queue = await r.json()
    assert [item[1] for item in queue["queue_running"]] == [running["prompt_id"]]
    assert [item[1] for item in queue["queue_pending"]] == [pending["prompt_id"]]
    assert len(queue["queue_running"][0]) == 5
    if fake.generation == "0.8":
        recorded = responses("interrupt_and_delete.json", "/queue")[0]["response"]
        same_shape(queue, recorded)
    async with http.post("/queue", json={"delete": [pending["prompt_id"]]}) as r:
        assert (r.status, await r.text()) == (200, "")
    async with http.post("/interrupt", json={"prompt_id": running["prompt_id"]}) as r:
        assert (r.status, await r.text()) == (200, "")
    run = await ws.finished(running["prompt_id"])
    (stop,) = [m["data"] for m in run if m["type"] == "execution_interrupted"]
    assert {k: stop[k] for k in ("prompt_id", "node_id", "node_type", "executed")} == {
        "prompt_id": running["prompt_id"],
        "node_id": "2",
        "node_type": "SleepWithProgress",
        "executed": ["1"],
    }
    tail = [m for m in run if m["type"] not in ("progress", "progress_state")][-5:]
    assert kinds(tail) == ["status", "status", "execution_interrupted", "status", "executing"]
    assert [m["data"]["status"]["exec_info"]["queue_remaining"] for m in tail[:2]] == [1, 1]
    entry = (await history_of(http, running["prompt_id"]))[running["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    if fake.generation == "0.8":
        recorded_entry = responses("interrupt_and_delete.json", "/history/")[0]["response"]
        same_shape(entry, next(iter(recorded_entry.values())))
    assert await history_of(http, pending["prompt_id"]) == {}
    assert fake.deleted == [pending["prompt_id"]]
    assert fake.interrupted == [running["prompt_id"]]
    assert fake.interrupts == [{"prompt_id": running["prompt_id"]}]
    await asyncio.sleep(0.05)
    assert pending["prompt_id"] not in fake.history and fake.running_id() is None


async def test_interrupt_of_another_prompt(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    answer = await submit(http, graphs.slow(0.3, steps=3))
    await fake.wait_for(lambda: fake.running_id() == answer["prompt_id"])
    async with http.post("/interrupt", json={"prompt_id": "someone-else"}) as r:
        assert r.status == 200
    run = await ws.finished(answer["prompt_id"])
    if fake.generation == "0.8":  # targeted: ignored as that prompt is not running
        assert "execution_interrupted" not in kinds(run)
        assert fake.history[answer["prompt_id"]]["status"]["status_str"] == "success"
    else:  # the 2024 server ignores the body and stops whatever runs
        assert "execution_interrupted" in kinds(run)
    async with http.post("/interrupt") as r:  # no body: whatever runs (nothing here)
        assert r.status == 200
    assert fake.interrupts == [{"prompt_id": "someone-else"}, None]


async def test_queue_order_front_and_client_prompt_id(
    fake: FakeComfyUI, http: aiohttp.ClientSession
) -> None:
    fake.hold = True
    first = await submit(http, graphs.save("p1", color=1))
    second = await submit(http, graphs.save("p2", color=2))
    mine = await submit(http, graphs.save("p3", color=3), front=True, prompt_id="my-own-id")
    assert mine["number"] == -2
    if fake.generation == "0.8":
        assert mine["prompt_id"] == "my-own-id"
    else:
        assert mine["prompt_id"] != "my-own-id"  # ignored by the 2024 server
    async with http.get("/queue") as r:
        pending = [item[1] for item in (await r.json())["queue_pending"]]
    assert pending == [mine["prompt_id"], second["prompt_id"], first["prompt_id"]]  # a heap
    assert fake.pending_ids() == [mine["prompt_id"], first["prompt_id"], second["prompt_id"]]
    async with http.get("/prompt") as r:
        assert await r.json() == {"exec_info": {"queue_remaining": 3}}
    async with http.post("/queue", json={"clear": True}) as r:
        assert r.status == 200
    assert fake.pending_ids() == []
    fake.hold = False


async def test_hold_and_release(fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog) -> None:
    fake.hold_queue()
    answer = await submit(http, graphs.save("held"))
    await asyncio.sleep(0.05)
    assert fake.pending_ids() == [answer["prompt_id"]] and fake.running_id() is None
    assert answer["prompt_id"] not in fake.history
    fake.release_queue()
    await ws.finished(answer["prompt_id"])
    assert fake.history[answer["prompt_id"]]["status"]["status_str"] == "success"


async def test_events_go_to_the_submitter_only(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    other = WsLog(await http.ws_connect("/ws"))
    sid_message = await other.wait(lambda m: m["type"] == "status")
    assert len(sid_message["data"]["sid"]) == 32  # uuid4().hex
    assert set(fake.ws_clients) == {CLIENT, sid_message["data"]["sid"]}
    answer = await submit(http, graphs.save("mine"))
    await ws.finished(answer["prompt_id"])
    await asyncio.sleep(0.02)
    assert set(kinds(other.messages)) == {"status"}
    # without a client_id nothing but broadcasts is sent, and no trailing `executing`
    async with http.post("/prompt", json={"prompt": graphs.save("anon", color=9)}) as r:
        anonymous = (await r.json())["prompt_id"]
    await fake.wait_for(lambda: anonymous in fake.history)
    await asyncio.sleep(0.02)
    assert set(kinds(other.messages)) == {"status"}
    # (0.8 broadcasts progress_state when a prompt has no client_id, as ComfyUI does)
    assert not [
        m
        for m in ws.messages
        if m["type"] != "progress_state" and m["data"].get("prompt_id") == anonymous
    ]
    await other.close()


# -- files: view, upload, PNG, LoadImage ----------------------------------------------------------


def check_png(data: bytes, width: int, height: int) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: list[tuple[bytes, bytes]] = []
    i = 8
    while i < len(data):
        (size,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + size]
        (crc,) = struct.unpack(">I", data[i + 8 + size : i + 12 + size])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        i += 12 + size
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    assert struct.unpack(">II", chunks[0][1][:8]) == (width, height)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == (width * 3 + 1) * height


async def test_saved_pngs_and_view(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    answer = await submit(http, graphs.save("pic", size=24, batch=2))
    await ws.finished(answer["prompt_id"])
    images = fake.history[answer["prompt_id"]]["outputs"]["3"]["images"]
    assert [i["filename"] for i in images] == ["pic_00001_.png", "pic_00002_.png"]
    for image in images:
        async with http.get("/view", params={**image, "type": "output"}) as r:
            assert r.status == 200 and r.content_type == "image/png"
            assert r.headers["Content-Disposition"] == f'filename="{image["filename"]}"'
            data = await r.read()
        assert data == (fake.output_dir / image["filename"]).read_bytes()
        check_png(data, 24, 24)
    second = await submit(http, graphs.save("pic", size=24, color=5))
    await ws.finished(second["prompt_id"])
    (image,) = fake.history[second["prompt_id"]]["outputs"]["3"]["images"]
    assert image["filename"] == "pic_00003_.png"  # the counter continues per prefix
    check_png(png_bytes(3, 2, 0x102030, {"prompt": "{}"}), 3, 2)


async def test_view_refuses_traversal_and_missing(
    fake: FakeComfyUI, http: aiohttp.ClientSession
) -> None:
    recorded = {
        e["request"]["path"]: e["status"] for e in responses("misc_endpoints.json", "/view")
    }
    (fake.output_dir.parent / "secret.png").write_bytes(b"x")
    assert recorded["/view?filename=../../etc/passwd&type=output"] == 400
    for path, status in [
        ("/view?filename=../../etc/passwd&type=output", 400),
        ("/view?filename=/etc/passwd&type=output", 400),
        ("/view?filename=nope.png&type=output", recorded["/view?filename=nope.png&type=output"]),
        ("/view?filename=secret.png&type=output&subfolder=..", 403),
        ("/view?filename=x.png&type=models", 400),
        ("/view", 404),
    ]:
        async with http.get(path) as r:
            assert r.status == status, path
            assert await r.read() == b""


async def test_upload_then_view_and_load(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    png = png_bytes(5, 7, 0xFF0000)

    async def upload(name: str, data: bytes, **fields: str) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="image/png")
        for key, value in fields.items():
            form.add_field(key, value)
        async with http.post("/upload/image", data=form) as r:
            return r.status, (await r.json() if r.status == 200 else await r.text())

    assert await upload("up.png", png, overwrite="true") == (
        200,
        {"name": "up.png", "subfolder": "", "type": "input"},
    )
    async with http.get("/view", params={"filename": "up.png", "type": "input"}) as r:
        assert r.status == 200 and r.content_type == "image/png" and await r.read() == png
    status, again = await upload("up.png", png)
    assert status == 200
    if fake.generation == "0.8":  # identical bytes: the existing file is reused
        assert again["name"] == "up.png"
    else:
        probe = load("comfyui-2024/probe.json")
        assert again == probe["upload_image_again_same_bytes"]["body"]
    assert (await upload("up.png", png_bytes(1, 1)))[1]["name"] == (
        "up (1).png" if fake.generation == "0.8" else "up (2).png"
    )
    assert await upload("up.png", png, subfolder="sub") == (
        200,
        {"name": "up.png", "subfolder": "sub", "type": "input"},
    )
    assert (await upload("x.png", png, subfolder="../..")) == (400, "")
    form = aiohttp.FormData()
    form.add_field("overwrite", "true")
    async with http.post("/upload/image", data=form) as r:
        assert (r.status, await r.text()) == (400, "")

    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "sub/up.png"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "fromupload"},
        },
    }
    answer = await submit(http, graph)
    await ws.finished(answer["prompt_id"])
    (image,) = fake.history[answer["prompt_id"]]["outputs"]["2"]["images"]
    check_png((fake.output_dir / image["filename"]).read_bytes(), 5, 7)
    async with http.post(
        "/prompt",
        json={
            "prompt": {**graph, "1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}}
        },
    ) as r:
        assert r.status == 400
        (error,) = (await r.json())["node_errors"]["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "image - Invalid image file: nope.png"


# -- the rest of the HTTP surface ----------------------------------------------------------------


async def test_misc_endpoints(fake: FakeComfyUI, http: aiohttp.ClientSession) -> None:
    modern = fake.generation == "0.8"
    probe = load("comfyui-2024/probe.json")
    recorded = {e["request"]["path"]: e for e in load("misc_endpoints.json")["exchanges"]}
    async with http.get("/system_stats") as r:
        stats = await r.json()
    same_shape(
        stats, recorded["/system_stats"]["response"] if modern else probe["GET /system_stats"][1]
    )
    async with http.get("/object_info/EmptyImage") as r:
        info = await r.json()
    if modern:
        assert info == recorded["/object_info/EmptyImage"]["response"]
        async with http.get("/object_info/SaveImage") as r:
            assert await r.json() == recorded["/object_info/SaveImage"]["response"]
    else:
        assert info == probe["GET /object_info/EmptyImage"][1]
    async with http.get("/object_info") as r:
        everything = await r.json()
    assert {"EmptyImage", "SleepWithProgress", "FailAlways", "ShowText", "LoadImage"} <= set(
        everything
    )
    async with http.get("/object_info/Nope") as r:
        assert await r.json() == {}
    async with http.get("/embeddings") as r:
        assert await r.json() == []
    async with http.get("/features") as r:
        if modern:
            assert await r.json() == recorded["/features"]["response"]
        else:
            assert (r.status, await r.text()) == tuple(probe["GET /features"])
    async with http.get("/api/queue") as r:
        if modern:
            assert await r.json() == {"queue_running": [], "queue_pending": []}
        else:
            assert (r.status, await r.text()) == tuple(probe["GET /api/queue"])
    async with http.get("/history/does-not-exist") as r:
        assert (r.status, await r.json()) == (200, {})
    async with http.get("/history", params={"max_items": "1"}) as r:
        assert await r.json() == {}
    assert fake.requests[-1].path == "/history" and fake.requests[-1].query == {"max_items": "1"}


async def test_history_listing_and_deletion(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    ids = []
    for color in (1, 2, 3):
        answer = await submit(http, graphs.save("h", color=color))
        await ws.finished(answer["prompt_id"])
        ids.append(answer["prompt_id"])
    async with http.get("/history", params={"max_items": "2"}) as r:
        assert list(await r.json()) == ids[1:]
    async with http.post("/history", json={"delete": [ids[0]]}) as r:
        assert r.status == 200
    assert list(fake.history) == ids[1:]
    async with http.post("/history", json={"clear": True}) as r:
        assert r.status == 200
    assert fake.history == {}


# -- scripting: websockets, crash, restart, failures, custom nodes --------------------------------


async def test_refused_and_dropped_websockets(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    fake.hold = True
    answer = await submit(http, graphs.save("ws"))
    await fake.drop_websockets()
    await asyncio.wait_for(ws.closed.wait(), 2)
    assert fake.ws_clients == {}
    fake.accept_websockets = False
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"/ws?clientId={CLIENT}")
    assert refused.value.status == 503
    fake.accept_websockets = True
    fake.hold = False
    await fake.wait_for(lambda: answer["prompt_id"] in fake.history)  # kept executing
    again = WsLog(await http.ws_connect(f"/ws?clientId={CLIENT}"))
    second = await submit(http, graphs.save("ws", color=4))
    await again.finished(second["prompt_id"])
    await again.close()


async def test_reconnect_during_a_node_reports_it(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    answer = await submit(http, graphs.slow(0.3, steps=3))
    await ws.wait(lambda m: m["type"] == "progress")
    await ws.close()
    again = WsLog(await http.ws_connect(f"/ws?clientId={CLIENT}"))
    await again.wait(lambda m: m["type"] == "executing")
    assert kinds(again.messages[:2]) == ["status", "executing"]
    assert again.messages[1]["data"] == {"node": "2"}  # the node running for this client
    await again.finished(answer["prompt_id"])
    await again.close()


async def test_crash_and_restart(fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog) -> None:
    port = fake.port
    answer = await submit(http, graphs.slow(2.0, steps=20))
    await ws.wait(lambda m: m["type"] == "progress")
    await fake.crash()
    await asyncio.wait_for(ws.closed.wait(), 2)
    assert ws.ws.close_code in (None, 1006)  # no close frame from the server
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession(fake.url) as fresh, fresh.get("/queue"):
            pass
    await fake.restart()
    assert fake.port == port and fake.history == {} and fake.running_id() is None
    async with aiohttp.ClientSession(fake.url) as fresh:
        log = WsLog(await fresh.ws_connect(f"/ws?clientId={CLIENT}"))
        status = await log.wait(lambda m: m["type"] == "status")
        assert status["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
        again = await submit(fresh, graphs.save("after"))
        assert again["number"] == 0  # a new process counts from zero
        await log.finished(again["prompt_id"])
        assert answer["prompt_id"] not in fake.history
        await log.close()


async def test_fail_next_and_delays(fake: FakeComfyUI, http: aiohttp.ClientSession) -> None:
    fake.fail_next("GET", "/queue", status=503, times=2, body="busy")
    for _ in range(2):
        async with http.get("/queue") as r:
            assert (r.status, await r.text()) == (503, "busy")
    async with http.get("/queue") as r:
        assert r.status == 200
    fake.fail_next("POST", "/prompt")
    async with http.post("/prompt", json={"prompt": graphs.save()}) as r:
        assert (r.status, await r.text()) == (
            500,
            "500 Internal Server Error\n\nServer got itself in trouble",
        )
    fake.fail_next("POST", "/prompt", status=0)  # connection dropped without an answer
    with pytest.raises(aiohttp.ClientError):
        async with http.post("/prompt", json={"prompt": graphs.save()}) as r:
            await r.read()
    assert not fake.pending_ids() and not fake.history
    # aiohttp retries an idempotent request once after a disconnect: drop both attempts
    fake.fail_next("GET", "/system_stats", status=0, times=2)
    with pytest.raises(aiohttp.ClientError):
        async with http.get("/system_stats") as r:
            await r.read()
    assert [r.path for r in fake.requests[-2:]] == ["/system_stats", "/system_stats"]
    fake.http_delay = 0.1
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get("/prompt") as r:
        assert r.status == 200
    assert loop.time() - started >= 0.1


async def test_custom_node_and_node_delay(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    seen: list[dict[str, Any]] = []

    async def double(ctx: RunContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
        seen.append(inputs)
        await ctx.progress(1, 1)
        return (), {"text": [str(inputs["n"] * 2)]}

    fake.register_node("Double", double, output_node=True, inputs={"n": ("INT", {"min": 0})})
    fake.node_delay = 0.05
    answer = await submit(http, {"1": {"class_type": "Double", "inputs": {"n": "21"}}})
    run = await ws.finished(answer["prompt_id"])
    assert seen == [{"n": 21}]  # validated and converted like ComfyUI does
    assert fake.history[answer["prompt_id"]]["outputs"] == {"1": {"text": ["42"]}}
    assert "progress" in kinds(run)
    async with http.post(
        "/prompt", json={"prompt": {"1": {"class_type": "Double", "inputs": {"n": -1}}}}
    ) as r:
        assert r.status == 400
        (error,) = (await r.json())["node_errors"]["1"]["errors"]
    assert error["type"] == "value_smaller_than_min"


async def test_partial_and_evicted_cache(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    async def run(graph: Any) -> tuple[list[str], list[str]]:
        start = len(ws.messages)
        answer = await submit(http, graph)
        messages = (await ws.finished(answer["prompt_id"]))[start:]
        (cached,) = [m["data"]["nodes"] for m in messages if m["type"] == "execution_cached"]
        ran = [m["data"]["node"] for m in messages if m["type"] == "executing"][:-1]
        return sorted(cached), ran

    assert await run(graphs.save("a", color=1)) == ([], ["1", "2", "3"])
    assert await run(graphs.save("b", color=1)) == (["1", "2"], ["3"])  # only the prefix changed
    assert await run(graphs.save("c", color=2)) == ([], ["1", "2", "3"])
    # ComfyUI keeps only what the latest prompt used: the first graph runs again
    assert await run(graphs.save("a", color=1)) == ([], ["1", "2", "3"])
    assert sorted(p.name for p in fake.output_dir.iterdir()) == [
        "a_00001_.png",
        "a_00002_.png",
        "b_00001_.png",
        "c_00001_.png",
    ]


async def test_success_is_announced_before_history_is_written(
    fake: FakeComfyUI, http: aiohttp.ClientSession, ws: WsLog
) -> None:
    fake.history_delay = 0.2
    answer = await submit(http, graphs.save("late"))
    last_event = "execution_success" if fake.generation == "0.8" else "executed"
    await ws.wait(lambda m: m["type"] == last_event)
    assert await history_of(http, answer["prompt_id"]) == {}  # not yet
    run = await ws.finished(answer["prompt_id"])
    assert kinds(run)[-2:] == ["status", "executing"]  # written, then announced
    assert answer["prompt_id"] in await history_of(http, answer["prompt_id"])


async def test_api_prefix_is_recorded_without_it(tmp_path: Path) -> None:
    fake = FakeComfyUI(generation="0.8", root=tmp_path)
    await fake.start()
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            async with http.post("/api/prompt", json={"prompt": graphs.save()}) as r:
                assert r.status == 200
            async with http.post("/api/interrupt", json={}) as r:
                assert r.status == 200
        recorded = [(r.method, r.path, r.raw_path, r.json) for r in fake.requests]
        assert recorded == [
            ("POST", "/prompt", "/api/prompt", {"prompt": graphs.save()}),
            ("POST", "/interrupt", "/api/interrupt", {}),
        ]
    finally:
        await fake.stop()


async def test_feature_flags_handshake(fake: FakeComfyUI, http: aiohttp.ClientSession) -> None:
    log = WsLog(await http.ws_connect("/ws?clientId=flags"))
    await log.wait(lambda m: m["type"] == "status")
    await log.ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    if fake.generation == "0.8":
        answer = await log.wait(lambda m: m["type"] == "feature_flags")
        features = next(e for e in load("misc_endpoints.json")["exchanges"] if "features" in str(e))
        assert answer["data"] == features["response"]
    else:
        await asyncio.sleep(0.05)
        assert load("comfyui-2024/probe.json")["ws_feature_flags"] == []
        assert kinds(log.messages) == ["status"]
    await log.close()
