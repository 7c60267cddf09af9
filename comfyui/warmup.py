"""The optional warm-up workflow: run once at start-up; the worker is ready only after it."""

from __future__ import annotations

import asyncio
import json

import structlog

from comfyui.client import ComfyUIClient
from comfyui.exceptions import ComfyUIError
from comfyui.handler import PromptHandler
from comfyui.schemas import PromptSyncRequest
from comfyui.tasks import stop_task
from config import Settings

log = structlog.get_logger(__name__)


def load_warmup(settings: Settings) -> PromptSyncRequest | None:
    """Read `WARMUP_WORKFLOW`: a bare API-format graph or a `/prompt_sync` body."""
    path = settings.warmup_workflow
    if path is None:
        return None
    data = json.loads(path.read_text())
    body = data if isinstance(data, dict) and "prompt" in data else {"prompt": data}
    return PromptSyncRequest.model_validate(body)


class Warmup:
    """Runs the warm-up graph until it succeeds once."""

    def __init__(self, client: ComfyUIClient, handler: PromptHandler, settings: Settings) -> None:
        self.client = client
        self.handler = handler
        self.settings = settings
        self.request = load_warmup(settings)
        self.done = self.request is None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.done:
            self._task = asyncio.create_task(self._run(), name="warmup")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        assert self.request is not None
        delay = self.settings.comfy_reconnect_base_delay_s
        while True:
            await self.client.wait_connected(timeout=None)
            try:
                await self.handler.run(self.request, self.settings.warmup_timeout)
            except ComfyUIError as exc:
                self.error = exc.detail
                log.warning("warmup_failed", error=exc.detail, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.comfy_reconnect_max_delay_s)
                continue
            self.done, self.error = True, None
            log.info("warmup_done")
            return
