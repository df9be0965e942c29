"""Exact cosine search with faiss (inner product on L2-normalised vectors); on a GPU when faiss sees one."""
from __future__ import annotations

import logging

import faiss
import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


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


def search(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, gallery indices), each queries x k, best first."""
    k = min(int(k), len(gallery))
    index = faiss.IndexFlatIP(gallery.shape[1])
    if gpu_available():
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(gallery)
    return index.search(queries, k)
