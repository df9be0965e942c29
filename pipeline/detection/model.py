"""Box regression: a timm backbone's pooled features -> (x0, y0, x1, y1) as fractions of the photo's
width and height (so a photo stretched to a square input keeps its box), trained with L1 + GIoU."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.net import InputAdapter, default_cfg


class BoxRegressor(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        self.spec = dict(spec)
        cfg = default_cfg(spec["backbone"])
        self.input = InputAdapter(cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)))
        self.backbone = timm.create_model(spec["backbone"], pretrained=bool(spec.get("pretrained", False)),
                                          num_classes=0)
        self.head = nn.Linear(self.backbone.num_features, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x S x S -> N x 4 boxes (x0, y0, x1, y1) in [0, 1], x0 <= x1, y0 <= y1."""
        raw = torch.sigmoid(self.head(self.backbone(self.input(x))))
        x0, x1 = torch.minimum(raw[:, 0], raw[:, 2]), torch.maximum(raw[:, 0], raw[:, 2])
        y0, y1 = torch.minimum(raw[:, 1], raw[:, 3]), torch.maximum(raw[:, 1], raw[:, 3])
        return torch.stack([x0, y0, x1, y1], dim=1)


def _area(box: torch.Tensor) -> torch.Tensor:
    return (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(IoU, union, area of the smallest enclosing box) of matching rows of two N x 4 box tensors."""
    ix0, iy0 = torch.maximum(a[:, 0], b[:, 0]), torch.maximum(a[:, 1], b[:, 1])
    ix1, iy1 = torch.minimum(a[:, 2], b[:, 2]), torch.minimum(a[:, 3], b[:, 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    union = _area(a) + _area(b) - inter
    hull = (torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])) * \
           (torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1]))
    return inter / union.clamp(min=1e-9), union, hull


def box_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on the coordinates plus the generalised IoU loss (Rezatofighi et al. 2019):
    GIoU = IoU - (enclosing area - union) / enclosing area."""
    iou, union, hull = box_iou(pred, target)
    giou = iou - (hull - union) / hull.clamp(min=1e-9)
    return F.l1_loss(pred, target) + (1 - giou).mean()
