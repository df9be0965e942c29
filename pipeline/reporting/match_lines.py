"""Two photos side by side with their local-feature matches drawn as lines between them, as HotSpotter
draws a query against a candidate: one line per geometrically verified match, coloured by its strength
(dark blue for the weakest, through green and yellow, to red for the strongest; matplotlib's `turbo`),
with a dot at each end. Rendered server-side into an ordinary RGB image, so the review page needs no
JavaScript library to show it."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

GAP = 8  # pixels of background between the two photos
BACKGROUND = (255, 255, 255)


def _scaled(rgb: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    rgb = np.asarray(rgb, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    scale = height / rgb.shape[0]
    width = max(1, round(rgb.shape[1] * scale))
    if (width, height) == (rgb.shape[1], rgb.shape[0]):
        return np.ascontiguousarray(rgb[:, :, :3]), 1.0
    img = Image.fromarray(np.ascontiguousarray(rgb[:, :, :3])).resize((width, height), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8), scale


def strength_colours(strength: np.ndarray) -> np.ndarray:
    """N x 3 uint8 RGB colours for strengths in [0, 1] (clipped)."""
    from matplotlib import colormaps

    s = np.clip(np.asarray(strength, dtype=np.float64).reshape(-1), 0.0, 1.0)
    # The colormap's ends are kept off: its darkest blue and darkest red vanish on dark photos.
    return (colormaps["turbo"](0.1 + 0.8 * s)[:, :3] * 255).round().astype(np.uint8)


def draw_match_lines(query_rgb: np.ndarray, gallery_rgb: np.ndarray, query_xy: np.ndarray | None = None,
                     gallery_xy: np.ndarray | None = None, strength: np.ndarray | None = None, height: int = 320,
                     thickness: int | None = None) -> np.ndarray:
    """An RGB image `height` pixels high: the query photo on the left and the gallery photo on the
    right (each scaled to that height, GAP pixels apart), a line from each query point to its gallery
    point coloured by its strength, the strongest drawn last (on top). Points are in each photo's own
    pixel coordinates (x, y); none (or empty arrays) draws the two photos alone."""
    import cv2

    left, left_scale = _scaled(query_rgb, height)
    right, right_scale = _scaled(gallery_rgb, height)
    canvas = np.empty((height, left.shape[1] + GAP + right.shape[1], 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    canvas[:, :left.shape[1]] = left
    offset = left.shape[1] + GAP
    canvas[:, offset:] = right
    if query_xy is None or gallery_xy is None or len(query_xy) == 0:
        return canvas
    query_xy = np.asarray(query_xy, dtype=np.float64).reshape(-1, 2)
    gallery_xy = np.asarray(gallery_xy, dtype=np.float64).reshape(-1, 2)
    if len(query_xy) != len(gallery_xy):
        raise ValueError(f"{len(query_xy)} query points but {len(gallery_xy)} gallery points")
    strength = np.ones(len(query_xy)) if strength is None else np.asarray(strength, dtype=np.float64).reshape(-1)
    if len(strength) != len(query_xy):
        raise ValueError(f"{len(strength)} strengths for {len(query_xy)} matches")
    colours = strength_colours(strength)
    thickness = thickness or max(1, round(height / 240))
    radius = thickness + 1
    a = np.rint(query_xy * left_scale).astype(int)
    b = np.rint(gallery_xy * right_scale).astype(int) + np.array([offset, 0])
    for i in np.argsort(strength, kind="stable"):  # weakest first, strongest on top
        colour = tuple(int(c) for c in colours[i])
        p, q = (int(a[i, 0]), int(a[i, 1])), (int(b[i, 0]), int(b[i, 1]))
        cv2.line(canvas, p, q, colour, thickness, cv2.LINE_AA)
        cv2.circle(canvas, p, radius, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, q, radius, colour, -1, cv2.LINE_AA)
    return canvas


def encode_image(rgb: np.ndarray, format: str = "JPEG", quality: int = 85) -> bytes:
    """The image's bytes as a JPEG (default) or PNG file."""
    format = format.upper().replace("JPG", "JPEG")
    if format not in ("JPEG", "PNG"):
        raise ValueError(f"format {format!r}: use JPEG or PNG")
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)))
    if format == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()
