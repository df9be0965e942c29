"""NormFace (Wang et al., ACM MM 2017): softmax over the cosines between the L2-normalised embedding and
L2-normalised class weights, times a scale s that is *learned* with the network (the paper's point:
a fixed small scale cannot reach a low loss, a hand-set large one must be tuned). `normsoftmax` is the
fixed-temperature variant from pytorch-metric-learning; this one starts at loss.scale and learns it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses.registry import register


class NormFace(nn.Module):
    def __init__(self, num_classes: int, embedding_dim: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scale * self.cosines(embeddings), labels)


@register("normface", new_whale="drop")
def normface(loss_cfg, num_classes, embedding_dim, class_counts):
    return NormFace(num_classes, embedding_dim, float(loss_cfg["scale"]))
