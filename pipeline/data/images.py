"""Decode one photo into a fixed-size uint8 RGB array, whatever its mode (CMYK, 16-bit, palette, RGBA)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# A photo whose channels differ by less than this (on 0..255) everywhere is treated as grayscale.
GRAY_TOLERANCE = 8


class UnreadableImage(Exception):
    pass


def load_rgb(path: Path, size_hw: tuple[int, int]) -> tuple[np.ndarray, int, int, bool]:
    """Return (H x W x 3 uint8 resized photo, original width, original height, is_grayscale)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.format == "JPEG":
                # Let libjpeg decode at a reduced scale when the photo is much larger than the cache.
                img.draft("RGB", (size_hw[1] * 2, size_hw[0] * 2))
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            img.load()
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for corrupt or truncated files
        raise UnreadableImage(f"cannot decode image: {e}") from None
    if width < 2 or height < 2:
        raise UnreadableImage(f"photo is {width}x{height} pixels, too small to identify anything")
    resized = np.asarray(img.resize((size_hw[1], size_hw[0]), Image.BILINEAR), dtype=np.uint8)
    return resized, width, height, is_grayscale(resized)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        img = Image.fromarray((arr / hi * 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def is_grayscale(rgb: np.ndarray) -> bool:
    channels = rgb.astype(np.int16)
    spread = np.abs(channels[..., 0] - channels[..., 1]).max(), np.abs(channels[..., 1] - channels[..., 2]).max()
    return bool(max(spread) < GRAY_TOLERANCE)
