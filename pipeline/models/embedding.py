"""Embed cached photos with a trained model, optionally with flip test-time augmentation."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.transforms import to_tensor
from pipeline.progress import Progress
from pipeline.training.device import amp_dtype as resolve_amp, autocast


def photo_batches(images: np.ndarray, rows: np.ndarray, batch_size: int, device):
    """images[rows] as model-input tensors on `device`, batch_size photos at a time, in order."""
    for start in range(0, len(rows), batch_size):
        yield to_tensor(np.asarray(images[rows[start:start + batch_size]])).to(device)


@torch.no_grad()
def embed_rows(model, images: np.ndarray, rows: np.ndarray, batch_size: int, flip_tta: bool,
               device: torch.device, amp: bool = True, desc: str = "embed", amp_dtype: str = "auto") -> np.ndarray:
    """L2-normalised float32 embeddings of images[rows], under mixed precision only when `amp` (the
    config's train.amp, in train.amp_dtype) and on CUDA.

    With flip_tta each vector is [e(x), e(flip x)] / sqrt(2): a dot product of two such vectors is the
    mean of the unflipped and the flipped similarity, so a flipped query meets flipped gallery photos
    (a mirrored fluke is another whale, so flipped-vs-unflipped is never compared)."""
    model.eval()
    precision = resolve_amp(device, amp, amp_dtype)
    out = []
    progress = Progress(len(rows), desc, unit="photo", leave=False) if len(rows) > batch_size else None
    for batch in photo_batches(images, rows, batch_size, device):
        with autocast(device, precision):
            e = F.normalize(model(batch).float(), dim=1)
            if flip_tta:
                e_flip = F.normalize(model(torch.flip(batch, dims=[3])).float(), dim=1)
                e = torch.cat([e, e_flip], dim=1) / np.sqrt(2.0)
        out.append(e.cpu().numpy().astype(np.float32))
        if progress is not None:
            progress.update(len(batch))
    if progress is not None:
        progress.close()
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


@torch.no_grad()
def embed_pooled(model, pooled: np.ndarray, rows: np.ndarray, flip_tta: bool, device=torch.device("cpu"),
                 batch_size: int = 4096) -> np.ndarray:
    """embed_rows for a network whose backbone did not train, from its shared pooled features
    (models/pooled_cache.py: [0] as cached, [1] mirrored): the same vectors without the backbone."""
    model.to(device).eval()  # a training-free backbone (colour_histogram) has no parameters to ask
    out = []
    for start in range(0, len(rows), batch_size):
        part = np.asarray(rows[start:start + batch_size])
        e = F.normalize(model.from_pooled(torch.from_numpy(np.asarray(pooled[0, part])).to(device)).float(), dim=1)
        if flip_tta:
            e_flip = F.normalize(model.from_pooled(torch.from_numpy(np.asarray(pooled[1, part])).to(device)).float(), dim=1)
            e = torch.cat([e, e_flip], dim=1) / np.sqrt(2.0)
        out.append(e.cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
