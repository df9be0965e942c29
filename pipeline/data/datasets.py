"""Datasets over the memory-mapped image cache."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.transforms import to_tensor


class CachedPhotos(Dataset):
    """Photos from the cache by row, each with an integer label (-1: new_whale); augmented when a
    transform is given. `flipped[i]` mirrors item i first (flip-as-new-identity gives mirrored photos
    labels of their own)."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, transform=None,
                 flipped: np.ndarray | None = None):
        self.images, self.rows, self.labels, self.transform = images, np.asarray(rows), np.asarray(labels), transform
        self.flipped = np.zeros(len(self.rows), dtype=bool) if flipped is None else np.asarray(flipped, dtype=bool)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item):
        """`item` is an index, or (index, seed[, group]) from PKBatchSampler: the augmentation is then a
        function of the seed alone. Returns (image, label, group)."""
        if isinstance(item, tuple):
            i, seed, group = (*item, -1) if len(item) == 2 else item
        else:
            i, seed, group = item, None, -1
        image = np.asarray(self.images[self.rows[i]])
        if self.flipped[i]:
            image = np.ascontiguousarray(image[:, ::-1])
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(int(seed))
            image = self.transform(image=image)["image"]
        return to_tensor(image), torch.tensor(int(self.labels[i])), torch.tensor(int(group))


def training_items(labels: np.ndarray, rows: np.ndarray, num_classes: int, flip_as_new_identity: bool):
    """(rows, labels, flipped) for the training dataset: with flip-as-new-identity every photo appears
    twice, the mirrored copy labelled `label + num_classes` (new_whale stays -1)."""
    rows, labels = np.asarray(rows), np.asarray(labels)
    if not flip_as_new_identity:
        return rows, labels, np.zeros(len(rows), dtype=bool)
    mirrored = np.where(labels >= 0, labels + num_classes, -1)
    return (np.concatenate([rows, rows]), np.concatenate([labels, mirrored]),
            np.concatenate([np.zeros(len(rows), bool), np.ones(len(rows), bool)]))
