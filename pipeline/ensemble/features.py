"""Concatenated, weighted embeddings of several models for one fold."""
from __future__ import annotations

import numpy as np

from pipeline.retrieval.embeddings import load_embeddings


def concatenated(folders: list, weights: list[float], names, split: str) -> np.ndarray:
    """[sqrt(w_1) e_1, sqrt(w_2) e_2, ...] for the named photos: a dot product of two such rows is the
    weighted sum of the models' cosine similarities."""
    parts = [np.sqrt(float(w)) * load_embeddings(folder, names, split) for folder, w in zip(folders, weights)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def mirrored(features: np.ndarray, dims: list[int]) -> np.ndarray:
    """The features of the mirrored photos. A flip-TTA embedding is [e(x), e(flip x)] / sqrt(2), so the
    mirror image's embedding is the same vector with its two halves swapped, per model."""
    out, start = [], 0
    for d in dims:
        part = features[:, start:start + d]
        half = d // 2
        out.append(np.concatenate([part[:, half:], part[:, :half]], axis=1))
        start += d
    return np.concatenate(out, axis=1)


def centred(features: np.ndarray, mean: np.ndarray, dims: list[int], weights: list[float]) -> np.ndarray:
    """Each model's block less `mean` (the training photos' mean feature), scaled back to norm sqrt(w).
    Pooled ImageNet features are all positive and sit in a narrow cone (every cosine near 1), so a
    cosine classifier over them hears little; centred, they spread around 0 as a trained neck's do."""
    out, start = features - mean, 0
    for d, w in zip(dims, weights):
        block = out[:, start:start + d]
        out[:, start:start + d] = np.sqrt(float(w)) * block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        start += d
    return out.astype(np.float32)
