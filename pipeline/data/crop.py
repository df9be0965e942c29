"""Where the fluke is: a bounding-box CSV when the user has one, else an automatic crop.

Boxes CSV: `Image,x0,y0,x1,y1` in pixels of the original photo (x to the right, y down, x1/y1
exclusive), for train and/or test photos; photos without a row are used whole (or auto-cropped).

The automatic crop assumes what fluke photos look like: a subject against a fairly uniform
background (sea, sky). It models the background as the median colour of the photo's border, marks
pixels far from it (Otsu's threshold on the colour distance) and keeps the central 90% of them,
padded by 10%. When the marked region is tiny or covers nearly everything it leaves the photo whole.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline import columns as C
from pipeline.errors import PipelineError

BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


def read_boxes(path: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """Image -> (x0, y0, x1, y1), validated; errors name the file and row."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError("boxes file not found", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PipelineError(f"not a readable CSV: {e}", path) from None
    expected = [C.IMAGE, *BOX_COLUMNS]
    if list(df.columns) != expected:
        raise PipelineError(f"header is {','.join(df.columns)!r}, expected {','.join(expected)!r}", path, 1)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for i, row in enumerate(df.itertuples(index=False), start=2):
        name = row[0]
        try:
            x0, y0, x1, y1 = (float(v) for v in row[1:])
        except ValueError:
            raise PipelineError(f"box of {name!r} is not four numbers: {','.join(row[1:])}", path, i) from None
        if not (x0 < x1 and y0 < y1) or min(x0, y0) < 0:
            raise PipelineError(f"box of {name!r} is empty or negative: x0<x1 and y0<y1, all >= 0", path, i)
        if name in boxes:
            raise PipelineError(f"second box for {name!r}", path, i)
        boxes[name] = (x0, y0, x1, y1)
    return boxes


def otsu(values: np.ndarray, bins: int = 64) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight / total - mean) ** 2 / np.maximum(weight * (total - weight), 1e-12)
    return float(centres[int(np.argmax(between[:-1]))])


def auto_box(img: Image.Image) -> tuple[float, float, float, float] | None:
    """The subject's box in img's pixels, or None to keep the whole photo."""
    w, h = img.size
    scale = 96 / max(w, h)
    small = np.asarray(img.convert("RGB").resize((max(8, round(w * scale)), max(8, round(h * scale))),
                                                 Image.BILINEAR), dtype=np.float32)
    sh, sw = small.shape[:2]
    bw, bh = max(1, sw // 20), max(1, sh // 20)
    border = np.concatenate([small[:bh].reshape(-1, 3), small[-bh:].reshape(-1, 3),
                             small[:, :bw].reshape(-1, 3), small[:, -bw:].reshape(-1, 3)])
    distance = np.linalg.norm(small - np.median(border, axis=0), axis=2)
    if distance.max() - distance.min() < 10:  # flat photo: nothing stands out
        return None
    ys, xs = np.nonzero(distance > otsu(distance.ravel()))
    share = len(xs) / distance.size
    if share < 0.02 or share > 0.9:
        return None
    x0, x1 = np.percentile(xs, [5, 95])
    y0, y1 = np.percentile(ys, [5, 95])
    pad_x, pad_y = 0.1 * (x1 - x0 + 1), 0.1 * (y1 - y0 + 1)
    x0, x1 = max(0, x0 - pad_x), min(sw, x1 + 1 + pad_x)
    y0, y1 = max(0, y0 - pad_y), min(sh, y1 + 1 + pad_y)
    if (x1 - x0) * (y1 - y0) > 0.9 * sw * sh:
        return None
    return x0 / scale, y0 / scale, x1 / scale, y1 / scale


def padding_box(img: Image.Image, tolerance: float = 12.0, share: float = 0.98) -> tuple[int, int, int, int] | None:
    """The photo without the flat margins that pad it (a competition photo letterboxed on white, a scan
    on black): from each side, rows or columns whose pixels are within `tolerance` of that side's
    corner colour for at least `share` of their length are cut. None when nothing is cut, or when
    what would be left is under a tenth of either side (a flat photo is kept whole)."""
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    h, w = a.shape[:2]

    def flat(lines: np.ndarray, colour: np.ndarray) -> np.ndarray:  # lines: n x length x 3
        return (np.abs(lines - colour).max(axis=2) <= tolerance).mean(axis=1) >= share

    def run(mask: np.ndarray) -> int:  # how many leading lines are flat
        return int(np.argmin(mask)) if not mask.all() else len(mask)

    top = run(flat(a, a[0, 0]))
    bottom = run(flat(a[::-1], a[-1, -1]))
    left = run(flat(a.transpose(1, 0, 2), a[0, 0]))
    right = run(flat(a.transpose(1, 0, 2)[::-1], a[-1, -1]))
    x0, y0, x1, y1 = left, top, w - right, h - bottom
    if (x0, y0, x1, y1) == (0, 0, w, h) or x1 - x0 < max(2, w // 10) or y1 - y0 < max(2, h // 10):
        return None
    return x0, y0, x1, y1
