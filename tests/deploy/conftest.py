"""The deployment tests run against ComfyUI 0.8 only (the shared `fake` fixture's generation)."""

from __future__ import annotations

import pytest


@pytest.fixture
def generation() -> str:
    return "0.8"
