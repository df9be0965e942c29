"""Post-processing of a search, each switched on by config keys under `knn` (off by default):

- database-side augmentation (DBA, `dba_k`): each gallery vector becomes the similarity-weighted mean
  of its dba_k nearest gallery vectors (itself included), so a whale's photos move towards each other;
- alpha query expansion (αQE, Radenović et al., `qe_k`, `qe_alpha`): each query becomes the weighted
  mean of itself and its qe_k nearest gallery vectors, weights similarity ** qe_alpha;
- k-reciprocal re-ranking (Zhong et al., CVPR 2017, `rerank: kreciprocal`, `k1`, `k2`, `lambda`):
  the distance between a query and a gallery photo mixes the original distance with the Jaccard
  distance of their (expanded) k-reciprocal neighbour sets over queries and gallery together.

Re-ranked similarities replace the cosines before the per-whale scores are taken, so the new_whale
policy is fitted and applied on the re-ranked scale alike.

Both kinds are registered here (AUGMENTATIONS, RERANKERS), not among the re-scorers of
retrieval/postprocess/: those take a search's result (per-whale scores) and give one back, while these
act before there is one. DBA and query expansion change the vectors that are searched; k-reciprocal
re-ranking changes the neighbour graph, which can bring in whales the first scoring did not keep and
which the verification head and the candidates' photos then read.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipeline.registry import Registry
from pipeline.retrieval.index import search

# knn.rerank: name -> rescorer(gallery, queries, sims, idx, cfg, options) -> (sims, idx), best first.
RERANKERS = Registry("rerank", "knn.rerank")


@RERANKERS.register("none")
def no_rerank(gallery, queries, sims, idx, cfg, options):
    return sims, idx


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(1e-12, np.linalg.norm(x, axis=1, keepdims=True))).astype(np.float32)


def _weighted_neighbours(base: np.ndarray, points: np.ndarray, k: int, alpha: float, options: dict) -> np.ndarray:
    """sum over the k nearest base vectors of sim ** alpha * vector (negative sims count as zero)."""
    sims, idx = search(base, points, k, **options)
    weights = (np.clip(sims, 0, None) ** alpha * (idx >= 0)).astype(np.float32)
    out = np.empty((len(points), base.shape[1]), dtype=np.float32)
    for start in range(0, len(points), 2048):  # bounded memory: 2048 x k x dim at a time
        part = slice(start, start + 2048)
        out[part] = np.einsum("qk,qkd->qd", weights[part], base[np.maximum(idx[part], 0)])
    return out


# Embedding augmentations: name -> augment(gallery, queries, cfg, options) -> (gallery, queries); each
# leaves the vectors as they are (the same arrays) unless its own keys switch it on.
AUGMENTATIONS = Registry("embedding augmentation")
AUGMENT_ORDER = ("dba", "qe")  # DBA first: query expansion averages over the augmented gallery


@AUGMENTATIONS.register("dba")
def database_augmentation(gallery, queries, cfg, options):
    if int(cfg["dba_k"]) > 1:
        gallery = _normalise(_weighted_neighbours(gallery, gallery, int(cfg["dba_k"]), float(cfg["qe_alpha"]), options))
    return gallery, queries


@AUGMENTATIONS.register("qe")
def query_expansion(gallery, queries, cfg, options):
    if int(cfg["qe_k"]) > 0 and len(queries):
        expanded = queries + _weighted_neighbours(gallery, queries, int(cfg["qe_k"]), float(cfg["qe_alpha"]), options)
        queries = _normalise(expanded)
    return gallery, queries


def augment(gallery: np.ndarray, queries: np.ndarray, cfg: dict, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, queries) after DBA and αQE, as configured."""
    for name in AUGMENT_ORDER:
        gallery, queries = AUGMENTATIONS.get(name)(gallery, queries, cfg, options)
    return gallery, queries


def rescore(gallery: np.ndarray, queries: np.ndarray, sims: np.ndarray, idx: np.ndarray, cfg: dict,
            options: dict) -> tuple[np.ndarray, np.ndarray]:
    """The candidates (idx) of each query with re-ranked similarities, best first (knn.rerank)."""
    rerank = RERANKERS.get(cfg["rerank"])
    if len(queries) == 0:
        return sims, idx
    return rerank(gallery, queries, sims, idx, cfg, options)


@RERANKERS.register("kreciprocal")
def kreciprocal(gallery, queries, sims, idx, cfg, options):
    """k-reciprocal re-ranking (Zhong et al. 2017) of each query's neighbours."""
    new = k_reciprocal_similarity(queries, gallery, idx, int(cfg["k1"]), int(cfg["k2"]), float(cfg["lambda"]),
                                  options)
    new = np.where(idx >= 0, new, -np.inf)
    order = np.argsort(-new, axis=1, kind="stable")
    return np.take_along_axis(new, order, axis=1).astype(np.float32), np.take_along_axis(idx, order, axis=1)


def reciprocal_weights(points: np.ndarray, k1: int, k2: int, options: dict) -> sp.csr_matrix:
    """Row i: the weights exp(-d(i, j)) over i's expanded k-reciprocal set (summing to one), averaged
    over i's k2 nearest neighbours (local query expansion). d is the squared distance 2 - 2 cos."""
    n = len(points)
    k1 = min(k1, n - 1)
    _, near = search(points, points, k1 + 1, **options)
    half = max(1, k1 // 2)
    member = [set(row.tolist()) for row in near]
    member_half = [set(row[:half + 1].tolist()) for row in near]

    def reciprocal(i: int, k_sets: list[set], row: np.ndarray) -> list[int]:
        return [j for j in row if j >= 0 and i in k_sets[j]]

    rows, cols, vals = [], [], []
    for i in range(n):
        base = reciprocal(i, member, near[i])
        expanded = set(base)
        for j in base:
            candidate = reciprocal(j, member_half, near[j][:half + 1])
            if len(set(candidate) & set(base)) > 2 / 3 * len(candidate):
                expanded.update(candidate)
        js = np.fromiter(expanded, dtype=np.int64)
        w = np.exp(-(2 - 2 * points[js] @ points[i]))
        rows += [i] * len(js)
        cols += js.tolist()
        vals += (w / w.sum()).tolist()
    weights = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    if k2 > 1:
        spread = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2), near[:, :k2].ravel())),
                               shape=(n, n))
        weights = (spread @ weights).tocsr()
    return weights


def k_reciprocal_similarity(queries: np.ndarray, gallery: np.ndarray, candidates: np.ndarray, k1: int, k2: int,
                            lam: float, options: dict, chunk: int = 2048) -> np.ndarray:
    """Re-ranked similarity 1 - d*/2 of each query to each of its candidate gallery photos, where
    d* = (1 - lam) * Jaccard distance + lam * (2 - 2 cos)."""
    points = np.ascontiguousarray(np.vstack([queries, gallery]), dtype=np.float32)
    weights = reciprocal_weights(points, k1, k2, options)
    nq, k = candidates.shape
    out = np.empty((nq, k), dtype=np.float64)
    for start in range(0, nq, max(1, chunk // max(1, k))):
        stop = min(nq, start + max(1, chunk // max(1, k)))
        q = np.repeat(np.arange(start, stop), k)
        g = len(queries) + np.maximum(candidates[start:stop].ravel(), 0)
        shared = np.asarray(weights[q].minimum(weights[g]).sum(axis=1)).ravel()
        jaccard = 1 - shared / np.maximum(1e-12, 2 - shared)  # rows sum to one: sum(max) = 2 - sum(min)
        cosine = np.einsum("ij,ij->i", points[q], points[g])
        out[start:stop] = (1 - ((1 - lam) * jaccard + lam * (2 - 2 * cosine)) / 2).reshape(-1, k)
    return out
