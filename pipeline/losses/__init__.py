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


def _pair_miner(loss_cfg: dict):
    from pytorch_metric_learning import miners

    kind = loss_cfg["miner"]
    if kind == "all":  # batch-all: every valid pair or triplet in the batch
        return None
    if kind == "batch_hard":  # Hermans et al.: the hardest positive and negative per anchor
        return miners.BatchHardMiner()
    if kind == "semihard":  # FaceNet: negatives farther than the positive but inside the margin
        return miners.TripletMarginMiner(margin=float(loss_cfg["margin"]), type_of_triplets="semihard")
    raise PipelineError(f"unknown miner {kind!r}; use batch_hard, semihard or all", "loss.miner")


@register("triplet")
def _triplet(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    return MinedLoss(losses.TripletMarginLoss(margin=float(loss_cfg["margin"])), _pair_miner(loss_cfg))


@register("contrastive")
def _contrastive(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    # Positives pulled together, negatives pushed beyond the margin (Hadsell et al.).
    return MinedLoss(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=float(loss_cfg["margin"])),
                     _pair_miner(loss_cfg))


@register("npair")
def _npair(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    return MinedLoss(losses.NPairsLoss())


@register("margin")
def _margin(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses, miners

    # Wu et al.: a learned boundary beta per class, pairs drawn by distance-weighted sampling.
    return MinedLoss(losses.MarginLoss(margin=float(loss_cfg["margin"]), beta=float(loss_cfg["beta"]),
                                       learn_beta=True, num_classes=num_classes),
                     miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4))


@register("normsoftmax")
def _normsoftmax(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    return losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                        temperature=float(loss_cfg["temperature"]))


@register("cosface")
def _cosface(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    return losses.CosFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                              margin=float(loss_cfg["margin"]), scale=float(loss_cfg["scale"]))


@register("sphereface")
def _sphereface(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    return losses.SphereFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                 margin=int(loss_cfg["sphere_margin"]), scale=float(loss_cfg["scale"]))


@register("subcenter_arcface")
def _subcenter_arcface(loss_cfg: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    from pytorch_metric_learning import losses

    return losses.SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                       margin=math.degrees(float(loss_cfg["margin"])), scale=float(loss_cfg["scale"]),
                                       sub_centers=int(loss_cfg["sub_centers"]))
