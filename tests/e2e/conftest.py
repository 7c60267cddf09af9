"""End-to-end fixtures: one real ComfyUI for the whole session (start-up is the slow part).

The tier is skipped when the server is not installed, unless `E2E` or `CI` is set: then it is
installed on the spot by scripts/comfyui-test-server.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.real_comfyui import RealComfyUI, ensure_installed, installed


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _flag("E2E") or _flag("CI") or installed():
        return
    skip = pytest.mark.skip(
        reason="real ComfyUI is not installed: run `scripts/comfyui-test-server.sh install` "
        "or set E2E=1 (CI=true installs it automatically)"
    )
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy() -> Iterator[RealComfyUI]:
    ensure_installed()
    server = RealComfyUI()
    was_up = server.is_up()
    server.start()
    try:
        yield server
    finally:
        if not was_up:
            server.stop()
