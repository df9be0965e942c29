"""P x K batch sampling: P whales per batch, K photos each, so every batch holds positive pairs."""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of (dataset index, augmentation seed). The epoch's batches and every photo's
    augmentation depend only on (seed, epoch), not on the process or worker that loads it: a resumed
    run, a run with data-loader workers and a DDP run all see the same augmented batches. A whale with
    fewer than K photos is sampled with repetition."""

    def __init__(self, labels: np.ndarray, classes_per_batch: int, photos_per_class: int, seed: int = 0,
                 batches_per_epoch: int | None = None, rank: int = 0, world: int = 1):
        self.labels = np.asarray(labels)
        self.p, self.k, self.seed = int(classes_per_batch), int(photos_per_class), int(seed)
        self.by_class = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        self.p = min(self.p, len(self.by_class))
        self.batches_per_epoch = batches_per_epoch or max(1, len(self.labels) // (self.p * self.k))
        self.epoch = 0
        # Under DDP every rank draws the same global batch and keeps its own slice of it.
        self.rank, self.world = rank, world
        if (self.p * self.k) % world:
            raise ValueError(f"a P x K batch of {self.p * self.k} does not split over {world} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        # Walk a shuffled class order so every whale appears about equally often per epoch.
        order = rng.permutation(len(self.by_class))
        cursor = 0
        for _ in range(self.batches_per_epoch):
            if cursor + self.p > len(order):
                order, cursor = rng.permutation(len(self.by_class)), 0
            batch: list[int] = []
            for c in order[cursor:cursor + self.p]:
                members = self.by_class[c]
                batch.extend(rng.choice(members, size=self.k, replace=len(members) < self.k).tolist())
            cursor += self.p
            seeds = rng.integers(0, 2**31 - 1, size=len(batch)).tolist()
            yield list(zip(batch, seeds))[self.rank::self.world]
