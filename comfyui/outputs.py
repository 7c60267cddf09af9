"""Images named in a prompt's history outputs, and their bytes as base64."""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from typing import Any

from comfyui.client import ComfyUIClient
from comfyui.exceptions import OutputFetchError
from comfyui.schemas import ImageOutput


def collect_images(outputs: dict[str, Any]) -> list[ImageOutput]:
    """Every image of every node, in output order; temp (preview) images included."""
    images: list[ImageOutput] = []
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, dict):
            continue
        for item in node_output.get("images") or []:
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                continue
            filename: str = item["filename"]
            images.append(
                ImageOutput(
                    node_id=str(node_id),
                    filename=filename,
                    subfolder=str(item.get("subfolder") or ""),
                    type=str(item.get("type") or "output"),
                    mime_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
                )
            )
    return images


async def attach_base64(
    client: ComfyUIClient, images: list[ImageOutput], *, concurrency: int, prompt_id: str
) -> None:
    """Fill `data` of each image with its bytes from ComfyUI's /view, a few at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def fill(image: ImageOutput) -> None:
        async with limit:
            image.data = await read_base64(client, image, prompt_id=prompt_id)

    await asyncio.gather(*(fill(image) for image in images))


async def read_base64(client: ComfyUIClient, image: ImageOutput, *, prompt_id: str) -> str:
    async with client.open_view(image.filename, image.subfolder, image.type) as response:
        if response.status != 200:
            raise OutputFetchError(
                f"ComfyUI /view answered {response.status} for {image.type}/"
                f"{image.subfolder}/{image.filename}".replace("//", "/"),
                prompt_id=prompt_id,
            )
        payload = await response.read()
    return base64.b64encode(payload).decode("ascii")
