"""Coupled clusters loss (Liu et al., "Deep relative distance learning", CVPR 2016).

pytorch-metric-learning does not have it. Per class in the batch: its photos' centre c; the negative
n* nearest to c; each positive p pays 0.5 * max(0, |p - c|^2 + margin - |n* - c|^2). Embeddings are
L2-normalised first (retrieval compares cosine similarities). new_whale photos (label < 0) are
negatives only: they form no cluster.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses.registry import register


class CoupledClustersLoss(nn.Module):
    def __init__(self, margin: float):
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.normalize(embeddings, dim=1)
        terms = []
        for label in torch.unique(labels):
            if label < 0:
                continue
            own = labels == label
            if own.all():
                continue  # no negative in the batch to push away
            positives, negatives = x[own], x[~own]
            centre = positives.mean(dim=0)
            pos_d = ((positives - centre) ** 2).sum(dim=1)
            neg_d = ((negatives - centre) ** 2).sum(dim=1).min()
            terms.append(0.5 * F.relu(pos_d + self.margin - neg_d))
        if not terms:
            return embeddings.sum().detach() * 0
        return torch.cat(terms).mean()


@register("coupled_clusters", new_whale="native")
def coupled_clusters(loss_cfg, num_classes, embedding_dim, class_counts):
    return CoupledClustersLoss(float(loss_cfg["margin"]))
