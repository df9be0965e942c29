"""The contract of what re-scores a search's shortlist (DESIGN.md, "The shape to grow into"):

    processor.process(result, context) -> result

`result` is a RetrievalResult (retrieval/result.py: per query the candidate whales and their scores,
best first, checked and immutable); a re-scorer returns a new one (`result.rescored(table)`).
`context` (SearchContext) holds what a re-scorer may read: the gallery, the query and gallery vectors
after augmentation, the neighbour similarities and rows, and the queries' own features by kind. A
re-scorer that reads per-query features declares them, so the search and its callers name none of it:

    reads = "local"                  the kind of feature, context.query_features[reads]
    feature_key                      which variant (local: the keypoints), shared by re-scorers alike
    photo_features(photos)           the features of photos given as pixels (identify, the catalogue)
    cached_features(names, split)    the features of photos of the work folder's cache (knn)

Each re-scorer is one module of this package that registers its class by name; `knn.postprocess` lists
the order they run in, and each runs when its own switch (`knn.<name>`) is on.

What acts before the whales are scored is not a re-scorer of this kind and stays in retrieval/rerank.py's
own registries: database-side augmentation and query expansion change the vectors that are searched,
k-reciprocal re-ranking the neighbour graph (it can bring in whales the first scoring did not keep,
and the verification head and the candidates' photos read the re-ranked neighbours)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.registry import Registry

POSTPROCESSORS = Registry("post-processor", "knn.postprocess")


def register(name: str):
    """Registers a re-scorer class under `name` (its switch is knn.<name>)."""
    def add(cls):
        cls.name = name
        return POSTPROCESSORS.register(name)(cls)
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
    options: dict = field(default_factory=dict)  # index options


def build(knn_cfg: dict, seed: int, descriptors=None) -> list:
    """The enabled re-scorers, in knn.postprocess order."""
    order = list(knn_cfg.get("postprocess", ["verify", "local"]))
    for name in order:
        POSTPROCESSORS.get(name)  # an unknown name is refused before anything runs
    return [POSTPROCESSORS.get(n)(knn_cfg, seed, descriptors) for n in order if knn_cfg.get(n)]
