"""Train the box regressor on the photos a user boxed, and predict boxes for any photos.

Photos are decoded upright (EXIF) and stretched to a square of `boxes.image_size`; targets are the
boxes as fractions of the photo's width and height. Augmentation: mirror (the box mirrors with it)
and brightness. A plain loop: a few hundred boxed photos train in seconds to minutes on a CPU."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import columns as C
from pipeline.data.crop import BOX_COLUMNS, read_boxes
from pipeline.data.images import UnreadableImage, decode_photo
from pipeline.detection.model import BoxRegressor, box_iou, box_loss
from pipeline.errors import PipelineError
from pipeline.progress import Progress

log = logging.getLogger(__name__)


def thumbnails(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x S x S x 3 uint8 photos stretched to squares, N x 2 original width and height)."""
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    sizes = np.zeros((len(paths), 2), dtype=np.float64)
    for i, path in enumerate(paths):
        try:
            d = decode_photo(Path(path), (size, size))
        except UnreadableImage as e:
            raise PipelineError(str(e), path) from None
        images[i], sizes[i] = d.image, (d.width, d.height)
    return images, sizes


def boxed_photos(boxes_path: str | Path, photo_paths: dict[str, Path], size: int):
    """The boxed photos: (thumbnails, targets as fractions, names). Every row is checked against its
    photo: an unknown photo or a box outside it is an error naming the file and row."""
    boxes = read_boxes(boxes_path)
    rows = {name: i + 2 for i, name in enumerate(boxes)}  # read_boxes keeps the file's order
    unknown = [n for n in boxes if n not in photo_paths]
    if unknown:
        raise PipelineError(f"box of {unknown[0]!r}: no such photo in train.csv or sample_submission.csv",
                            boxes_path, rows[unknown[0]])
    names = list(boxes)
    images, sizes = thumbnails([photo_paths[n] for n in names], size)
    targets = np.zeros((len(names), 4), dtype=np.float32)
    for i, name in enumerate(names):
        x0, y0, x1, y1 = boxes[name]
        w, h = sizes[i]
        if x1 > w + 0.5 or y1 > h + 0.5:
            raise PipelineError(f"box of {name!r} ({x0:g},{y0:g},{x1:g},{y1:g}) lies outside the {w:.0f}x{h:.0f} "
                                "photo", boxes_path, rows[name])
        targets[i] = (x0 / w, y0 / h, min(x1, w) / w, min(y1, h) / h)
    return images, targets, names


def _augment(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator):
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], torch.flip(images, dims=[3]), images)
    mirrored = torch.stack([1 - targets[:, 2], targets[:, 1], 1 - targets[:, 0], targets[:, 3]], dim=1)
    targets = torch.where(flip[:, None], mirrored, targets)
    gain = 0.75 + 0.5 * torch.rand(len(images), 1, 1, 1, generator=generator)
    return (images.float() * gain).clamp(0, 255), targets


def train_box_model(images: np.ndarray, targets: np.ndarray, cfg: dict, seed: int = 0) -> BoxRegressor:
    b = cfg["boxes"]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = BoxRegressor({"backbone": b["backbone"], "pretrained": b["pretrained"], "image_size": int(b["image_size"])})
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    y = torch.from_numpy(targets)
    epochs, batch = int(b["epochs"]), int(b["batch_size"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(b["lr"]), weight_decay=1e-4)
    steps = epochs * max(1, -(-len(x) // batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(b["lr"]), total_steps=steps)
    model.train()
    with Progress(steps, "train box model", unit="step") as progress:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch):
                idx = order[start:start + batch]
                images_b, targets_b = _augment(x[idx], y[idx], generator)
                loss = box_loss(model(images_b), targets_b)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                progress.update()
                progress.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return model.eval()


@torch.no_grad()
def predict_fractions(model: BoxRegressor, images: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(images[s:s + batch]).permute(0, 3, 1, 2)).numpy() for s in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 4), dtype=np.float32)


def predict_boxes(model: BoxRegressor, paths: dict[str, Path]) -> pd.DataFrame:
    """Image, x0, y0, x1, y1 in original pixels for the named photos."""
    names = list(paths)
    images, sizes = thumbnails([paths[n] for n in names], int(model.spec["image_size"]))
    fractions = predict_fractions(model, images)
    pixels = fractions * np.concatenate([sizes, sizes], axis=1)
    return pd.DataFrame({C.IMAGE: names, **{c: pixels[:, i].round(1) for i, c in enumerate(BOX_COLUMNS)}})


def mean_iou(pred: np.ndarray, target: np.ndarray) -> float:
    iou, _, _ = box_iou(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64))
    return float(iou.mean())


def save_box_model(path: Path, model: BoxRegressor) -> None:
    from pipeline.io.atomic import torch_save

    torch_save(path, {"model": model.state_dict(), "spec": model.spec})


def load_box_model(path: str | Path) -> BoxRegressor:
    from pipeline.training.checkpoint import read_tensors

    state = read_tensors(path, "box model not found; run `whale boxes train` first")
    try:
        model = BoxRegressor({**state["spec"], "pretrained": False})
        model.load_state_dict(state["model"])
    except Exception as e:  # readable, but not a box model
        raise PipelineError(f"not a box model of this pipeline ({type(e).__name__})", path) from None
    return model.eval()
