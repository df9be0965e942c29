"""The registry of losses by name, and `build_loss` which turns the config's loss section into one module.

Every built loss is called as loss(embeddings, labels[, groups]). Labels below zero are new_whale photos:
valid negatives, never positives, never a class. How each loss treats them is declared when it is
registered (see `NEW_WHALE_MODES`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError

# How a loss sees new_whale photos (label < 0):
#   unique: each gets a label of its own, so pair losses use it only as a negative;
#   drop:   removed from the batch (losses with one weight vector per class have no class for them);
#   native: the loss handles negative labels itself (e.g. BCE: a row of all-zero targets).
NEW_WHALE_MODES = ("unique", "drop", "native")


@dataclass(frozen=True)
class Entry:
    build: Callable[..., nn.Module]
    new_whale: str


LOSSES: dict[str, Entry] = {}


def register(name: str, new_whale: str):
    assert new_whale in NEW_WHALE_MODES, new_whale

    def wrap(fn):
        LOSSES[name] = Entry(fn, new_whale)
        return fn
    return wrap


def unique_negatives(labels: torch.Tensor) -> torch.Tensor:
    """new_whale labels (< 0) replaced by fresh labels, one per photo, above every real label."""
    unknown = labels < 0
    if not unknown.any():
        return labels
    out = labels.clone()
    top = int(labels.max().clamp(min=-1)) + 1
    out[unknown] = top + torch.arange(int(unknown.sum()), device=labels.device)
    return out


class NewWhaleAware(nn.Module):
    """Applies the registered new_whale treatment before calling the loss."""

    def __init__(self, loss: nn.Module, mode: str):
        super().__init__()
        self.loss, self.mode = loss, mode

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.mode == "unique":
            labels = unique_negatives(labels)
        elif self.mode == "drop":
            known = labels >= 0
            if not known.all():
                embeddings, labels = embeddings[known], labels[known]
            if len(labels) == 0:
                return embeddings.sum().detach() * 0  # nothing to learn from: the loop skips the step
        return self.loss(embeddings, labels)


class WeightedSum(nn.Module):
    """Several losses on the same embeddings, e.g. BCE over the hardest classes + triplet."""

    def __init__(self, terms: list[nn.Module], weights: list[float]):
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.weights = [float(w) for w in weights]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = None
        for term, weight in zip(self.terms, self.weights):
            value = weight * term(embeddings, labels)
            total = value if total is None else total + value
        return total


class SliceLosses(nn.Module):
    """Divide and conquer (Sanakoyeu et al., CVPR 2019): the embedding is cut into K slices; a batch drawn
    from data cluster k trains slice k with that slice's own loss. A batch of group -1 trains the whole
    embedding (the optional fine-tuning at the end)."""

    takes_groups = True

    def __init__(self, slices: list[nn.Module], whole: nn.Module, slice_dim: int):
        super().__init__()
        self.slices, self.whole, self.slice_dim = nn.ModuleList(slices), whole, int(slice_dim)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        group = int(groups[0]) if len(groups) else -1
        if group < 0:
            return self.whole(embeddings, labels)
        part = embeddings[:, group * self.slice_dim:(group + 1) * self.slice_dim]
        return self.slices[group](part, labels)


def _single(loss_cfg: dict, num_classes: int, embedding_dim: int, class_counts: np.ndarray) -> nn.Module:
    name = loss_cfg["name"]
    if name == "sum":
        terms = loss_cfg.get("terms") or []
        if not terms:
            raise PipelineError("loss 'sum' needs loss.terms: a list of {name, weight, ...}", "loss.terms")
        built, weights = [], []
        for i, term in enumerate(terms):
            term = dict(term)
            weights.append(term.pop("weight", 1.0))
            sub = copy.deepcopy(loss_cfg)
            sub["terms"] = []
            for key, value in term.items():
                if key not in sub:
                    raise PipelineError(f"unknown key {key!r} in loss term {i}", "loss.terms")
                sub[key] = value
            if sub["name"] == "sum":
                raise PipelineError(f"loss term {i} cannot itself be a sum", "loss.terms")
            built.append(_single(sub, num_classes, embedding_dim, class_counts))
        return WeightedSum(built, weights)
    if name not in LOSSES:
        raise PipelineError(f"unknown loss {name!r}; available: {', '.join(sorted([*LOSSES, 'sum']))}", "loss.name")
    entry = LOSSES[name]
    return NewWhaleAware(entry.build(loss_cfg, num_classes, embedding_dim, class_counts), entry.new_whale)


def build_loss(cfg: dict, num_classes: int, embedding_dim: int, class_counts=None) -> nn.Module:
    """The loss of `cfg['loss']` (split into slices when `cfg['divide']['clusters'] > 1`).
    class_counts: photos per class (for margins that depend on class size); ones when not given."""
    counts = np.ones(num_classes) if class_counts is None else np.asarray(class_counts, dtype=float)
    clusters = int(cfg.get("divide", {}).get("clusters", 1))
    if clusters <= 1:
        return _single(cfg["loss"], num_classes, embedding_dim, counts)
    if embedding_dim % clusters:
        raise PipelineError(f"model.embedding_dim {embedding_dim} does not split into {clusters} equal slices",
                            "divide.clusters")
    slice_dim = embedding_dim // clusters
    return SliceLosses([_single(cfg["loss"], num_classes, slice_dim, counts) for _ in range(clusters)],
                       _single(cfg["loss"], num_classes, embedding_dim, counts), slice_dim)
