"""Datasets over the memory-mapped image cache."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.transforms import to_tensor


class CachedPhotos(Dataset):
    """Photos from the cache by row, each with an integer label; augmented when a transform is given."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.rows, self.labels, self.transform = images, np.asarray(rows), np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item):
        """`item` is an index, or (index, seed) to make the augmentation a function of the seed alone."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = np.asarray(self.images[self.rows[i]])
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(int(seed))
            image = self.transform(image=image)["image"]
        return to_tensor(image), torch.tensor(int(self.labels[i]))
