"""A timm backbone, GeM pooling and a linear + batch-norm embedding neck."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError


class GeM(nn.Module):
    """Generalised mean pooling (Radenović et al.): p=1 is average pooling, p→∞ max pooling; p is learned."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class EmbeddingNet(nn.Module):
    def __init__(self, backbone: str, embedding_dim: int, pretrained: bool = False,
                 pretrained_path: str | None = None, gem_p: float = 3.0, dropout: float = 0.0,
                 neck_norm: str = "batch"):
        super().__init__()
        kwargs = {}
        if pretrained_path:
            if not Path(pretrained_path).is_file():
                raise PipelineError("local weights file not found", pretrained_path)
            # timm loads the file instead of fetching from its hub: works offline.
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_path)}
            pretrained = True
        try:
            self.backbone = timm.create_model(backbone, pretrained=pretrained, num_classes=0,
                                              global_pool="", **kwargs)
        except RuntimeError as e:  # timm raises RuntimeError for an unknown model name
            raise PipelineError(f"{e}", "model.backbone") from None
        self.pool = GeM(gem_p)
        self.dropout = nn.Dropout(dropout)
        self.neck = nn.Linear(self.backbone.num_features, embedding_dim)
        # Batch norm is the usual neck; layer norm has no batch statistics, so DDP on the CPU (where
        # SyncBatchNorm is unavailable) takes exactly the steps of a single process.
        norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
        if neck_norm not in norms:
            raise PipelineError(f"unknown neck_norm {neck_norm!r}; use one of {', '.join(norms)}", "model.neck_norm")
        self.bn = norms[neck_norm](embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw embedding (the losses normalise where they need to)."""
        features = self.backbone.forward_features(x)
        return self.bn(self.neck(self.dropout(self.pool(features))))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(x).float(), dim=1)


def build_model(cfg: dict) -> EmbeddingNet:
    m = cfg["model"]
    return EmbeddingNet(m["backbone"], int(m["embedding_dim"]), bool(m["pretrained"]), m["pretrained_path"],
                        float(m["gem_p"]), float(m["dropout"]), m["neck_norm"])
