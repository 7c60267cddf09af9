"""The worker's connection to one ComfyUI backend, assembled and with an explicit lifecycle."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from comfyui.admission import Admission
from comfyui.client import ComfyUIClient
from comfyui.handler import PromptHandler
from comfyui.warmup import Warmup
from comfyui.watchdog import Watchdog
from comfyui.watcher import PromptWatcher
from config import Settings


@dataclass
class Bridge:
    """Everything that talks to one backend: `await start()`, use, `await close()`."""

    settings: Settings
    client: ComfyUIClient
    watcher: PromptWatcher
    handler: PromptHandler
    watchdog: Watchdog
    warmup: Warmup
    admission: Admission
    shutting_down: bool = field(default=False)

    @classmethod
    def create(cls, settings: Settings, *, session: aiohttp.ClientSession | None = None) -> Bridge:
        client = ComfyUIClient(settings, session=session)
        watcher = PromptWatcher(client, settings)
        handler = PromptHandler(client, watcher, settings)
        return cls(
            settings=settings,
            client=client,
            watcher=watcher,
            handler=handler,
            watchdog=Watchdog(client, settings),
            warmup=Warmup(client, handler, settings),
            admission=Admission(client, settings),
        )

    async def start(self) -> None:
        await self.client.start()
        await self.watcher.start()
        await self.watchdog.start()
        await self.warmup.start()

    async def close(self) -> None:
        self.shutting_down = True
        await self.warmup.close()
        await self.handler.close()
        await self.watchdog.close()
        await self.watcher.close()
        await self.client.close()

    def not_ready_reasons(self) -> list[str]:
        """Why the worker should not get traffic now; empty when it should."""
        reasons = []
        if self.shutting_down:
            reasons.append("shutting down")
        health = self.watchdog.health
        if not health.ok:
            reasons.append(f"ComfyUI does not answer: {health.error}")
        if not self.client.connected:
            exhausted = " (reconnect attempts spent; retrying at the cap)"
            reasons.append(
                "websocket to ComfyUI is down"
                + (exhausted if self.client.reconnect_exhausted else "")
            )
        if not self.warmup.done:
            reasons.append(
                f"warm-up not done{f': {self.warmup.error}' if self.warmup.error else ''}"
            )
        return reasons

    @property
    def alive(self) -> bool:
        """Are the background tasks that keep the worker useful still running?"""
        return self.client.alive and self.watcher.alive and self.watchdog.alive
