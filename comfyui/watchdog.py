"""Background probe of ComfyUI: the source of readiness and of the websocket's quick return.

While ComfyUI is healthy it is asked every `COMFY_HEALTH_INTERVAL_S`; while it is not (or the
websocket is down) every `COMFY_RECONNECT_BASE_DELAY_S`, and the first answer after an outage
cuts the websocket's reconnection backoff short, so the worker is ready again right after
ComfyUI is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from comfyui.client import ComfyUIClient
from comfyui.exceptions import ComfyUIError
from comfyui.tasks import running, stop_task
from config import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ComfyUIHealth:
    """The outcome of the last probe."""

    ok: bool
    checked_at: datetime | None = None
    error: str | None = None
    queue_running: int = 0
    queue_pending: int = 0


class Watchdog:
    """Probes ComfyUI's /queue in the background and keeps the last answer."""

    def __init__(self, client: ComfyUIClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.health = ComfyUIHealth(ok=False, error="not probed yet")
        self._probe_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        client.on_disconnect(self._probe_now.set)
        client.on_connect(self._probe_now.set)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="comfyui-watchdog")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    @property
    def alive(self) -> bool:
        """Is the probe loop still running (a liveness fact about this process)?"""
        return running(self._task)

    async def probe(self) -> ComfyUIHealth:
        now = datetime.now(UTC)
        try:
            running, pending = await self.client.queue_counts()
        except ComfyUIError as exc:
            if self.health.ok:
                log.warning("comfyui_unhealthy", error=exc.detail)
            self.health = ComfyUIHealth(ok=False, checked_at=now, error=exc.detail)
            return self.health
        if not self.health.ok:
            log.info("comfyui_healthy", queue_running=running, queue_pending=pending)
        self.health = ComfyUIHealth(
            ok=True, checked_at=now, queue_running=running, queue_pending=pending
        )
        self.client.queue_remaining = running + pending
        if not self.client.connected:
            self.client.reconnect_soon()
        return self.health

    async def _loop(self) -> None:
        while True:
            health = await self.probe()
            steady = health.ok and self.client.connected
            interval = (
                self.settings.comfy_health_interval_s
                if steady
                else self.settings.comfy_reconnect_base_delay_s
            )
            try:
                await asyncio.wait_for(self._probe_now.wait(), interval)
            except TimeoutError:
                pass
            self._probe_now.clear()
