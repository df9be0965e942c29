"""The optimiser's parameter groups: a learning rate per part, and no weight decay where it only hurts.

Fine-tuning a pretrained backbone under a new neck and loss follows timm's optimizer factory:
  - `train.backbone_lr_multiplier` scales the backbone's learning rate against `train.lr`, which the
    new parts (pooling, neck) take; the loss's own parameters take `train.lr * loss.lr_multiplier`;
  - `train.no_decay`: norms, biases, other 1-D or scalar parameters and the tables the backbone names
    in its `no_weight_decay()` (position embeddings, class token, Swin's relative position biases)
    get no weight decay; decaying them pulls them towards zero for no regularising gain.
With the defaults (multiplier 1, no_decay off) there are two groups, the network's and the loss's
(empty for a loss without parameters), as in checkpoints written before these settings.
"""
from __future__ import annotations

from fnmatch import fnmatch

import torch
from torch import nn


def exempt_from_decay(name: str, param: torch.Tensor, patterns: set[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or any(fnmatch(name, p) for p in patterns)


def _split(named, weight_decay: float, no_decay: bool, patterns: set[str], lr: float, part: str) -> list[dict]:
    named = [(n, p) for n, p in named if p.requires_grad]
    if not no_decay:  # one group, even an empty one (a loss without parameters), as before these settings
        return [{"params": [p for _, p in named], "lr": lr, "weight_decay": weight_decay, "part": part}]
    exempt = [p for n, p in named if exempt_from_decay(n, p, patterns)]
    decayed = [p for n, p in named if not exempt_from_decay(n, p, patterns)]
    groups = []
    if decayed:
        groups.append({"params": decayed, "lr": lr, "weight_decay": weight_decay, "part": part})
    if exempt:
        groups.append({"params": exempt, "lr": lr, "weight_decay": 0.0, "part": part + " (no decay)"})
    return groups


def parameter_groups(model: nn.Module, loss: nn.Module, train_cfg: dict, loss_lr_multiplier: float) -> list[dict]:
    lr, decay = float(train_cfg["lr"]), float(train_cfg["weight_decay"])
    no_decay, multiplier = bool(train_cfg["no_decay"]), float(train_cfg["backbone_lr_multiplier"])
    backbone = getattr(model, "backbone", None)
    patterns = set(getattr(backbone, "no_weight_decay", lambda: ())()) if backbone is not None else set()
    patterns = {f"backbone.{p}" for p in patterns}
    loss_lr = lr * float(loss_lr_multiplier)
    if multiplier == 1.0 or backbone is None:
        groups = _split(model.named_parameters(), decay, no_decay, patterns, lr, "network")
    else:
        own = [(n, p) for n, p in model.named_parameters() if n.startswith("backbone.")]
        rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("backbone.")]
        groups = (_split(own, decay, no_decay, patterns, lr * multiplier, "backbone")
                  + _split(rest, decay, no_decay, patterns, lr, "neck"))
    return groups + _split(loss.named_parameters(), decay, no_decay, set(), loss_lr, "loss")


def build_optimizer(model: nn.Module, loss: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    groups = parameter_groups(model, loss, cfg["train"], float(cfg["loss"]["lr_multiplier"]))
    return torch.optim.AdamW(groups, weight_decay=float(cfg["train"]["weight_decay"]))
