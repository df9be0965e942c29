"""Decode one photo into a fixed-size uint8 RGB array, whatever its mode (CMYK, 16-bit, palette, RGBA),
cropped to the fluke when a box is known or the automatic crop is on, with its perceptual hash."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.data.crop import auto_box, padding_box
from pipeline.data.phash import phash

# A photo whose channels differ by less than this (on 0..255) everywhere is treated as grayscale.
GRAY_TOLERANCE = 8
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the photo by 90 degrees


class UnreadableImage(Exception):
    pass


class UnusableBox(UnreadableImage):
    """A box that leaves less than 2 x 2 pixels of the photo (empty, outside it, not finite)."""


@dataclass
class Decoded:
    image: np.ndarray  # H x W x 3 uint8, resized (stretched) to the cache size
    width: int  # of the original photo
    height: int
    gray: bool
    hash: np.ndarray  # 8 uint8: pHash of the whole photo (before any crop)
    box: tuple[float, float, float, float] | None  # crop used, in original (upright) pixels
    box_fell_back: bool = False  # a predicted box was unusable: the automatic crop (else the whole photo) was used


def decode_photo(path: Path, size_hw: tuple[int, int], box=None, auto_crop: bool = False,
                 box_predicted: bool = False, trim_padding: bool = False, keep_aspect: bool = False) -> Decoded:
    """`box_predicted`: the box came from the box model, not the user; when it is unusable for this
    photo the photo falls back to the automatic crop, else stays whole, instead of failing.
    `trim_padding`: a photo without a box loses the flat margins that pad it (data/crop.py).
    `keep_aspect`: the photo is scaled to fit the cache frame and centred on its mean colour, not stretched."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112) in _SWAPS_AXES:
                width, height = height, width
            if img.format == "JPEG":
                # Let libjpeg decode at a reduced scale when the photo is much larger than the cache
                # (a box crops part of it, so keep enough pixels for the box to fill the cache).
                img.draft("RGB", (size_hw[1] * 2, size_hw[0] * 2) if box is None and not auto_crop
                          else (size_hw[1] * 4, size_hw[0] * 4))
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            img.load()
    except Image.DecompressionBombError as e:  # its header claims more pixels than Pillow will decode
        raise UnreadableImage(f"refused: {e} (Pillow's limit, Image.MAX_IMAGE_PIXELS)") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for corrupt or truncated files
        raise UnreadableImage(f"cannot decode image: {e}") from None
    if width < 2 or height < 2:
        raise UnreadableImage(f"photo is {width}x{height} pixels, too small to identify anything")
    digest = phash(img)
    sx, sy = img.size[0] / width, img.size[1] / height  # draft decoding may have shrunk it
    used, fell_back = None, False
    if box is not None:
        used = usable_box(box, width, height)
        if used is None and not box_predicted:
            raise UnusableBox(f"box ({', '.join(f'{v:g}' for v in box)}) leaves less than 2x2 pixels of the "
                              f"{width}x{height} photo")
        fell_back = used is None
    if used is None and (auto_crop or fell_back):
        found = auto_box(img)
        if found is not None:
            used = (found[0] / sx, found[1] / sy, found[2] / sx, found[3] / sy)
    if used is None and trim_padding:
        found = padding_box(img)
        if found is not None:
            used = (found[0] / sx, found[1] / sy, found[2] / sx, found[3] / sy)
    if used is not None:
        img = img.crop((round(used[0] * sx), round(used[1] * sy), round(used[2] * sx), round(used[3] * sy)))
    resized = fit_frame(img, size_hw) if keep_aspect else np.asarray(img.resize((size_hw[1], size_hw[0]),
                                                                                  Image.BILINEAR), dtype=np.uint8)
    return Decoded(resized, width, height, is_grayscale(resized), digest, used, fell_back)


def fit_frame(img: Image.Image, size_hw: tuple[int, int]) -> np.ndarray:
    """The photo scaled to fit inside the frame with its aspect kept, centred, the rest of the frame
    filled with the photo's mean colour (a neutral fill: no edge for a network to read as a feature)."""
    h, w = size_hw
    scale = min(w / img.size[0], h / img.size[1])
    new_w, new_h = max(1, min(w, round(img.size[0] * scale))), max(1, min(h, round(img.size[1] * scale)))
    scaled = np.asarray(img.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
    frame = np.empty((h, w, 3), dtype=np.uint8)
    frame[:] = scaled.reshape(-1, 3).mean(0).round().astype(np.uint8)
    top, left = (h - new_h) // 2, (w - new_w) // 2
    frame[top:top + new_h, left:left + new_w] = scaled
    return frame


def usable_box(box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The box clipped to the photo, or None when what is left is under 2 x 2 pixels or not finite."""
    if not np.all(np.isfinite(np.asarray(box, dtype=np.float64))):
        return None
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def load_rgb(path: Path, size_hw: tuple[int, int], auto_crop: bool = False, trim_padding: bool = False,
             keep_aspect: bool = False) -> tuple[np.ndarray, int, int, bool]:
    """(H x W x 3 uint8 resized photo, original width, original height, is_grayscale)."""
    d = decode_photo(path, size_hw, auto_crop=auto_crop, trim_padding=trim_padding, keep_aspect=keep_aspect)
    return d.image, d.width, d.height, d.gray


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
