"""The embedding network: any timm backbone, pooled as its own output layout requires, and an optional
linear + norm embedding neck.

    raw cache photo (uint8, N x 3 x H x W) -> InputAdapter (resize to the backbone's input size,
    normalise with its mean/std) -> backbone.forward_features -> pooling -> [neck] -> embedding

Pooling (`model.pool`, the POOLS registry of models/pooling.py): `gem` (generalised mean) needs an
N x C x H x W map whose backbone head is a plain average (ResNet, EfficientNet, ...); `backbone` uses
the backbone's own head up to its pre-logits (a ViT's class token and final norm, a Swin's
channels-last average, a ConvNeXt's average and LayerNorm); `auto` (default) takes `gem` where it is a
faithful generalisation of the backbone's head and `backbone` everywhere else. It is decided once,
from one probe forward, and recorded.

Everything needed to rebuild the network is its `spec` (plain values), saved in every checkpoint:
`from_spec` never reads or downloads pretrained weights, so a trained model is self-sufficient.
"""
from __future__ import annotations

import copy
import math
import logging

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.backbone import timm_backbone
from pipeline.models.pooling import POOLS, GeM, Probe  # noqa: F401 (GeM: its old home)
from pipeline.models.weights import describe, load_backbone

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class InputAdapter(nn.Module):
    """Cache pixels (uint8 or float on 0..255) to the backbone's own input: resized to `size` when it
    is set and differs, then normalised with the backbone's mean and std. Runs on the model's device,
    so the data loader only moves uint8 (a quarter of the bytes of float32)."""

    def __init__(self, mean, std, size=None):
        super().__init__()
        self.size = None if size is None else (int(size[0]), int(size[1]))
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        # Not persistent: the spec holds them; old checkpoints then load unchanged.
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return x * self.scale - self.shift


def default_cfg(backbone: str) -> dict:
    """timm's pretrained config for a backbone name (architecture, input size, mean, std,
    fixed_input_size, and an hf-hub model's own constructor arguments as `model_args`); {} when timm
    has none. An hf-hub name reads the hub's config.json (online only)."""
    if backbone.startswith("hf-hub:"):
        from timm.models._hub import load_model_config_from_hf

        try:
            pretrained_cfg, architecture, model_args = load_model_config_from_hf(backbone[len("hf-hub:"):])
        except Exception as e:  # offline, or no such repository
            raise PipelineError(f"cannot read {backbone}'s config ({type(e).__name__}); offline, set model.backbone "
                                "to its timm architecture and model.pretrained_path to a downloaded weights file",
                                "model.backbone") from None
        return {**pretrained_cfg, "architecture": architecture, "model_args": dict(model_args or {})}
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # an unknown name is reported by create_model, with timm's own message
        return {}
    return cfg.to_dict() if cfg is not None else {}


class EmbeddingNet(nn.Module):
    def __init__(self, spec: dict, backbone: nn.Module | None = None):
        super().__init__()
        self.spec = copy.deepcopy(spec)
        self.input = InputAdapter(spec["mean"], spec["std"], spec["input_size"])
        self.backbone = backbone if backbone is not None else timm_backbone(spec)
        self.pool_kind = spec["pool"]
        self.pool = POOLS.get(self.pool_kind).module(spec)  # None: the backbone's own head
        self.dropout = nn.Dropout(float(spec["dropout"]))
        if spec["neck"]:
            self.neck = nn.Linear(int(spec["feature_dim"]), int(spec["embedding_dim"]))
            # Batch norm is the usual neck; layer norm has no batch statistics, so DDP on the CPU (where
            # SyncBatchNorm is unavailable) takes exactly the steps of a single process.
            norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
            if spec["neck_norm"] not in norms:
                raise PipelineError(f"unknown neck_norm {spec['neck_norm']!r}; use one of {', '.join(norms)}",
                                    "model.neck_norm")
            self.bn = norms[spec["neck_norm"]](int(spec["embedding_dim"]))
        else:  # zero-shot: the backbone's own pooled features are the embedding
            self.neck, self.bn = nn.Identity(), nn.Identity()
        self.embedding_dim = int(spec["embedding_dim"]) if spec["neck"] else int(spec["feature_dim"])
        # model.centre: the training photos' mean pooled feature, set by the zero-shot fit; saved with the weights.
        self.register_buffer("centre", torch.zeros(int(spec["feature_dim"])) if spec.get("centre") else None)

    @classmethod
    def from_spec(cls, spec: dict) -> "EmbeddingNet":
        """The network of a checkpoint, with random weights: never reads pretrained weights."""
        return cls(spec)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of cache photos (before dropout and neck)."""
        features = self.backbone.forward_features(self.input(x))
        if self.pool is not None:
            return self.pool(features)
        return self.backbone.forward_head(features, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw embedding (the losses normalise where they need to)."""
        return self.from_pooled(self.pooled(x))

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The raw embedding of pooled features (what embed applies to features shared by folds)."""
        if self.centre is not None:
            pooled = pooled - self.centre
        return self.bn(self.neck(self.dropout(pooled)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(x).float(), dim=1)


def resolve_spec(model_cfg: dict) -> dict:
    """The network's spec from the `model` config section: timm's defaults for the architecture filled
    in (input size, mean, std), everything plain values."""
    m = model_cfg
    POOLS.get(m["pool"])  # an unknown pool: the registry's error, naming those there are
    defaults = default_cfg(m["backbone"])
    fixed = bool(defaults.get("fixed_input_size", False))
    size = m["input_size"]
    if size is None and fixed:
        size = list(defaults["input_size"][1:])  # a transformer's own input size
    return {
        "backbone": m["backbone"],
        # What from_spec builds: timm's architecture name, never a hub address.
        "architecture": defaults.get("architecture") or m["backbone"],
        "backbone_args": {**defaults.get("model_args", {}), **dict(m["backbone_args"] or {})},
        # A transformer is built for its input size (timm resamples position embeddings to it).
        "img_size": [int(v) for v in size] if size is not None and fixed else None,
        "input_size": None if size is None else [int(v) for v in size],
        "mean": [float(v) for v in (m["mean"] or defaults.get("mean") or IMAGENET_MEAN)],
        "std": [float(v) for v in (m["std"] or defaults.get("std") or IMAGENET_STD)],
        "pool": m["pool"], "gem_p": float(m["gem_p"]), "dropout": float(m["dropout"]),
        "neck": bool(m["neck"]), "neck_norm": m["neck_norm"], "embedding_dim": int(m["embedding_dim"]),
        "centre": bool(m["centre"]),
        "feature_dim": None,  # set by the probe
    }


@torch.no_grad()
def _probe(backbone: nn.Module, spec: dict, cache_hw) -> tuple[str, int]:
    """(pool, feature dim): the pool the configured one resolves to for these features (auto: GeM where
    they are an N x C x H x W map whose backbone head is a plain spatial mean, so GeM generalises it,
    else the backbone's own head)."""
    hw = spec["input_size"] or cache_hw or [64, 64]
    was_training = backbone.training
    backbone.eval()
    noise = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    x = InputAdapter(spec["mean"], spec["std"])(noise * 255)
    features = backbone.forward_features(x)
    own = backbone.forward_head(features, pre_logits=True)
    backbone.train(was_training)
    plain_map = (features.ndim == 4 and features.shape[1] == own.shape[1]
                 and torch.allclose(features.mean(dim=(2, 3)), own, atol=1e-5, rtol=1e-4))
    pool = POOLS.get(spec["pool"]).resolve(Probe(spec["architecture"], tuple(features.shape[1:]), bool(plain_map)))
    return pool, int(own.shape[1])


def build_model(cfg: dict, cache_hw=None) -> EmbeddingNet:
    """A new network for training (or zero-shot embedding), its backbone starting from the weights
    `model.weights` names (models/weights: timm's hub, a local file, an installed package), or random."""
    m = cfg["model"]
    spec = resolve_spec(m)
    backbone = load_backbone(spec, m)
    spec["weights"] = describe(m)  # for the record only: from_spec never reads it
    spec["pool"], spec["feature_dim"] = _probe(backbone, spec, cache_hw)
    return EmbeddingNet(spec, backbone)


def set_grad_checkpointing(net: nn.Module, enabled: bool) -> None:
    """model.grad_checkpointing: the backbone recomputes its blocks' activations in the backward pass
    (timm's own switch); a training-time memory lever, not part of the network's spec."""
    if not enabled:
        return
    backbone = getattr(net, "backbone", None)
    try:
        backbone.set_grad_checkpointing(True)
    except (AttributeError, AssertionError, NotImplementedError) as e:
        name = getattr(net, "spec", {}).get("architecture", type(backbone).__name__)
        raise PipelineError(f"{name} has no gradient checkpointing in timm ({type(e).__name__}: {e})",
                            "model.grad_checkpointing") from None


class SnapshotEnsemble(nn.Module):
    """The snapshots of one training run (train.snapshots) as one network: each snapshot's
    L2-normalised embedding, concatenated and divided by sqrt(n), so the dot product of two such
    vectors is the mean of the snapshots' cosines. embed, identify and the web page use it as any net."""

    def __init__(self, nets: list[EmbeddingNet]):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.spec = nets[-1].spec
        self.embedding_dim = sum(n.embedding_dim for n in nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [F.normalize(net(x).float(), dim=1) for net in self.nets]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))


def model_from_checkpoint(state: dict, snapshots: bool = True) -> nn.Module:
    """The trained network of a checkpoint (final.pt or last.pt): rebuilt from its spec, weights loaded;
    pretrained weights are never read again. A run with snapshots gives their SnapshotEnsemble (the
    final weights last), unless `snapshots` is false (resuming trains the current weights alone)."""
    spec = state.get("network")
    if spec is None:  # written before specs existed: GeM and ImageNet's normalisation, no pretrained read
        cfg = copy.deepcopy(state["config"])
        cfg["model"].update(pretrained=False, pretrained_path=None, pool="gem", mean=IMAGENET_MEAN, std=IMAGENET_STD)
        net = build_model(cfg)
    else:
        net = EmbeddingNet.from_spec(spec)
    net.load_state_dict(state["model"])
    if not (snapshots and state.get("snapshots")):
        return net
    earlier = []
    for weights in state["snapshots"]:
        earlier.append(EmbeddingNet.from_spec(net.spec))
        earlier[-1].load_state_dict(weights)
    return SnapshotEnsemble(earlier + [net])
