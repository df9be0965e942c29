"""timm's hub: timm downloads the weights for model.backbone (a timm name or an hf-hub: address)."""
from __future__ import annotations

from pipeline.models.backbone import timm_backbone
from pipeline.models.weights import SOURCES


@SOURCES.register("timm")
class TimmHub:
    def load(self, spec: dict, argument: str):
        return timm_backbone(spec, hub=True)


@SOURCES.register("hf-hub")
class HuggingFaceHub:
    """hf-hub:ORG/NAME: a timm model published on the Hugging Face hub; model.backbone names its timm
    architecture or the same hf-hub address."""

    def load(self, spec: dict, argument: str):
        return timm_backbone({**spec, "backbone": f"hf-hub:{argument}"}, hub=True)
