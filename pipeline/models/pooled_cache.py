"""The pooled features of a frozen backbone for every cached photo and its mirror image, computed once
and kept beside the image cache: every fold of a recipe whose backbone does not train (a head on frozen
features, zero-shot) reads the same features, in training (training/head.py) and in embed, instead of
running the backbone again per fold.

    <WORK>/cache/pooled/<key>.npy    2 x N x D float32: [0] the photos as cached, [1] mirrored

The key is a digest of everything that decides the features: the backbone's and the pooling's
tensors, the input size and normalisation, and the image cache file (its size and time). identify
shares a query photo's features alike between the folds of such a recipe.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from pipeline.io.atomic import write_npy
from pipeline.progress import Progress

log = logging.getLogger(__name__)


def tensors_digest(state: dict, prefixes: tuple[str, ...] = ("",), digest_size: int = 16):
    """A blake2b hash of a state dict's tensors (names and bytes) whose names start with `prefixes`."""
    digest = hashlib.blake2b(digest_size=digest_size)
    for name, tensor in sorted(state.items()):
        if name.startswith(prefixes):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest


def backbone_digest(model) -> str:
    """A digest of what decides a network's pooled features: the backbone's and the pooling's tensors,
    the input size and normalisation. Folds whose backbone did not train share it."""
    digest = tensors_digest(model.state_dict(), ("backbone.", "pool."), digest_size=12)
    spec = model.spec
    digest.update(repr((spec["input_size"], spec["mean"], spec["std"], spec["pool"])).encode())
    return digest.hexdigest()


def backbone_key(model, images_file) -> str:
    """backbone_digest and the image cache file it reads (its size and time)."""
    stat = images_file.stat()
    return f"{backbone_digest(model)}-{stat.st_size}-{stat.st_mtime_ns}"


@torch.no_grad()
def pooled_pairs(model, images: np.ndarray, rows: np.ndarray, batch_size: int, device, progress: bool = False) -> np.ndarray:
    """2 x len(rows) x D pooled features of images[rows]: [0] as they are, [1] mirrored."""
    from pipeline.models.embedding import photo_batches

    model.to(device).eval()
    plain, mirrored = [], []
    bar = Progress(len(rows), "frozen features", unit="photo", leave=False) if progress else None
    for batch in photo_batches(images, rows, batch_size, device):
        plain.append(model.pooled(batch).float().cpu().numpy())
        mirrored.append(model.pooled(torch.flip(batch, dims=[3])).float().cpu().numpy())
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return np.stack([np.concatenate(plain), np.concatenate(mirrored)]).astype(np.float32)


@torch.no_grad()
def pooled_features(model, cache, batch_size: int, device) -> np.ndarray:
    """2 x N x D pooled features of every cache row (as cached, mirrored), from disk when already there."""
    images_file = cache.folder / "images.npy"
    path = cache.folder / "pooled" / f"{backbone_key(model, images_file)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    features = pooled_pairs(model, cache.images, np.arange(len(cache.images)), batch_size, device, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npy(path, features)
    log.info("pooled features of %d photos (and mirrors) kept in %s", features.shape[1], path)
    return features
