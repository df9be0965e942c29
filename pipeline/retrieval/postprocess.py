"""One contract for what re-scores a search's shortlist (DESIGN.md, "The shape to grow into"):

    processor.process(table, context) -> table

`table` is the search's per-whale scores (Image, Id, score); `context` (SearchContext) holds what a
re-scorer may read: the gallery, the query and gallery vectors after augmentation, the neighbour
similarities and rows, and the queries' own features by kind (`query_features["local"]`: their
local descriptors). Each re-scorer is one class registered by name; `knn.postprocess` lists the order
they run in, and each runs when its own switch (`knn.<name>`) is on. A new re-scorer is one module
that registers itself plus its config keys; the retriever, knn, identify, the catalogue and the
ensemble need no change.

Registered here: `verify` (the siamese verification head, verification.py) and `local` (local-feature
matching, local_features.py). k-reciprocal re-ranking, DBA and query expansion change neighbours, not a
shortlist, and stay before aggregation (rerank.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

POSTPROCESSORS: dict[str, type] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        POSTPROCESSORS[name] = cls
        return cls
    return add


@dataclass
class SearchContext:
    gallery: object  # retriever.Gallery
    names: np.ndarray  # query names
    queries: np.ndarray  # query vectors (after query expansion)
    vectors: np.ndarray  # gallery vectors (after database-side augmentation)
    sims: np.ndarray | None  # neighbour similarities, queries x k (None with centroid aggregation)
    idx: np.ndarray | None  # neighbour gallery rows
    query_features: dict = field(default_factory=dict)  # kind -> one entry per query
    options: dict = field(default_factory=dict)  # index options; raw_local for the knn stage's calibration


def build(knn_cfg: dict, seed: int, descriptors=None) -> list:
    """The enabled re-scorers, in knn.postprocess order."""
    order = list(knn_cfg.get("postprocess", ["verify", "local"]))
    unknown = [n for n in order if n not in POSTPROCESSORS]
    if unknown:
        raise PipelineError(f"unknown post-processor {unknown[0]!r}; registered: {', '.join(POSTPROCESSORS)}",
                            "knn.postprocess")
    return [POSTPROCESSORS[n](knn_cfg, seed, descriptors) for n in order if knn_cfg.get(n)]


@register("verify")
class VerificationHead:
    """P(right whale) from a small MLP trained once per gallery on leave-one-out pairs (verification.py)."""

    def __init__(self, cfg: dict, seed: int, descriptors=None):
        self.cfg, self.seed = cfg, seed
        if cfg["aggregation"] != "max":
            raise PipelineError("the verification head re-scores photo neighbours: use aggregation max", "knn.verify")
        self.heads: dict = {}  # gallery -> its head

    def process(self, table: pd.DataFrame, ctx: SearchContext) -> pd.DataFrame:
        from pipeline.retrieval.verification import fit_head, rescore

        gallery = ctx.gallery
        if gallery not in self.heads:
            self.heads[gallery] = fit_head(ctx.vectors, gallery.ids, gallery.negatives, self.cfg, ctx.options["index"],
                                           self.seed)
        return rescore(self.heads[gallery], ctx.queries, ctx.names, ctx.vectors, gallery.ids, ctx.sims, ctx.idx,
                       table, self.cfg)


@register("local")
class LocalMatching:
    """Local-feature evidence for each query's shortlist (local_features.LocalMatcher)."""

    def __init__(self, cfg: dict, seed: int, descriptors=None):
        from pipeline.retrieval.local_features import LocalMatcher

        self.matcher = LocalMatcher(descriptors, cfg)

    def process(self, table: pd.DataFrame, ctx: SearchContext) -> pd.DataFrame:
        features = ctx.query_features.get("local")
        if features is None:
            raise PipelineError("knn.local needs the query photos' local descriptors", "knn.local")
        return self.matcher.rescore(table, features, ctx.names, ctx.vectors, ctx.queries, ctx.gallery,
                                    raw=bool(ctx.options.get("raw_local")))
