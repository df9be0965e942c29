"""The siamese verification head: pairs mined as the retriever meets them (leave one out), the
shortlist's features recomputed by hand, symmetric embedding features, it learns to tell the right whale
from look-alikes, its probability is calibrated on new photos, and through the retriever its scores are
probabilities."""
import numpy as np
import pytest
import torch

from pipeline import columns as C
from pipeline.config import DEFAULTS
from pipeline.retrieval.index import search
from pipeline.retrieval.retriever import Gallery, Retriever
from pipeline.retrieval.verification import (RETRIEVAL_FEATURES, VerificationHead, fit_head, leave_one_out,
                                             mine_pairs, shortlist)

OPTIONS = {"kind": "flat", "nlist": None, "nprobe": 16, "seed": 0}
CFG = {**DEFAULTS["knn"], "local": False, "verify": True, "verify_epochs": 30}


def whales(rng, n_whales=30, per_whale=4, dim=16, noise=0.6):
    centres = rng.normal(size=(n_whales, dim))
    ids = np.repeat([f"w{i}" for i in range(n_whales)], per_whale)
    x = np.repeat(centres, per_whale, axis=0) + noise * rng.normal(size=(len(ids), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids, centres


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_shortlist_features_by_hand():
    # One query, neighbours (best first) of whales 0, 1, 0, 2, 0, 1: top 2 whales, 2 photos each.
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], dtype=np.float32)
    idx = np.array([[10, 11, 12, 13, 14, 15]])
    codes = np.zeros(16, dtype=np.int64)
    codes[[10, 12, 14]], codes[[11, 15]], codes[13] = 0, 1, 2
    q, code, best, stats = shortlist(sims, idx, codes, top=2, per_whale=2)
    assert q.tolist() == [0, 0] and code.tolist() == [0, 1] and best.tolist() == [10, 11]
    expected = [[0.9, 0.8, 0.0, 0.0, 1.0],  # whale 0: photos 0.9 and 0.7, rank 0, both found
                [0.8, 0.6, 0.1, np.log1p(1), 1.0]]  # whale 1: photos 0.8 and 0.4, rank 1
    assert stats.shape == (2, RETRIEVAL_FEATURES)
    assert np.allclose(stats, expected, atol=1e-6)


def test_leave_one_out_drops_each_photo_itself_only():
    rng = np.random.default_rng(0)
    x, _, _ = whales(rng, 6, 3)
    sims, idx = leave_one_out(x, 5, OPTIONS)
    assert idx.shape == (len(x), 5)
    assert not (idx == np.arange(len(x))[:, None]).any()
    full_sims, full_idx = search(x, x, 6, **OPTIONS)
    assert np.allclose(sims, full_sims[:, 1:], atol=1e-6)  # the rest keep their order
    assert (np.sort(sims, axis=1)[:, ::-1] == sims).all()


def test_pairs_are_mined_as_the_retriever_meets_them():
    rng = np.random.default_rng(0)
    x, ids, _ = whales(rng, 8, 3)
    negatives = unit(x[:2] + 0.01)
    pairs = mine_pairs(x, ids, negatives, CFG, OPTIONS)
    q, photo, label = pairs["query"], pairs["photo"], pairs["label"]
    known = q < len(x)
    # A left-out photo's candidate is right exactly when the candidate's best photo shows its whale.
    assert ((ids[q[known]] == ids[photo[known]]) == (label[known] == 1)).all()
    assert (photo[known] != q[known]).all()  # never the photo itself
    assert (label[~known] == 0).all()  # new_whale queries: every candidate wrong
    # Each query meets min(verify_top, whales) candidates, each a different whale.
    per_query = np.bincount(q)
    assert (per_query == min(CFG["verify_top"], 8)).all() and len(per_query) == len(x) + 2
    for i in range(len(x) + 2):
        assert len(set(ids[photo[q == i]])) == per_query[i]
    # Every photo's own whale (two more photos in the gallery) is among its 8 candidates: one right each.
    assert label[known].sum() == len(x)


def test_embedding_features_are_symmetric():
    head = VerificationHead(4, 8, "embedding")
    a, b, stats = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, RETRIEVAL_FEATURES)
    assert torch.allclose(head(a, b, stats), head(b, a, stats))
    retrieval_only = VerificationHead(4, 8, "retrieval")
    assert torch.allclose(retrieval_only(a, b, stats), retrieval_only(torch.randn(5, 4), b, stats))


def test_unknown_features_are_refused():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="knn.verify_features"):
        VerificationHead(4, 8, "pixels")


def new_photos(centres, per_whale, seed, noise=0.6):
    x = np.repeat(centres, per_whale, axis=0) + noise * np.random.default_rng(seed).normal(size=(len(centres) * per_whale, centres.shape[1]))
    return unit(x)


def verified(x, ids, centres, queries_per_whale=3, seed=5, features="both"):
    """(probability of each query's top whales, whether each is right) for new photos of the whales."""
    gallery = Gallery(x, ids, np.array([f"g{i}" for i in range(len(x))]))
    queries = new_photos(centres, queries_per_whale, seed)
    truth = np.repeat([f"w{i}" for i in range(len(centres))], queries_per_whale)
    names = np.array([f"q{i}" for i in range(len(queries))])
    scores = Retriever({**CFG, "verify_features": features}).search(gallery, queries, names).scores
    right = scores[C.ID].to_numpy() == truth[scores[C.IMAGE].str[1:].astype(int).to_numpy()]
    return scores[C.SCORE].to_numpy(float), right


@pytest.mark.parametrize("features", ["both", "retrieval"])
def test_the_head_tells_the_right_whale_from_look_alikes(features):
    rng = np.random.default_rng(1)
    x, ids, centres = whales(rng)
    p, right = verified(x, ids, centres, features=features)
    assert p[right].mean() > p[~right].mean() + 0.3, (p[right].mean(), p[~right].mean())


def test_its_probability_is_calibrated_on_new_photos():
    # Mined as the retriever meets pairs, the head's mean probability matches the share of right
    # candidates among new photos' shortlists, and is far from the 0.5 of a balanced pair sample.
    rng = np.random.default_rng(1)
    x, ids, centres = whales(rng, n_whales=40, per_whale=5)
    p, right = verified(x, ids, centres, queries_per_whale=4)
    assert abs(p.mean() - right.mean()) < 0.05, (p.mean(), right.mean())
    brier = np.mean((p - right) ** 2)
    assert brier < np.mean((right.mean() - right) ** 2)  # better than the base rate alone


def test_the_retriever_gives_verified_probabilities_for_the_top_whales():
    rng = np.random.default_rng(4)
    x, ids, centres = whales(rng)
    gallery = Gallery(x, ids, np.array([f"g{i}" for i in range(len(x))]))
    queries = unit(centres[:10] + 0.6 * rng.normal(size=(10, 16)))
    names = [f"q{i}" for i in range(10)]
    retriever = Retriever(CFG)
    scores = retriever.search(gallery, queries, names).scores
    assert scores[C.SCORE].between(0, 1).all()
    assert (scores.groupby(C.IMAGE).size() == CFG["verify_top"]).all()
    top1 = scores.sort_values(C.SCORE, ascending=False).drop_duplicates(C.IMAGE).set_index(C.IMAGE)[C.ID]
    assert (top1.reindex(names).to_numpy() == np.array([f"w{i}" for i in range(10)])).mean() >= 0.8
    assert len(retriever.postprocessors[0].heads) == 1  # trained once per gallery, reused by later searches
    retriever.search(gallery, queries, names)
    assert len(retriever.postprocessors[0].heads) == 1


def test_a_gallery_without_a_second_photo_is_refused():
    from pipeline.errors import PipelineError

    x, ids, _ = whales(np.random.default_rng(0), 10, 1)
    with pytest.raises(PipelineError, match="knn.verify: .*two or more photos"):
        fit_head(x, ids, None, CFG, OPTIONS)


def test_verification_needs_photo_neighbours():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="knn.verify: .*aggregation max"):
        Retriever({**CFG, "aggregation": "centroid"})
