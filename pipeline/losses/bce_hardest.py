"""Binary cross-entropy over the hardest classes, after the humpback competition's winning solutions.

A cosine classifier scores every whale; per photo the loss averages BCE over its own class (target 1)
and the `hard_classes` other classes that score highest (target 0), so the thousands of easy
negatives do not drown the signal. A new_whale photo (label < 0) has no class: all its targets are 0,
which teaches the classifier to give unknown whales low scores. Combine it with triplet through
loss.name: sum.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses.registry import register


class HardestClassesBCE(nn.Module):
    def __init__(self, num_classes: int, embedding_dim: int, hard_classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.bias = nn.Parameter(torch.zeros(1))
        self.hard, self.scale = int(hard_classes), float(scale)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * (F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T) + self.bias

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.logits(embeddings)
        known = labels >= 0
        targets = torch.zeros_like(logits)
        targets[known, labels[known]] = 1.0
        # The hardest negatives: highest-scoring classes once each photo's own class is masked out.
        negatives = logits.detach().masked_fill(targets.bool(), float("-inf"))
        k = min(self.hard, logits.shape[1] - 1) if logits.shape[1] > 1 else 0
        hard = negatives.topk(k, dim=1).indices if k > 0 else logits.new_zeros((len(logits), 0), dtype=torch.long)
        neg_loss = F.binary_cross_entropy_with_logits(logits.gather(1, hard), torch.zeros_like(hard, dtype=logits.dtype),
                                                      reduction="sum")
        pos_loss = F.binary_cross_entropy_with_logits(logits[known, labels[known]],
                                                      torch.ones(int(known.sum()), device=logits.device),
                                                      reduction="sum")
        count = hard.numel() + int(known.sum())
        return (neg_loss + pos_loss) / max(1, count)


@register("bce_hardest", new_whale="native")
def bce_hardest(loss_cfg, num_classes, embedding_dim, class_counts):
    return HardestClassesBCE(num_classes, embedding_dim, int(loss_cfg["hard_classes"]), float(loss_cfg["scale"]))
