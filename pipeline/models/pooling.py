"""Pooling (`model.pool`): what turns a backbone's forward_features output into one vector per photo,
one registered entry per name (the config names it; an unknown name is the registry's error).

Each entry has `resolve(probe)`, the concrete pool a backbone takes (decided once, from one probe
forward, and recorded in the network's spec; it raises where the pool cannot read those features),
and `module(spec)`, the layer it adds after forward_features (None: the backbone's own head up to its
pre-logits, forward_head(pre_logits=True)). Its parameters are saved as `pool.*` in checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.registry import Registry

POOLS = Registry("pool", "model.pool")


class GeM(nn.Module):
    """Generalised mean pooling (Radenović et al.): p=1 is average pooling, p→∞ max pooling; p is learned."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


@dataclass(frozen=True)
class Probe:
    """What one forward of noise through the backbone shows: the shape of forward_features' output
    (past the batch), and whether it is an N x C x H x W map whose own head is its spatial mean."""
    architecture: str
    features: tuple
    plain_map: bool


@POOLS.register("gem")
class GeMPool:
    """GeM over an N x C x H x W map whose backbone head is a plain average (ResNet, EfficientNet, ...)."""

    @staticmethod
    def resolve(probe: Probe) -> str:
        if not probe.plain_map:
            raise PipelineError(f"{probe.architecture}'s features are {probe.features} with its own head on top; "
                                "GeM needs a plain N x C x H x W map: use pool: auto or backbone", "model.pool")
        return "gem"

    @staticmethod
    def module(spec: dict) -> nn.Module:
        return GeM(float(spec["gem_p"]))


@POOLS.register("backbone")
class BackbonePool:
    """The backbone's own head up to its pre-logits (a ViT's class token and final norm, a Swin's
    channels-last average, a ConvNeXt's average and LayerNorm)."""

    @staticmethod
    def resolve(probe: Probe) -> str:
        return "backbone"

    @staticmethod
    def module(spec: dict) -> None:
        return None


@POOLS.register("auto")
class AutoPool:
    """`gem` where it is a faithful generalisation of the backbone's head, `backbone` everywhere else."""

    @staticmethod
    def resolve(probe: Probe) -> str:
        return POOLS.get("gem" if probe.plain_map else "backbone").resolve(probe)

    @staticmethod
    def module(spec: dict) -> None:
        return None  # a spec the probe has not resolved: the backbone's own head, as it always was
