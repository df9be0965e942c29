"""A local weights file (.pth, .bin, .safetensors) in timm's layout or the architecture's original one,
read without unpickling and converted by timm's own checkpoint_filter_fn for the architecture."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.backbone import is_classifier, timm_backbone
from pipeline.models.weights import SOURCES

log = logging.getLogger(__name__)


@SOURCES.register("file")
class LocalFile:
    def load(self, spec: dict, argument: str) -> nn.Module:
        path = Path(argument)
        if not path.is_file():
            raise PipelineError("local weights file not found", path)
        model = timm_backbone(spec)
        state = read_weights(path, model)
        load_checked(model, state, spec["architecture"], path)
        return model


def read_weights(path: Path, model: nn.Module) -> dict:
    """The file as the backbone's state dict: weights_only, timm's conversion, classifier dropped."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as e:
        raise PipelineError(f"cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        try:
            state = convert(state, model)
        except Exception as e:  # the architecture's converter chokes on another model's tensors
            raise PipelineError(f"timm cannot convert the file for {type(model).__name__} ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]}); is it that architecture's weights?", path) from None
    own = model.state_dict()
    return {k: v for k, v in state.items() if k in own or not is_classifier(k, model)}


def check_shapes(state: dict, model: nn.Module, architecture: str, path) -> None:
    """load_state_dict(strict=False) still raises on a shape mismatch; name the file and the tensors."""
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        shown = "; ".join(f"{k} is {list(a)} in the file, {list(b)} in the model" for k, a, b in wrong[:3])
        raise PipelineError(f"{len(wrong)} tensor(s) have another shape than {architecture}'s ({shown}); "
                            "are these weights of another width or variant?", path)


def load_checked(model: nn.Module, state: dict, architecture: str, path) -> None:
    """Every tensor of the backbone from `state`, shapes checked; extra tensors are only logged."""
    check_shapes(state, model, architecture, path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise PipelineError(f"{len(missing)} of {architecture}'s tensors are not in the file "
                            f"(first: {missing[0]}); is it that architecture's weights?", path)
    if unexpected:
        log.warning("%s: %d tensor(s) not used by %s (first: %s)", path, len(unexpected), architecture, unexpected[0])
