#!/usr/bin/env python3
"""Example command-line client of the worker: run a workflow, show progress, save outputs.

    python client.py workflow.json --url http://127.0.0.1:18188 --out outputs/
    python client.py workflow.json --base64 --timeout 120

`workflow.json` is an API-format graph (ComfyUI's "Export (API)"), or a whole `/prompt_sync`
body (`{"prompt": ..., "images": ..., "output": ...}`). The client asks for the progress stream
(`Accept: text/event-stream`) and draws a progress bar from it; a worker that answers plain
JSON instead gets an elapsed-time spinner. Output files are saved into --out: from the inline
base64 with --base64, else downloaded from the URLs of the answer. `result.json` beside them
is the answer without the base64 data. Texts are printed.

Exit status: 0 on success, 1 when the worker answered an error, 2 on a usage error, 130
when interrupted (the worker then cancels the prompt). Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

EVENT_STREAM = "text/event-stream"


class Display:
    """Progress on stderr: a redrawn bar on a terminal, throttled lines otherwise."""

    def __init__(self, graph: dict[str, Any], out: TextIO = sys.stderr) -> None:
        self.graph = graph
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last_line = 0.0
        self._progress_node: str | None = None
        self._lock = threading.Lock()
        self._spinning = threading.Event()

    def node_label(self, node: str | None) -> str:
        if node is None:
            return ""
        class_type = (self.graph.get(node) or {}).get("class_type")
        return f"node {node} ({class_type})" if class_type else f"node {node}"

    def event(self, name: str, data: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        if name == "queued":
            self.line(f"queued as {data.get('prompt_id')}")
        elif name == "status":
            if data.get("state") == "queued":
                self.line("waiting in ComfyUI's queue")
        elif name == "executing":
            self.line(f"running {self.node_label(data.get('node'))}")
        elif name == "progress":
            value, maximum = data.get("value") or 0, data.get("max") or 0
            fraction = min(1.0, value / maximum) if maximum else 0.0
            text = f"{value:g}/{maximum:g} {self.node_label(data.get('node'))}"
            if self.tty:
                width = 30
                filled = round(fraction * width)
                bar = "#" * filled + "." * (width - filled)
                self.redraw(f"[{bar}] {fraction:4.0%} {text} {elapsed:5.1f}s")
            elif (
                data.get("node") != self._progress_node
                or value >= maximum
                or time.monotonic() - self._last_line >= 0.5
            ):
                self._progress_node = data.get("node")
                self.line(f"progress {text}")

    def line(self, text: str) -> None:
        with self._lock:
            self._last_line = time.monotonic()
            prefix = "\r\033[K" if self.tty else ""
            self.out.write(f"{prefix}{text}\n")
            self.out.flush()

    def redraw(self, text: str) -> None:
        with self._lock:
            self.out.write(f"\r\033[K{text}")
            self.out.flush()

    def spin(self, label: str) -> None:
        """Elapsed time while nothing else can be shown (a worker without the stream)."""
        if not self.tty:
            self.line(f"{label}...")
            return
        self._spinning.set()

        def run() -> None:
            frames = "|/-\\"
            index = 0
            while self._spinning.is_set():
                elapsed = time.monotonic() - self.started
                self.redraw(f"{frames[index % 4]} {label} {elapsed:5.1f}s")
                index += 1
                time.sleep(0.1)

        threading.Thread(target=run, daemon=True).start()

    def stop_spinning(self) -> None:
        if self._spinning.is_set():
            self._spinning.clear()
            time.sleep(0.15)
            self.redraw("")

    def done(self, text: str) -> None:
        self.stop_spinning()
        self.line(f"{text} in {time.monotonic() - self.started:.1f}s")


class WorkerError(Exception):
    """The worker answered an error (its JSON error body)."""

    def __init__(self, body: dict[str, Any], status: int) -> None:
        super().__init__(f"{body.get('error', 'error')}: {body.get('detail', '')}")
        self.body = body
        self.status = status


def read_body(path: Path, base64_out: bool) -> dict[str, Any]:
    """The /prompt_sync body from a graph file or a body file."""
    loaded = json.loads(path.read_text())
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path}: expected a JSON object (a graph or a /prompt_sync body)")
    prompt = loaded.get("prompt")
    body = dict(loaded) if isinstance(prompt, dict) else {"prompt": loaded}
    if base64_out:
        output = dict(body.get("output") or {})
        if output.get("mode") not in (None, "base64"):
            raise ValueError(f"--base64 conflicts with output.mode {output['mode']!r} in {path}")
        output["mode"] = "base64"
        body["output"] = output
        body.pop("return_image_base64", None)
    return body


def headers(api_key: str | None, **extra: str) -> dict[str, str]:
    values = dict(extra)
    if api_key:
        values["Authorization"] = f"Bearer {api_key}"
    return values


def run(
    url: str,
    body: dict[str, Any],
    *,
    timeout: float | None,
    api_key: str | None,
    display: Display,
) -> dict[str, Any]:
    """Submit, follow the progress stream if the worker offers it, return the answer."""
    query = f"?{urllib.parse.urlencode({'timeout': timeout})}" if timeout else ""
    request = urllib.request.Request(
        f"{url}/prompt_sync{query}",
        data=json.dumps(body).encode(),
        method="POST",
        headers=headers(
            api_key,
            **{"Content-Type": "application/json", "Accept": f"{EVENT_STREAM}, application/json"},
        ),
    )
    # Per socket read: the stream sends a keep-alive at least every 15 s; a plain JSON
    # answer comes only at the end of the run.
    read_timeout = (timeout or 3600) + 60
    display.spin("waiting for the worker")
    try:
        response = urllib.request.urlopen(request, timeout=read_timeout)
    except urllib.error.HTTPError as exc:
        raise WorkerError(_error_body(exc.read(), exc.code), exc.code) from None
    with response:
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith(EVENT_STREAM):
            answer: dict[str, Any] = json.loads(response.read())
            return answer
        display.stop_spinning()
        for name, data in events(response):
            if name == "result":
                return data
            if name == "error":
                raise WorkerError(data, int(data.get("status", 500)))
            display.event(name, data)
    raise WorkerError({"error": "stream_ended", "detail": "the stream ended without a result"}, 0)


def events(response: Iterable[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a Server-Sent Events body (comments skipped)."""
    name, data = "message", list[str]()
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _error_body(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"error": f"http_{status}", "detail": raw.decode(errors="replace")[:500]}


def save_outputs(
    answer: dict[str, Any], out: Path, *, api_key: str | None, timeout: float
) -> list[Path]:
    """Write every output file of the answer into `out`; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for item in answer.get("files") or []:
        data = _file_bytes(item, api_key, timeout)
        if data is None:
            print(f"not saved (nothing to download): {item.get('filename')}", file=sys.stderr)
            continue
        path = _free_path(out / _local_name(item))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        saved.append(path)
    summary = _without_data(answer)
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    return saved


def _file_bytes(item: dict[str, Any], api_key: str | None, timeout: float) -> bytes | None:
    if item.get("data"):
        return base64.b64decode(item["data"])
    if item.get("presigned_url"):  # s3 mode: a pre-signed GET, no worker key
        request = urllib.request.Request(item["presigned_url"])
    elif item.get("url"):
        request = urllib.request.Request(item["url"], headers=headers(api_key))
    else:  # store mode: the file is on the worker's disk (`path`)
        return None
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read()
        return data


def _local_name(item: dict[str, Any]) -> Path:
    """Subfolder and file name from the answer, kept inside the output folder."""
    parts = [p for p in str(item.get("subfolder") or "").split("/") if p not in ("", ".", "..")]
    name = Path(str(item.get("filename") or "output")).name or "output"
    mime = item.get("mime_type")
    if mime and mimetypes.guess_type(name)[0] != mime:  # converted (e.g. png -> webp)
        suffix = mimetypes.guess_extension(mime)
        if suffix:
            name = str(Path(name).with_suffix(suffix))
    return Path(*parts, name)


def _free_path(path: Path) -> Path:
    """`path`, or `name-1.ext`, `name-2.ext`... when it exists already."""
    candidate, index = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{index}{path.suffix}")
        index += 1
    return candidate


def _without_data(answer: dict[str, Any]) -> dict[str, Any]:
    summary = json.loads(json.dumps(answer))
    for key in ("files", "images"):
        for item in summary.get(key) or []:
            if item.get("data"):
                item["data"] = f"<{len(item['data'])} base64 characters, saved>"
    result: dict[str, Any] = summary
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a ComfyUI workflow through the sync worker and save its outputs."
    )
    parser.add_argument("workflow", type=Path, help="API-format graph or /prompt_sync body")
    parser.add_argument(
        "--url",
        default=os.environ.get("WORKER_URL", "http://127.0.0.1:18188"),
        help="the worker's base URL (default $WORKER_URL or http://127.0.0.1:18188)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    parser.add_argument(
        "--base64", action="store_true", help="get the files inline (base64) in the answer"
    )
    parser.add_argument("--timeout", type=float, help="seconds the worker may wait for the run")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("WORKER_API_KEY"),
        help="API key, when the worker has API_KEYS set (default $WORKER_API_KEY)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.timeout is not None and args.timeout < 1:
        print("client.py: --timeout must be at least 1 second", file=sys.stderr)
        return 2
    try:
        body = read_body(args.workflow, args.base64)
    except (OSError, ValueError) as exc:
        print(f"client.py: {exc}", file=sys.stderr)
        return 2
    display = Display(body["prompt"])
    url = args.url.rstrip("/")
    try:
        answer = run(url, body, timeout=args.timeout, api_key=args.api_key, display=display)
        display.done(f"finished {answer.get('prompt_id')}")
        saved = save_outputs(answer, args.out, api_key=args.api_key, timeout=60)
    except WorkerError as exc:
        display.stop_spinning()
        print(f"error: {exc}", file=sys.stderr)
        for node_id, problem in (exc.body.get("node_errors") or {}).items():
            for error in (problem or {}).get("errors") or []:
                print(f"  node {node_id}: {error.get('message')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        display.stop_spinning()
        print(f"error: cannot reach the worker at {url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        display.stop_spinning()
        print("interrupted: the worker cancels the prompt", file=sys.stderr)
        return 130
    for path in saved:
        print(path)
    for text in answer.get("texts") or []:
        print(f"text from node {text.get('node_id')}: {text.get('text')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
