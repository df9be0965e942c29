"""A registry of losses by name: `build_loss(cfg, num_classes, embedding_dim)`.

Every loss is an nn.Module called as loss(embeddings, labels); losses with class weights (ArcFace and
its kin) own them, so the optimiser and the checkpoint must include the loss's parameters.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import nn

from pipeline.errors import PipelineError

LOSSES: dict[str, Callable[[dict, int, int], nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        LOSSES[name] = fn
        return fn
    return wrap


def build_loss(cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    name = cfg["loss"]["name"]
    if name not in LOSSES:
        raise PipelineError(f"unknown loss {name!r}; available: {', '.join(sorted(LOSSES))}", "loss.name")
    return LOSSES[name](cfg["loss"], num_classes, embedding_dim)


@register("arcface")
def _arcface(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning.losses import ArcFaceLoss

    # pytorch-metric-learning takes the angular margin in degrees.
    return ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                       margin=math.degrees(float(loss_cfg["margin"])), scale=float(loss_cfg["scale"]))


class MinedLoss(nn.Module):
    """A pair/triplet loss from pytorch-metric-learning fed by a miner (both optional to combine)."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings, labels):
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)


@register("triplet")
def _triplet(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses, miners

    # Batch-hard mining (Hermans et al.): the hardest positive and negative for every anchor.
    return MinedLoss(losses.TripletMarginLoss(margin=float(loss_cfg["margin"])),
                     miners.BatchHardMiner())
