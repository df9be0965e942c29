"""P x K batch sampling: P whales per batch, K photos each, so every batch holds positive pairs.

Options on top (all in the config's `sampler` and `divide` sections):
  - a share of new_whale photos (label -1) added to every batch as negatives;
  - hard negative class mining: the P whales are grown greedily from a bank of per-whale embeddings;
  - divide and conquer: each whale belongs to a cluster, and batch b draws only from cluster b mod K.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields batches of (dataset index, augmentation seed, group). The epoch's batches and every photo's
    augmentation depend only on (seed, epoch) and the sampler's state (class bank, clusters), not on the
    process or worker that loads it: a resumed run, a run with data-loader workers and a DDP run all see
    the same augmented batches. A whale with fewer than K photos is sampled with repetition.

    labels: one integer per dataset index; -1 marks a new_whale photo (never a class of its own).
    group: the divide-and-conquer cluster the batch was drawn from; -1 when clusters are off."""

    def __init__(self, labels: np.ndarray, classes_per_batch: int, photos_per_class: int, seed: int = 0,
                 batches_per_epoch: int | None = None, rank: int = 0, world: int = 1,
                 new_whale_share: float = 0.0, hard_classes: bool = False, hard_class_pool: int = 4):
        self.labels = np.asarray(labels)
        known = self.labels >= 0
        self.unknown = np.flatnonzero(~known)
        self.classes = np.unique(self.labels[known])
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.p = min(int(classes_per_batch), len(self.by_class))
        self.k, self.seed = int(photos_per_class), int(seed)
        share = float(new_whale_share) if len(self.unknown) else 0.0
        if not 0 <= share < 1:
            raise ValueError(f"sampler.new_whale_share must be in [0, 1), got {share}")
        # new_whale photos on top of the P x K known ones, rounded down so the batch splits over the ranks.
        extra = int(round(self.p * self.k * share / (1 - share)))
        self.extra = extra - (self.p * self.k + extra) % world
        self.batch_size = self.p * self.k + max(0, self.extra)
        self.batches_per_epoch = batches_per_epoch or max(1, int(known.sum()) // (self.p * self.k))
        self.hard, self.pool = bool(hard_classes), max(1, int(hard_class_pool))
        self.bank: np.ndarray | None = None  # per-class mean embeddings (rows follow self.classes)
        self.groups: np.ndarray | None = None  # divide-and-conquer cluster of each class, or None
        self.epoch = 0
        # Under DDP every rank draws the same global batch and keeps its own slice of it.
        self.rank, self.world = rank, world
        if self.batch_size % world:
            raise ValueError(f"a batch of {self.batch_size} does not split over {world} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    # The state that changes batches beyond (seed, epoch): saved in checkpoints for exact resumes.
    def state_dict(self) -> dict:
        return {"bank": self.bank, "groups": self.groups}

    def load_state_dict(self, state: dict) -> None:
        self.bank = None if state.get("bank") is None else np.asarray(state["bank"])
        self.groups = None if state.get("groups") is None else np.asarray(state["groups"])

    def update_bank(self, embeddings: np.ndarray, labels: np.ndarray, momentum: float = 0.5) -> None:
        """Running mean embedding per whale, from the batches the model has just seen."""
        if not self.hard:
            return
        if self.bank is None:
            self.bank = np.zeros((len(self.classes), embeddings.shape[1]), dtype=np.float32)
        slots = np.searchsorted(self.classes, labels)
        for slot, label in zip(np.unique(slots[labels >= 0]), np.unique(labels[labels >= 0])):
            mean = embeddings[labels == label].mean(axis=0)
            mean = mean / max(1e-12, float(np.linalg.norm(mean)))
            old = self.bank[slot]
            self.bank[slot] = mean if not old.any() else momentum * old + (1 - momentum) * mean

    def _hard_set(self, first: int, candidates: np.ndarray) -> list[int]:
        """Greedy: start from `first`, add the candidate most similar to any whale already chosen."""
        chosen = [first]
        candidates = [c for c in candidates if c != first]
        best = self.bank[candidates] @ self.bank[first]
        while len(chosen) < self.p and candidates:
            i = int(np.argmax(best))
            chosen.append(candidates.pop(i))
            best = np.delete(best, i)
            if candidates:
                best = np.maximum(best, self.bank[candidates] @ self.bank[chosen[-1]])
        return chosen

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_groups = 0 if self.groups is None else int(self.groups.max()) + 1
        members_of = [np.flatnonzero(self.groups == g) for g in range(n_groups)]
        # Walk a shuffled class order so every whale appears about equally often per epoch.
        order = rng.permutation(len(self.by_class))
        cursor = 0
        for b in range(self.batches_per_epoch):
            group = -1
            if n_groups:
                group = b % n_groups
                pool = members_of[group]
                if len(pool) == 0:
                    pool = np.arange(len(self.by_class))
                picked = rng.choice(pool, size=self.p, replace=len(pool) < self.p).tolist()
            else:
                if cursor + self.p > len(order):
                    order, cursor = rng.permutation(len(self.by_class)), 0
                picked = order[cursor:cursor + self.p].tolist()
                cursor += self.p
                if self.hard and self.bank is not None:
                    size = min(len(self.by_class), self.pool * self.p)
                    candidates = rng.choice(len(self.by_class), size=size, replace=False)
                    picked = self._hard_set(picked[0], candidates)
            batch: list[int] = []
            for c in picked:
                members = self.by_class[c]
                batch.extend(rng.choice(members, size=self.k, replace=len(members) < self.k).tolist())
            if self.extra > 0:
                batch.extend(rng.choice(self.unknown, size=self.extra,
                                        replace=len(self.unknown) < self.extra).tolist())
            seeds = rng.integers(0, 2**31 - 1, size=len(batch)).tolist()
            yield [(i, s, group) for i, s in zip(batch, seeds)][self.rank::self.world]
