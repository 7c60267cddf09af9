"""Access to the recordings of real ComfyUI servers in ../shared/comfyui-protocol/."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "comfyui-protocol"
PROTOCOL_DIR = Path(os.environ.get("COMFYUI_PROTOCOL_DIR", _DEFAULT))


def load(name: str) -> dict[str, Any]:
    """One transcript (e.g. "success.json", "comfyui-2024/probe.json"); skips if absent."""
    path = PROTOCOL_DIR / name
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"CI needs the protocol transcripts at {PROTOCOL_DIR}")
        pytest.skip(f"protocol transcripts not found at {PROTOCOL_DIR}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def ws_messages(name: str) -> list[dict[str, Any]]:
    """The websocket messages of a 0.8 transcript, in arrival order."""
    return [e["ws"] for e in load(name)["exchanges"] if "ws" in e]


def responses(name: str, path_prefix: str) -> list[dict[str, Any]]:
    """Recorded exchanges whose request path starts with `path_prefix`."""
    return [
        e
        for e in load(name)["exchanges"]
        if "request" in e and e["request"]["path"].startswith(path_prefix)
    ]
