"""Sub-center ArcFace with dynamic margins (Ha et al., Google Landmark Recognition 2020, 1st place).

Each class has `sub_centers` weight vectors and a sample's cosine to a class is its best sub-center's.
The margin shrinks with class size: m_c = m_min + (m_max - m_min) * (w_c - min w) / (max w - min w),
w_c = n_c ** -power. Rare whales (few photos, noisy centres) get the large margin. pytorch-metric-
learning's sub-center ArcFace has one fixed margin, hence this module.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.losses.registry import register


def dynamic_margins(class_counts, m_min: float, m_max: float, power: float) -> np.ndarray:
    w = np.asarray(class_counts, dtype=np.float64) ** -float(power)
    spread = w.max() - w.min()
    if spread <= 0:  # every class the same size: the large margin for all
        return np.full(len(w), float(m_max))
    return m_min + (m_max - m_min) * (w - w.min()) / spread


class DynamicSubCenterArcFace(nn.Module):
    def __init__(self, num_classes: int, embedding_dim: int, margins: np.ndarray, scale: float, sub_centers: int):
        super().__init__()
        self.k, self.scale = int(sub_centers), float(scale)
        self.weight = nn.Parameter(torch.randn(num_classes * self.k, embedding_dim) * 0.01)
        self.register_buffer("margins", torch.as_tensor(margins, dtype=torch.float32))

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T
        return cos.view(len(embeddings), -1, self.k).amax(dim=2)  # best sub-center per class

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        rows = torch.arange(len(labels), device=labels.device)
        theta = torch.acos(cos[rows, labels])
        target = torch.cos(theta + self.margins[labels])
        logits = cos.clone()
        logits[rows, labels] = target
        return F.cross_entropy(self.scale * logits, labels)


@register("dynamic_subcenter_arcface", new_whale="drop")
def dynamic_subcenter_arcface(loss_cfg, num_classes, embedding_dim, class_counts):
    margins = dynamic_margins(class_counts, float(loss_cfg["margin_min"]), float(loss_cfg["margin"]),
                              float(loss_cfg["margin_power"]))
    return DynamicSubCenterArcFace(num_classes, embedding_dim, margins, float(loss_cfg["scale"]),
                                   int(loss_cfg["sub_centers"]))
