"""The losses and miners that pytorch-metric-learning already has, registered by name."""
from __future__ import annotations

import math

from torch import nn

from pipeline.errors import PipelineError
from pipeline.losses.registry import register


class MinedLoss(nn.Module):
    """A pair/triplet loss fed by a miner (no miner: every pair or triplet in the batch)."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings, labels):
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)


def pair_miner(loss_cfg: dict):
    from pytorch_metric_learning import miners

    kind = loss_cfg["miner"]
    if kind == "all":  # batch-all: every valid pair or triplet in the batch
        return None
    if kind == "batch_hard":  # Hermans et al.: the hardest positive and negative per anchor
        return miners.BatchHardMiner()
    if kind == "semihard":  # FaceNet: negatives farther than the positive but inside the margin
        return miners.TripletMarginMiner(margin=float(loss_cfg["margin"]), type_of_triplets="semihard")
    raise PipelineError(f"unknown miner {kind!r}; use batch_hard, semihard or all", "loss.miner")


@register("triplet", new_whale="unique")
def triplet(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    return MinedLoss(losses.TripletMarginLoss(margin=float(loss_cfg["margin"])), pair_miner(loss_cfg))


@register("contrastive", new_whale="unique")
def contrastive(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    # Positives pulled together, negatives pushed beyond the margin (Hadsell et al.).
    return MinedLoss(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=float(loss_cfg["margin"])),
                     pair_miner(loss_cfg))


@register("npair", new_whale="unique")
def npair(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    # Sohn's multi-class N-pair loss; pair it with sampler.hard_classes for hard negative class mining.
    return MinedLoss(losses.NPairsLoss())


@register("margin", new_whale="unique")
def margin(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses, miners

    # Wu et al.: a learned boundary beta, pairs drawn by distance-weighted sampling.
    return MinedLoss(losses.MarginLoss(margin=float(loss_cfg["margin"]), beta=float(loss_cfg["beta"]),
                                       learn_beta=True),
                     miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4))


@register("normsoftmax", new_whale="drop")
def normsoftmax(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    return losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                        temperature=float(loss_cfg["temperature"]))


@register("arcface", new_whale="drop")
def arcface(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning.losses import ArcFaceLoss

    # pytorch-metric-learning takes the angular margin in degrees.
    return ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                       margin=math.degrees(float(loss_cfg["margin"])), scale=float(loss_cfg["scale"]))


@register("cosface", new_whale="drop")
def cosface(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    return losses.CosFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                              margin=float(loss_cfg["margin"]), scale=float(loss_cfg["scale"]))


@register("sphereface", new_whale="drop")
def sphereface(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    return losses.SphereFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                 margin=int(loss_cfg["sphere_margin"]), scale=float(loss_cfg["scale"]))


@register("lsoftmax", new_whale="drop")
def lsoftmax(loss_cfg, num_classes, embedding_dim, class_counts):
    """L-Softmax (Liu et al., ICML 2016): SphereFace's multiplicative angular margin psi(m * theta) on
    the target logit, with unnormalised weights and embeddings (the logits keep |W| |x|)."""
    from pytorch_metric_learning import losses

    return losses.LargeMarginSoftmaxLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                         margin=int(loss_cfg["sphere_margin"]), scale=1.0)


@register("subcenter_arcface", new_whale="drop")
def subcenter_arcface(loss_cfg, num_classes, embedding_dim, class_counts):
    from pytorch_metric_learning import losses

    return losses.SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim,
                                       margin=math.degrees(float(loss_cfg["margin"])), scale=float(loss_cfg["scale"]),
                                       sub_centers=int(loss_cfg["sub_centers"]))
