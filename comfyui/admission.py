"""Backpressure: refuse work at once, with Retry-After, instead of letting it pile up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from comfyui.client import ComfyUIClient
from comfyui.exceptions import PayloadTooLargeError, TooManyRequestsError
from config import Settings


class Admission:
    """Caps in-flight sync requests, ComfyUI's queue depth and graph size."""

    def __init__(self, client: ComfyUIClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of `MAX_CONCURRENT_REQUESTS` places for the length of a sync request."""
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise TooManyRequestsError(
                f"{self.in_flight} requests are already in flight "
                f"(MAX_CONCURRENT_REQUESTS={self.settings.max_concurrent_requests})"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def check_submission(self, prompt: Any) -> None:
        """Refuse a graph that is too large, or any graph while ComfyUI's queue is full."""
        if isinstance(prompt, dict) and len(prompt) > self.settings.max_graph_nodes:
            raise PayloadTooLargeError(
                f"the graph has {len(prompt)} nodes; at most "
                f"{self.settings.max_graph_nodes} are accepted (MAX_GRAPH_NODES)"
            )
        remaining = self.client.queue_remaining
        # queue_remaining counts the running prompt too: pending is one less while busy.
        pending = max(0, remaining - 1) if remaining else 0
        if pending >= self.settings.max_queue_depth:
            raise TooManyRequestsError(
                f"ComfyUI has {pending} prompts pending "
                f"(MAX_QUEUE_DEPTH={self.settings.max_queue_depth})",
                retry_after=5,
            )
