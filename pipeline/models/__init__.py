"""Backbone + pooling + embedding neck."""
from pipeline.models import colour_histogram  # noqa: F401  (registers the training-free backbone with timm)
from pipeline.models.net import EmbeddingNet, build_model  # noqa: F401
