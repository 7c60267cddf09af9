"""The worker's connection to one ComfyUI backend, assembled and with an explicit lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from comfyui.client import ComfyUIClient
from comfyui.handler import PromptHandler
from comfyui.watcher import PromptWatcher
from config import Settings


@dataclass
class Bridge:
    """Client, watcher and handler of one backend: `await start()`, use, `await close()`."""

    settings: Settings
    client: ComfyUIClient
    watcher: PromptWatcher
    handler: PromptHandler

    @classmethod
    def create(cls, settings: Settings, *, session: aiohttp.ClientSession | None = None) -> Bridge:
        client = ComfyUIClient(settings, session=session)
        watcher = PromptWatcher(client, settings)
        return cls(settings, client, watcher, PromptHandler(client, watcher, settings))

    async def start(self) -> None:
        await self.client.start()
        await self.watcher.start()

    async def close(self) -> None:
        await self.handler.close()
        await self.watcher.close()
        await self.client.close()
