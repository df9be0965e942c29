"""A head trained on cached frozen features: what fine-tuning from ImageNet weights can afford on a CPU.

The pretrained backbone runs once per cached photo and once per mirror image, for all folds together
(models/pooled_cache.py); the embedding neck (linear + norm) and the loss's own parameters (ArcFace's
class centres) then learn from those pooled features for `train.head_epochs` epochs, thousands of steps
in the seconds one backbone step costs. The backbone keeps everything it knew. Training the whole
network afterwards (`train.epochs`, the backbone at `train.backbone_lr_multiplier`) starts from this
neck instead of a random one, so its first steps do not tear down the features.

The features are standardised per channel for the fit (the optimiser sees a well-conditioned problem)
and the standardisation is folded into the linear layer afterwards: the network keeps its shape, and
a checkpoint loads as any other.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.training.loop import lr_factor

log = logging.getLogger(__name__)


def frozen_features(model, cache, rows: np.ndarray, flipped: np.ndarray, batch_size: int, device) -> torch.Tensor:
    """The backbone's pooled features of each training item (mirrored where `flipped`), from the
    features every fold shares (models/pooled_cache.py)."""
    from pipeline.models.pooled_cache import pooled_features

    features = pooled_features(model, cache, batch_size, device)
    return torch.from_numpy(np.asarray(features[np.asarray(flipped, dtype=int), np.asarray(rows)])).to(device)


def fit_head(model, loss: nn.Module, features: torch.Tensor, labels: np.ndarray, cfg: dict, seed: int) -> dict:
    """Train model.neck and model.bn (and the loss's parameters) on `features`; returns a log row."""
    t = cfg["train"]
    epochs, batch = int(t["head_epochs"]), int(t["head_batch_size"])
    if not isinstance(model.neck, nn.Linear):
        raise PipelineError("train.head_epochs trains the embedding neck: set model.neck: true", "train.head_epochs")
    labels = torch.as_tensor(np.array(labels), dtype=torch.long)
    keep = labels >= 0
    x, y = features[keep], labels[keep].to(features.device)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    lr = float(t["head_lr"])
    params = [{"params": list(model.neck.parameters()) + list(model.bn.parameters()), "lr": lr},
              {"params": list(loss.parameters()), "lr": lr * float(cfg["loss"]["lr_multiplier"])}]
    optimizer = torch.optim.AdamW([g for g in params if g["params"]], weight_decay=float(t["weight_decay"]))
    bases = [g["lr"] for g in optimizer.param_groups]
    steps, step, started = epochs * math.ceil(len(x) / batch), 0, time.monotonic()
    model.neck.train(), model.bn.train(), loss.train()
    total = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total, count = 0.0, 0
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            if len(idx) < 2:  # batch norm needs two rows
                continue
            for group, base in zip(optimizer.param_groups, bases):  # cosine to 1% over the head's steps
                group["lr"] = base * lr_factor(step / steps, 0.0)
            value = loss(model.bn(model.neck(x[idx])), y[idx])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            step += 1
            total, count = total + float(value.detach()), count + 1
    fold_standardisation(model.neck, mean, std)
    seconds = time.monotonic() - started
    log.info("%d epochs, %d steps on %d frozen features in %.0fs, loss %.4f", epochs, step, len(x), seconds,
             total / max(1, count))
    return {"head_epochs": epochs, "head_steps": step, "head_loss": round(total / max(1, count), 6),
            "head_seconds": round(seconds, 1)}


@torch.no_grad()
def fold_standardisation(linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """W((x - mean) / std) + b == (W / std) x + (b - (W / std) mean): the same map on raw features."""
    weight = linear.weight / std.to(linear.weight)
    linear.bias.sub_(weight @ mean.to(weight))
    linear.weight.copy_(weight)
