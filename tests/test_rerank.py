"""Re-ranking post-processors, each recomputed by hand (dense, straight from the papers)."""
import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.config import DEFAULTS
from pipeline.retrieval.rerank import k_reciprocal_similarity
from pipeline.retrieval.retriever import Gallery, Retriever

OPTIONS = {"kind": "flat", "nlist": None, "nprobe": 16, "seed": 0}


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scores(gallery, ids, queries, **knn):
    result = Retriever({**DEFAULTS["knn"], "local": False, "neighbours": len(ids), "keep_top": 50, **knn}).search(
        Gallery(gallery, ids, ids), queries, [f"q{i}" for i in range(len(queries))])
    return result.scores


def best_per_whale(sims, ids):
    return pd.Series(sims).groupby(ids).max().sort_values(ascending=False)


def test_alpha_query_expansion_by_hand():
    rng = np.random.default_rng(0)
    gallery, queries = unit(rng, 12, 5), unit(rng, 3, 5)
    ids = np.array([f"w{i % 4}" for i in range(12)])
    got = scores(gallery, ids, queries, qe_k=3, qe_alpha=2.0)
    for q in range(3):
        sims = gallery @ queries[q]
        top = np.argsort(-sims)[:3]
        expanded = queries[q] + sum(max(sims[j], 0) ** 2 * gallery[j] for j in top)
        expanded /= np.linalg.norm(expanded)
        expected = best_per_whale(gallery @ expanded, ids)
        mine = got[got[C.IMAGE] == f"q{q}"].set_index(C.ID)[C.SCORE]
        np.testing.assert_allclose(mine[expected.index].to_numpy(), expected.to_numpy(), atol=1e-5)


def test_database_side_augmentation_by_hand():
    rng = np.random.default_rng(1)
    gallery, queries = unit(rng, 10, 4), unit(rng, 2, 4)
    ids = np.array([f"w{i % 3}" for i in range(10)])
    got = scores(gallery, ids, queries, dba_k=3, qe_alpha=1.0)
    sims = gallery @ gallery.T
    augmented = np.stack([sum(max(sims[i, j], 0) * gallery[j] for j in np.argsort(-sims[i])[:3]) for i in range(10)])
    augmented /= np.linalg.norm(augmented, axis=1, keepdims=True)
    for q in range(2):
        expected = best_per_whale(augmented @ queries[q], ids)
        mine = got[got[C.IMAGE] == f"q{q}"].set_index(C.ID)[C.SCORE]
        np.testing.assert_allclose(mine[expected.index].to_numpy(), expected.to_numpy(), atol=1e-5)


def dense_k_reciprocal(queries, gallery, k1, k2, lam):
    """Zhong et al.'s re-ranking written out densely over all probe and gallery points."""
    x = np.vstack([queries, gallery]).astype(np.float64)
    n = len(x)
    dist = 2 - 2 * x @ x.T
    rank = np.argsort(dist, axis=1, kind="stable")
    v = np.zeros((n, n))
    half = k1 // 2
    for i in range(n):
        forward = rank[i, :k1 + 1]
        r = [j for j in forward if i in rank[j, :k1 + 1]]
        expanded = set(r)
        for j in r:
            cand = [m for m in rank[j, :half + 1] if j in rank[m, :half + 1]]
            if len(set(cand) & set(r)) > 2 / 3 * len(cand):
                expanded |= set(cand)
        e = sorted(expanded)
        w = np.exp(-dist[i, e])
        v[i, e] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    nq = len(queries)
    out = np.zeros((nq, len(gallery)))
    for q in range(nq):
        for g in range(len(gallery)):
            shared = np.minimum(v[q], v[nq + g]).sum()
            union = np.maximum(v[q], v[nq + g]).sum()
            d = (1 - lam) * (1 - shared / union) + lam * dist[q, nq + g]
            out[q, g] = 1 - d / 2
    return out


def test_k_reciprocal_matches_the_dense_algorithm():
    rng = np.random.default_rng(2)
    centres = unit(rng, 5, 8)
    gallery = centres[rng.integers(0, 5, 30)] + 0.3 * unit(rng, 30, 8)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = centres[rng.integers(0, 5, 6)] + 0.3 * unit(rng, 6, 8)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gallery, queries = gallery.astype(np.float32), queries.astype(np.float32)
    candidates = np.tile(np.arange(30), (6, 1))
    got = k_reciprocal_similarity(queries, gallery, candidates, 6, 3, 0.3, OPTIONS)
    expected = dense_k_reciprocal(queries, gallery, 6, 3, 0.3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_k_reciprocal_with_lambda_one_is_the_plain_cosine():
    rng = np.random.default_rng(3)
    gallery, queries = unit(rng, 20, 6), unit(rng, 4, 6)
    ids = np.array([f"w{i % 7}" for i in range(20)])
    plain = scores(gallery, ids, queries)
    reranked = scores(gallery, ids, queries, rerank="kreciprocal", k1=5, k2=2, **{"lambda": 1.0})
    merged = plain.merge(reranked, on=[C.IMAGE, C.ID])
    np.testing.assert_allclose(merged[f"{C.SCORE}_x"], merged[f"{C.SCORE}_y"], atol=1e-5)


def test_unknown_reranker_is_refused():
    from pipeline.errors import PipelineError

    rng = np.random.default_rng(4)
    with pytest.raises(PipelineError, match="knn.rerank: unknown rerank 'magic'"):
        scores(unit(rng, 5, 3), np.array(["a"] * 5), unit(rng, 1, 3), rerank="magic")
