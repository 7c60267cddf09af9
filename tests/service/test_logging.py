"""One JSON log line per request, carrying request id, prompt id, outcome and timing."""

from __future__ import annotations

import json
import logging

import pytest

from comfyui.logs import configure_logging
from tests import graphs
from tests.fake_comfyui import FakeComfyUI
from tests.harness import running_worker, worker_settings


@pytest.mark.parametrize("generation", ["0.8"])
async def test_request_line_names_prompt_and_outcome(
    fake: FakeComfyUI, generation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    try:
        async with running_worker(worker_settings(fake.address)) as worker:
            async with worker.http() as http:
                ok = await http.post("/prompt_sync", json={"prompt": graphs.save()})
                failed = await http.post("/prompt_sync", json={"prompt": graphs.failing()})
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    requests = [line for line in lines if line.get("event") == "request"]
    by_prompt = {line.get("prompt_id"): line for line in requests}
    good = by_prompt[ok.json()["prompt_id"]]
    bad = by_prompt[failed.json()["prompt_id"]]
    assert good["outcome"] == "success" and good["status"] == 200
    assert bad["outcome"] == "execution_error" and bad["status"] == 500
    for line in (good, bad):
        assert line["request_id"] and line["duration_ms"] >= 0 and line["path"] == "/prompt_sync"
    # Every line logged about the prompt carries its id.
    queued = [line for line in lines if line.get("event") == "prompt_queued"]
    assert {line["prompt_id"] for line in queued} >= {good["prompt_id"], bad["prompt_id"]}
