"""Model-free API-format graphs used across the test tiers."""

from __future__ import annotations

from typing import Any

Graph = dict[str, dict[str, Any]]


def empty_image(color: int = 0, size: int = 64, batch: int = 1) -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": size, "height": size, "batch_size": batch, "color": color},
    }


def save(prefix: str = "sync", color: int = 0, size: int = 64, batch: int = 1) -> Graph:
    """EmptyImage -> ImageInvert -> SaveImage."""
    return {
        "1": empty_image(color, size, batch),
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def slow(seconds: float, steps: int = 10, prefix: str = "slow", color: int = 1) -> Graph:
    """EmptyImage -> SleepWithProgress -> SaveImage."""
    return {
        "1": empty_image(color),
        "2": {
            "class_type": "SleepWithProgress",
            "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def failing(message: str = "planned failure", color: int = 5) -> Graph:
    """EmptyImage -> FailAlways -> SaveImage."""
    return {
        "1": empty_image(color),
        "2": {"class_type": "FailAlways", "inputs": {"image": ["1", 0], "message": message}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "never"},
        },
    }


def preview_and_text(text: str = "hello bridge", color: int = 77) -> Graph:
    """A temp image (PreviewImage) and a text output (ShowText)."""
    return {
        "1": empty_image(color),
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "ShowText", "inputs": {"text": text}},
    }
