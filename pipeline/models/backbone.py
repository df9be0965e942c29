"""A headless timm backbone built from a network spec, with random weights or timm's own hub weights;
every other weight source loads into the random one (models/weights)."""
from __future__ import annotations

import timm
from torch import nn

from pipeline.errors import PipelineError


def timm_backbone(spec: dict, hub: bool = False) -> nn.Module:
    """timm backbone without classifier; `hub`: timm downloads its pretrained weights for spec["backbone"]
    (a timm name or an hf-hub address), else spec["architecture"] is built with random weights."""
    name = spec["backbone"] if hub else spec["architecture"]
    kwargs = dict(spec["backbone_args"])
    if spec["img_size"] is not None:
        kwargs["img_size"] = tuple(spec["img_size"])
    try:
        return timm.create_model(name, pretrained=hub, num_classes=0, **kwargs)
    except RuntimeError as e:  # timm raises RuntimeError for an unknown model name
        raise PipelineError(f"{e}", "model.backbone") from None
    except (TypeError, AssertionError, ValueError) as e:  # a backbone_args or img_size the model rejects
        raise PipelineError(f"timm cannot build {name!r} with {kwargs}: {e}", "model.backbone_args") from None
    except OSError as e:  # hub unreachable: offline machines load a local file or a package instead
        raise PipelineError(f"cannot fetch {name!r} ({str(e).splitlines()[0][:200]}); offline, set "
                            "model.weights to file:PATH (a downloaded weights file) or package:NAME "
                            "(an installed weights package)", "model.weights") from None


def is_classifier(key: str, model: nn.Module) -> bool:
    """A key of the backbone's ImageNet classifier (dropped: the backbone is headless)."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return any(key == n or key.startswith(n + ".") for n in names)
