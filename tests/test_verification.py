"""The siamese verification head: pairs mined as documented, symmetric pair features, it learns to tell
same-whale pairs from look-alikes, and through the retriever its scores are probabilities."""
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import columns as C
from pipeline.config import DEFAULTS
from pipeline.retrieval.retriever import Gallery, Retriever
from pipeline.retrieval.verification import VerificationHead, fit_head, mine_pairs

OPTIONS = {"kind": "flat", "nlist": None, "nprobe": 16, "seed": 0}
CFG = {**DEFAULTS["knn"], "local": False, "verify": True, "verify_epochs": 30}


def whales(rng, n_whales=30, per_whale=4, dim=16, noise=0.6):
    centres = rng.normal(size=(n_whales, dim))
    ids = np.repeat([f"w{i}" for i in range(n_whales)], per_whale)
    x = np.repeat(centres, per_whale, axis=0) + noise * rng.normal(size=(len(ids), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids, centres


def test_pairs_are_mined_as_documented():
    rng = np.random.default_rng(0)
    x, ids, _ = whales(rng, 8, 3)
    negatives = x[:2] + 0.01
    a, b, y = mine_pairs(x, ids, negatives / np.linalg.norm(negatives, axis=1, keepdims=True), CFG, OPTIONS, rng)
    known = a < len(x)
    assert ((ids[a[known]] == ids[b[known]]) == (y[known] == 1)).all()  # positives: same whale, and only they
    assert (y[~known] == 0).all() and (~known).sum() == 2 * min(len(x), CFG["verify_negatives"])
    assert (a != b).all()


def test_pair_features_are_symmetric():
    head = VerificationHead(4, 8)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(head(a, b), head(b, a))


def test_the_head_tells_same_whale_pairs_from_look_alikes():
    rng = np.random.default_rng(1)
    x, ids, centres = whales(rng)
    head = fit_head(x, ids, None, CFG, OPTIONS, seed=0)
    # New photos of the same whales: same-whale pairs must score above pairs with the nearest other whale.
    probe, _, _ = whales(np.random.default_rng(2), noise=0.6)
    probe = (np.repeat(centres, 4, axis=0) + 0.6 * np.random.default_rng(3).normal(size=x.shape)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    same = head.probability(probe, x)
    sims = probe @ x.T
    sims[ids[:, None] == ids[None, :]] = -np.inf
    other = head.probability(probe, x[sims.argmax(axis=1)])
    assert same.mean() > other.mean() + 0.2, (same.mean(), other.mean())


def test_the_retriever_gives_verified_probabilities_for_the_top_whales():
    rng = np.random.default_rng(4)
    x, ids, centres = whales(rng)
    gallery = Gallery(x, ids, np.array([f"g{i}" for i in range(len(x))]))
    queries = (centres[:10] + 0.6 * rng.normal(size=(10, 16))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    names = [f"q{i}" for i in range(10)]
    retriever = Retriever(CFG)
    scores = retriever.search(gallery, queries, names).scores
    assert scores[C.SCORE].between(0, 1).all()
    assert (scores.groupby(C.IMAGE).size() <= CFG["verify_top"]).all()
    top1 = scores.sort_values(C.SCORE, ascending=False).drop_duplicates(C.IMAGE).set_index(C.IMAGE)[C.ID]
    assert (top1.reindex(names).to_numpy() == np.array([f"w{i}" for i in range(10)])).mean() >= 0.8
    assert len(retriever._heads) == 1  # trained once per gallery, reused by later searches
    retriever.search(gallery, queries, names)
    assert len(retriever._heads) == 1


def test_verification_needs_photo_neighbours():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="knn.verify: .*aggregation max"):
        Retriever({**CFG, "aggregation": "centroid"})
