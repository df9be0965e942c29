"""Cosine search with faiss (inner product on L2-normalised vectors); on a GPU when faiss sees one.

`flat` is exact and right for Kaggle-sized galleries (25k photos). For millions of gallery photos,
`ivf` (inverted lists: k-means cells, `nprobe` of them searched per query) or `hnsw` (a navigable
graph) trade a little recall for much less search time; make bench reports IVF's recall and speed-up.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from pipeline.errors import PipelineError
from pipeline.registry import Registry

try:
    import faiss
except ImportError:  # neither extra installed
    raise PipelineError("faiss is not installed: pip install -e '.[cpu]' (or '.[gpu]' on a CUDA machine)",
                        "pyproject.toml") from None

log = logging.getLogger(__name__)
# knn.index: name -> builder(gallery, d, nlist, nprobe, hnsw_m, ef_search, seed) -> an untrained-or-trained
# faiss index, before the gallery is added.
INDEX_KINDS = Registry("index", "knn.index")


@INDEX_KINDS.register("flat")
def flat_index(gallery, d, nlist, nprobe, hnsw_m, ef_search, seed):
    return faiss.IndexFlatIP(d)


@INDEX_KINDS.register("ivf")
def ivf_index(gallery, d, nlist, nprobe, hnsw_m, ef_search, seed):
    nlist = int(nlist or max(1, min(len(gallery) // 39, round(4 * math.sqrt(len(gallery))))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    # k-means on a sample: faiss's rule of thumb is 39-256 points per cell.
    sample = gallery if len(gallery) <= 64 * nlist else \
        gallery[np.random.default_rng(seed).choice(len(gallery), 64 * nlist, replace=False)]
    index.train(sample)
    index.nprobe = min(int(nprobe), nlist)
    return index


@INDEX_KINDS.register("hnsw")
def hnsw_index(gallery, d, nlist, nprobe, hnsw_m, ef_search, seed):
    index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = int(ef_search)
    return index


def gpu_available() -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def check_embeddings(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim != 2:
        raise PipelineError(f"embeddings must be a 2-D array, got shape {x.shape}", what)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise PipelineError(f"{int(bad.sum())} embedding row(s) hold NaN or Inf (first: row {int(np.argmax(bad))})",
                            what)
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(gallery: np.ndarray, kind: str = "flat", nlist: int | None = None, nprobe: int = 16,
                hnsw_m: int = 32, ef_search: int = 128, seed: int = 0) -> faiss.Index:
    index = INDEX_KINDS.get(kind)(gallery, gallery.shape[1], nlist, nprobe, hnsw_m, ef_search, seed)
    if gpu_available() and kind != "hnsw":  # faiss has no GPU HNSW
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(gallery)
    return index


def search(gallery: np.ndarray, queries: np.ndarray, k: int, kind: str = "flat", **options) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, gallery indices), each queries x k, best first (-1 pads when fewer are found)."""
    k = min(int(k), len(gallery))
    return build_index(gallery, kind, **options).search(queries, k)
