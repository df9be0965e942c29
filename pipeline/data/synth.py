"""A synthetic data set of humpback flukes in the Kaggle layout, for the demo and the tests.

Each whale has its own fluke: an outline (tip curl, thickness, trailing-edge scallops and notches)
and a pigmentation (white/black regions, spots, scars), drawn once in fluke coordinates. Each photo
then places that fluke in a scene: pose, scale, crop, lighting, water, splashes, colour or grayscale.
Photos per whale follow the real competition's long tail (its train.csv when available), with about
38% of train photos labelled new_whale, each of a whale seen nowhere else.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from pipeline import columns as C
from pipeline.io.atomic import atomic_path, write_csv

CANVAS_H, CANVAS_W = 128, 256  # fluke coordinates, rendered once per whale

# Photos per known whale in the 2019 competition (ids with 1..10 photos cover 91% of whales);
# used when the real label file is not available.
FALLBACK_COUNTS = {1: 2073, 2: 1285, 3: 568, 4: 273, 5: 172, 6: 136, 7: 87, 8: 75, 9: 62, 10: 46,
                   11: 39, 12: 26, 13: 14, 14: 16, 15: 19}


@dataclass(frozen=True)
class SynthSpec:
    n_whales: int = 200  # known whales in train
    new_whale_share: float = 0.38  # of train photos
    test_share: float = 0.3  # test photos per train photo
    test_new_whale_share: float = 0.28  # of test photos
    max_photos: int = 15
    photo_size: tuple[int, int] = (208, 384)  # height, width before random crop: framed on the fluke
    seed: int = 0


def photo_count_distribution(label_file: Path | None, max_photos: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, probabilities) of photos per known whale, from a real train.csv when given."""
    hist = dict(FALLBACK_COUNTS)
    if label_file is not None and Path(label_file).is_file():
        ids = pd.read_csv(label_file, dtype=str)[C.ID]
        per_whale = ids[ids != C.NEW_WHALE].value_counts()
        hist = per_whale.value_counts().to_dict()
    counts = np.array(sorted(k for k in hist if k <= max_photos))
    probs = np.array([hist[k] for k in counts], dtype=float)
    return counts, probs / probs.sum()


# ---------------------------------------------------------------- one whale's fluke


@dataclass
class Fluke:
    rgba: np.ndarray  # CANVAS_H x CANVAS_W x 4 uint8: pigmentation and the outline as alpha


def make_fluke(rng: np.random.Generator) -> Fluke:
    h, w = CANVAS_H, CANVAS_W
    x = np.linspace(-1, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    # Trailing edge (top in the photo): tips curl up, scallops and notches are this whale's own.
    curl = rng.uniform(0.15, 0.4)
    trailing = 0.42 - curl * np.abs(x) ** rng.uniform(1.2, 2.2)
    n_scallops = rng.integers(3, 9)
    trailing = trailing + rng.uniform(0.005, 0.03) * np.sin(np.pi * n_scallops * x + rng.uniform(0, 2 * np.pi))
    trailing = trailing + rng.uniform(0.04, 0.1) * np.exp(-(x / rng.uniform(0.03, 0.07)) ** 2)  # central notch
    for _ in range(rng.integers(0, 4)):
        centre, width = rng.uniform(-0.9, 0.9), rng.uniform(0.01, 0.05)
        trailing = trailing + rng.uniform(0.02, 0.08) * np.exp(-((x - centre) / width) ** 2)
    thickness = rng.uniform(0.22, 0.35) * (1 - np.abs(x) ** rng.uniform(2.0, 4.0)) + 0.01
    leading = trailing + thickness + 0.08 * np.exp(-(x / 0.15) ** 2)
    stalk = (np.abs(x) < rng.uniform(0.07, 0.12)) & (y > 0.45)
    mask = ((y >= trailing) & (y <= leading) & (np.abs(x) <= 1)) | stalk

    # Pigmentation: smooth random field thresholded into white and black regions.
    field = np.zeros((h, w))
    for _ in range(rng.integers(4, 10)):
        cx, cy = rng.uniform(-1, 1), rng.uniform(0.1, 0.8)
        sx, sy = rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.3)
        field += rng.normal() * np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
    if rng.random() < 0.5:  # many flukes are mirror-similar, but never exactly (flip = another whale)
        field = 0.6 * field + 0.4 * field[:, ::-1]
    white = field > np.quantile(field[mask], rng.uniform(0.1, 0.9))
    pigment = np.where(white, 1.0, 0.0)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(0, 15)):  # spots
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.uniform(1.5, 4)
        pigment[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.choice([0.0, 1.0])
    for _ in range(rng.integers(0, 4)):  # scars: thin bright lines
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        angle, length = rng.uniform(0, np.pi), rng.uniform(10, 50)
        t = np.linspace(0, 1, 60)
        px = np.clip((x0 + np.cos(angle) * length * t).astype(int), 0, w - 1)
        py = np.clip((y0 + np.sin(angle) * length * t).astype(int), 0, h - 1)
        pigment[py, px] = 0.9
    dark = rng.uniform(15, 45, size=3)
    light = rng.uniform(200, 245) + rng.uniform(-8, 8, size=3)
    rgb = dark[None, None, :] + pigment[..., None] * (light - dark)[None, None, :]
    alpha = mask.astype(np.float32) * 255
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1).clip(0, 255).astype(np.uint8)
    return Fluke(rgba=rgba)


# ---------------------------------------------------------------- one photo of a fluke


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array([rng.uniform(20, 90), rng.uniform(50, 120), rng.uniform(80, 160)])
    if rng.random() < 0.3:
        base = np.full(3, rng.uniform(60, 170))  # grey sea and sky
    yy = np.linspace(0, 1, h)[:, None, None]
    img = base * (0.7 + 0.6 * yy) + rng.normal(0, 6, size=(h, w, 1))
    waves = np.sin(np.linspace(0, rng.uniform(20, 60), h)[:, None] + rng.uniform(0, 6) +
                   0.3 * np.sin(np.linspace(0, 12, w))[None, :])
    img = img + rng.uniform(4, 15) * waves[..., None]
    return img.clip(0, 255)


def render_photo(fluke: Fluke, rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, tuple]:
    """The photo, and the fluke's true bounding box in it (x0, y0, x1, y1; pixels, x1/y1 exclusive)."""
    h, w = size
    background = Image.fromarray(_water(rng, h, w).astype(np.uint8))
    # Pose: the fluke fills 75-98% of the width, tilted, squeezed as if seen from an angle.
    scale = rng.uniform(0.75, 0.98) * w / CANVAS_W
    sx, sy = scale * rng.uniform(0.88, 1.05), scale * rng.uniform(0.85, 1.1)
    angle = np.deg2rad(rng.uniform(-8, 8))
    cx, cy = w / 2 + rng.uniform(-0.07, 0.07) * w, h / 2 + rng.uniform(-0.08, 0.08) * h
    # PIL's affine maps output pixels to input pixels: invert rotation and scale.
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = cos / sx, sin / sx
    d, e = -sin / sy, cos / sy
    c = CANVAS_W / 2 - a * cx - b * cy
    f = CANVAS_H / 2 - d * cx - e * cy
    fluke_img = Image.fromarray(fluke.rgba, "RGBA")
    placed = fluke_img.transform((w, h), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
    placed_arr = np.asarray(placed).astype(np.float32)
    rows, cols = np.nonzero(placed_arr[..., 3] > 127)
    box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)) if len(rows) \
        else (0.0, 0.0, float(w), float(h))
    # Lighting: brightness, contrast and a colour cast on the animal.
    gain = rng.uniform(0.75, 1.15)
    rgb = (placed_arr[..., :3] - 128) * rng.uniform(0.8, 1.15) + 128 * gain
    rgb = rgb * rng.uniform(0.9, 1.1, size=3)
    alpha = placed_arr[..., 3:] / 255.0
    out = np.asarray(background).astype(np.float32) * (1 - alpha) + rgb * alpha
    # Splashes: bright translucent blobs, mostly below the fluke.
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(0, 6)):
        bx, by = rng.uniform(0, w), rng.uniform(h * 0.4, h)
        rx, ry = rng.uniform(5, 40), rng.uniform(5, 30)
        blob = np.exp(-(((xx - bx) / rx) ** 2 + ((yy - by) / ry) ** 2))[..., None]
        out = out * (1 - 0.8 * blob) + 235 * 0.8 * blob
    out = out + rng.normal(0, rng.uniform(1, 6), size=out.shape)
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.3:  # crop: the photographer framed it differently
        x0, y0 = rng.uniform(0, 0.08) * w, rng.uniform(0, 0.08) * h
        x1, y1 = w - rng.uniform(0, 0.08) * w, h - rng.uniform(0, 0.08) * h
        img = img.crop((int(x0), int(y0), int(x1), int(y1)))
        box = (max(0.0, box[0] - int(x0)), max(0.0, box[1] - int(y0)),
               min(float(img.width), box[2] - int(x0)), min(float(img.height), box[3] - int(y0)))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:  # about a third of the competition's photos were grayscale
        img = img.convert("L").convert("RGB")
    return img, box


# ---------------------------------------------------------------- the data set


def _name(rng: np.random.Generator, used: set[str], length: int, prefix: str = "") -> str:
    while True:
        name = prefix + hashlib.sha1(rng.bytes(16)).hexdigest()[:length]
        if name not in used:
            used.add(name)
            return name


def make_dataset(out: str | Path, spec: SynthSpec = SynthSpec(), label_file: Path | None = None,
                 progress: bool = True) -> dict:
    """Write train/, test/, train.csv, sample_submission.csv, solution.csv and boxes.csv (every photo's
    true fluke box, Image,x0,y0,x1,y1: ground truth for the box model, like solution.csv) under `out`."""
    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    counts, probs = photo_count_distribution(label_file, spec.max_photos)
    used_ids: set[str] = set()
    used_names: set[str] = set()

    whales = [_name(rng, used_ids, 7, "w_") for _ in range(spec.n_whales)]
    train_counts = rng.choice(counts, size=spec.n_whales, p=probs)
    n_known = int(train_counts.sum())
    n_new_train = int(round(n_known * spec.new_whale_share / (1 - spec.new_whale_share)))
    n_test = int(round((n_known + n_new_train) * spec.test_share))
    n_new_test = int(round(n_test * spec.test_new_whale_share))

    jobs: list[tuple[str, str, str, int]] = []  # (split, true id, label in train.csv, fluke key)
    for whale, n in zip(whales, train_counts):
        jobs += [(C.TRAIN, whale, whale, whale)] * int(n)
    for i in range(n_new_train):
        jobs.append((C.TRAIN, f"unseen_train_{i}", C.NEW_WHALE, f"unseen_train_{i}"))
    # Known whales in test are drawn in proportion to their train photos, as re-sightings are.
    test_known = rng.choice(whales, size=n_test - n_new_test, p=train_counts / train_counts.sum())
    for whale in test_known:
        jobs.append((C.TEST, whale, whale, whale))
    for i in range(n_new_test):
        jobs.append((C.TEST, f"unseen_test_{i}", C.NEW_WHALE, f"unseen_test_{i}"))

    flukes: dict[str, Fluke] = {}
    rows = {C.TRAIN: [], C.TEST: []}
    true_boxes: list[tuple] = []
    iterator = jobs
    if progress:
        from pipeline.progress import track
        iterator = track(jobs, len(jobs), "synth photos", unit="photo")
    for split, key, label, _ in iterator:
        if key not in flukes:
            flukes[key] = make_fluke(np.random.default_rng(rng.integers(2**63)))
        h, w = spec.photo_size
        size = (int(h * rng.uniform(0.85, 1.1)), int(w * rng.uniform(0.9, 1.15)))
        img, box = render_photo(flukes[key], rng, size)
        name = _name(rng, used_names, 9) + ".jpg"
        path = out / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            img.save(tmp, format="JPEG", quality=int(rng.integers(75, 95)))
        rows[split].append((name, label))
        true_boxes.append((name, *(round(v, 1) for v in box)))

    train = pd.DataFrame(rows[C.TRAIN], columns=[C.IMAGE, C.ID]).sample(frac=1, random_state=spec.seed)
    test = pd.DataFrame(rows[C.TEST], columns=[C.IMAGE, C.ID]).sort_values(C.IMAGE)
    write_csv(out / "train.csv", train)
    write_csv(out / "solution.csv", test)
    write_csv(out / "boxes.csv", pd.DataFrame(true_boxes, columns=[C.IMAGE, "x0", "y0", "x1", "y1"]))
    placeholder = " ".join([C.NEW_WHALE] + [f"w_{i:07d}" for i in range(C.SUBMISSION_LABELS - 1)])
    write_csv(out / "sample_submission.csv", test.assign(**{C.ID: placeholder}))
    return {"train": len(train), "test": len(test), "whales": spec.n_whales,
            "train_new_whale": n_new_train, "test_new_whale": n_new_test}
