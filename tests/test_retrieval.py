import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.metrics import map_at_5
from pipeline.retrieval.index import check_embeddings, search
from pipeline.config import DEFAULTS
from pipeline.retrieval.retriever import Gallery, Retriever
from pipeline.retrieval.scores import fuse
from pipeline.decision.threshold import map5_by_threshold, predict, top_whales, tune_threshold
from pipeline.errors import PipelineError


def random_unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def retriever(**knn):
    return Retriever({**DEFAULTS["knn"], "local": False, **knn})


@pytest.mark.parametrize("aggregation", ["max", "centroid"])
def test_retriever_scores_equal_brute_force_per_whale(aggregation):
    rng = np.random.default_rng(0)
    gallery, queries = random_unit(rng, 60, 8), random_unit(rng, 7, 8)
    ids = np.array([f"w_{i % 13}" for i in range(60)])
    names = [f"q{i}" for i in range(7)]
    result = retriever(neighbours=60, keep_top=50, aggregation=aggregation).search(
        Gallery(gallery, ids, np.array([f"g{i}" for i in range(60)])), queries, names, photos=2)
    brute = queries @ gallery.T
    for q in range(7):
        mine = result.scores[result.scores[C.IMAGE] == f"q{q}"]
        if aggregation == "max":
            expected = pd.Series(brute[q]).groupby(ids).max().sort_values(ascending=False)
        else:  # cosine to each whale's normalised mean embedding
            means = pd.DataFrame(gallery).groupby(ids).mean()
            means = means.div(np.linalg.norm(means.to_numpy(), axis=1), axis=0)
            expected = pd.Series(means.to_numpy() @ queries[q], index=means.index).sort_values(ascending=False)
        assert list(mine[C.ID]) == list(expected.index)
        np.testing.assert_allclose(mine[C.SCORE].to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)
        # Every candidate comes with its best gallery photos, best first.
        photos = result.photos[result.photos[C.IMAGE] == f"q{q}"]
        assert set(photos[C.ID]) == set(mine[C.ID])
        for whale, part in photos.groupby(C.ID):
            members = np.flatnonzero(ids == whale)
            best = members[np.argsort(-brute[q, members], kind="stable")][:2]
            assert list(part["photo"]) == [f"g{i}" for i in best]


def test_fuse_averages_and_fills_missing_with_query_floor():
    a = pd.DataFrame({C.IMAGE: ["q", "q"], C.ID: ["w1", "w2"], C.SCORE: [0.9, 0.5]})
    b = pd.DataFrame({C.IMAGE: ["q", "q"], C.ID: ["w2", "w3"], C.SCORE: [0.8, 0.4]})
    fused = fuse([a, b]).set_index(C.ID)[C.SCORE]
    assert fused["w1"] == pytest.approx((0.9 + 0.4) / 2)  # b's floor for q is 0.4
    assert fused["w2"] == pytest.approx((0.5 + 0.8) / 2)
    assert fused["w3"] == pytest.approx((0.5 + 0.4) / 2)


def test_vectorised_threshold_curve_matches_the_metric():
    rng = np.random.default_rng(1)
    whales = [f"w_{i}" for i in range(12)]
    rows, truths, names = [], [], []
    for q in range(80):
        names.append(f"q{q}")
        n = rng.integers(2, 9)  # some queries have fewer than five candidates
        for w, s in zip(rng.choice(whales, n, replace=False), rng.random(n)):
            rows.append((f"q{q}", w, float(s)))
        truths.append(C.NEW_WHALE if rng.random() < 0.3 else str(rng.choice(whales)))
    table = pd.DataFrame(rows, columns=[C.IMAGE, C.ID, C.SCORE])
    ids, vals = top_whales(table, names)
    fallback = ["w_fb1", "w_fb2", "w_fb3", "w_fb4", "w_fb5"]
    for t in [-1.0, 0.2, 0.5, 0.77, 2.0]:
        labels = predict(ids, vals, t, fallback)
        assert all(len(x) == 5 and len(set(x)) == 5 for x in labels)
        assert map5_by_threshold(ids, vals, truths, [t])[0] == pytest.approx(map_at_5(truths, labels))


def test_tuned_threshold_beats_the_extremes():
    # Known queries score high on their whale, new_whale queries score low: a middle threshold wins.
    names = [f"q{i}" for i in range(20)]
    rows = [(n, "w_a", 0.9 if i < 10 else 0.3) for i, n in enumerate(names)]
    truths = ["w_a"] * 10 + [C.NEW_WHALE] * 10
    ids, vals = top_whales(pd.DataFrame(rows, columns=[C.IMAGE, C.ID, C.SCORE]), names)
    t, best, curve = tune_threshold(ids, vals, truths, 51)
    assert 0.3 < t <= 0.9 and best == pytest.approx(1.0)
    assert curve["map5"].iloc[0] < 1 and curve["map5"].iloc[-1] < 1


def test_nan_embeddings_are_rejected_with_row():
    x = np.ones((4, 3), dtype=np.float32)
    x[2, 1] = np.nan
    with pytest.raises(PipelineError, match=r"emb\.npy: 1 embedding row\(s\) hold NaN or Inf \(first: row 2\)"):
        check_embeddings(x, "emb.npy")


def naive_top_whales(sims, idx, gallery_ids, keep_top):
    """The straightforward per-query loop the vectorised code replaces."""
    out = []
    for row_s, row_i in zip(sims, idx):
        best = {}
        for s, i in zip(row_s, row_i):
            if i >= 0 and gallery_ids[i] not in best:
                best[gallery_ids[i]] = float(s)
        out.append(list(best.items())[:keep_top])
    return out


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_vectorised_whale_ranking_matches_a_per_query_loop(kind):
    from pipeline.retrieval.index import search

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(600, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    ids = np.array([f"w_{i}" for i in rng.integers(0, 90, size=600)])
    queries = gallery[:40] + 0.1 * rng.normal(size=(40, 16)).astype(np.float32)
    sims, idx = search(gallery, queries, 50, kind=kind, nlist=8, nprobe=8)
    table = retriever(index=kind, nlist=8, nprobe=8, neighbours=50, keep_top=7).search(
        Gallery(gallery, ids, ids), queries, [f"q{i}" for i in range(40)]).scores
    expected = naive_top_whales(sims, idx, ids, 7)
    for i, rows in enumerate(expected):
        got = table[table["Image"] == f"q{i}"]
        assert list(got["Id"]) == [w for w, _ in rows]
        assert np.allclose(got["score"], [s for _, s in rows])
    if kind == "flat":  # exact: every query finds its own source photo first
        assert (idx[:, 0] == np.arange(40)).all()


def test_a_gallery_grown_by_append_searches_like_one_built_whole():
    """Gallery.append adds rows to the arrays, the kept faiss index and the whale codes: the same
    neighbours, similarities and per-whale scores as a gallery built from all the rows at once."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([f"w{i % 37}" for i in range(190)] + ["brand_new"] * 10, dtype=object)
    names = np.array([f"p{i}" for i in range(200)], dtype=object)
    grown = Gallery(vectors[:50].copy(), ids[:50].copy(), names[:50].copy())
    retriever = Retriever.from_config({**DEFAULTS, "knn": {**DEFAULTS["knn"], "local": False}})
    queries = vectors[::7] + 0.05 * rng.normal(size=(len(vectors[::7]), 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    qnames = [f"q{i}" for i in range(len(queries))]
    retriever.search(grown, queries, qnames)  # index and codes built before the appends
    for start in range(50, 200, 30):
        grown.append(vectors[start:start + 30], ids[start:start + 30], names[start:start + 30])
    whole = Gallery(vectors, ids, names)
    a = retriever.search(grown, queries, qnames, photos=2)
    b = retriever.search(whole, queries, qnames, photos=2)
    pd.testing.assert_frame_equal(a.scores, b.scores)
    pd.testing.assert_frame_equal(a.photos, b.photos)
    assert "brand_new" in set(a.scores[C.ID])


def test_a_new_rescorer_is_one_registered_class_and_a_config_key():
    """retrieval/postprocess/: a class registered by name, listed in knn.postprocess and switched on
    by its own key, re-scores every search's shortlist with no change to the retriever or its callers;
    it reads the query features given to the search by kind."""
    from pipeline.retrieval import postprocess

    seen = {}

    @postprocess.register("favour_first")
    class FavourFirst:
        def __init__(self, cfg, seed, descriptors=None):
            self.bonus = float(cfg["favour_first_bonus"])

        def process(self, result, ctx):
            seen["features"] = ctx.query_features.get("favour_first")
            table = result.scores
            out = table.assign(**{C.SCORE: table[C.SCORE] + self.bonus * (table[C.ID] == "w0")})
            return result.rescored(out.sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).reset_index(drop=True))

    try:
        rng = np.random.default_rng(2)
        vectors = rng.normal(size=(30, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        gallery = Gallery(vectors, np.array([f"w{i % 5}" for i in range(30)], dtype=object),
                          np.array([f"p{i}" for i in range(30)], dtype=object))
        knn = {**DEFAULTS["knn"], "local": False, "postprocess": ["verify", "local", "favour_first"],
               "favour_first": True, "favour_first_bonus": 10.0}
        table = Retriever(knn).search(gallery, vectors[:4], ["a", "b", "c", "d"],
                                      query_features={"favour_first": ["x"] * 4}).scores
        assert (table.groupby(C.IMAGE)[C.ID].first() == "w0").all()
        assert seen["features"] == ["x"] * 4
        off = Retriever({**knn, "favour_first": False}).search(gallery, vectors[:4], ["a", "b", "c", "d"]).scores
        assert not (off.groupby(C.IMAGE)[C.ID].first() == "w0").all()
        with pytest.raises(PipelineError, match="unknown post-processor"):
            Retriever({**knn, "postprocess": ["nope"]})
    finally:
        postprocess.POSTPROCESSORS.pop("favour_first", None)
