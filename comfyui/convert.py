"""Re-encode still images to webp or jpeg (Pillow), on disk, in a worker thread."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from comfyui.exceptions import DeliveryError
from comfyui.outputs import LocalSource, OutputSource, discard, local_file

Format = Literal["webp", "jpeg"]

#: Still-image types re-encoded; other files (SVG, video, ...) are delivered as they are.
CONVERTIBLE = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "image/gif"}
)

_PILLOW = {"webp": "WEBP", "jpeg": "JPEG"}
_MIME = {"webp": "image/webp", "jpeg": "image/jpeg"}
_SUFFIX = {"webp": ".webp", "jpeg": ".jpg"}


@dataclass(frozen=True, slots=True)
class Conversion:
    """A target format and quality (1-100)."""

    format: Format
    quality: int

    @property
    def mime_type(self) -> str:
        return _MIME[self.format]

    def rename(self, filename: str) -> str:
        """`filename` with the suffix of the target format."""
        return Path(filename).stem + _SUFFIX[self.format]


def convert_file(source: Path, target: Path, conversion: Conversion) -> bool:
    """Write `source` re-encoded to `target`. False (and nothing written) for animations,
    which would lose every frame but the first."""
    with Image.open(source) as image:
        if getattr(image, "is_animated", False):
            return False
        image.load()
        if conversion.format == "jpeg":
            converted = _flattened(image)
        elif image.mode in ("RGB", "RGBA"):
            converted = image
        else:
            converted = image.convert("RGBA" if _has_alpha(image) else "RGB")
        converted.save(target, format=_PILLOW[conversion.format], quality=conversion.quality)
    return True


@asynccontextmanager
async def converted(
    source: OutputSource, conversion: Conversion, *, name: str
) -> AsyncIterator[tuple[OutputSource, bool]]:
    """The source re-encoded (and True), or unchanged when it is an animation (and False).

    The source is read once; the result lives in a temporary file while the block runs.
    """
    async with local_file(source) as original:
        handle, temp = tempfile.mkstemp(
            prefix="comfyui-convert-", suffix=_SUFFIX[conversion.format]
        )
        os.close(handle)
        target = Path(temp)
        try:
            try:
                done = await asyncio.to_thread(convert_file, original, target, conversion)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DeliveryError(
                    f"cannot convert {name} to {conversion.format}: {exc}"
                ) from None
            yield (LocalSource(target), True) if done else (LocalSource(original), False)
        finally:
            discard(target)


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _flattened(image: Image.Image) -> Image.Image:
    """RGB for jpeg: transparent areas over white rather than their hidden colours."""
    if not _has_alpha(image):
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
