"""Backbone + pooling + embedding neck."""
from pipeline.models.net import EmbeddingNet, build_model  # noqa: F401
