"""Local-feature matching (retrieval/local/, retrieval/postprocess/local.py): the match count as wildlife-tools defines it,
recomputed by hand; descriptors stored once per work folder; the re-scoring arithmetic."""
import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.retrieval.local.collect import match_counts
from pipeline.retrieval.local.extract import DescriptorStore, sift_descriptors
from pipeline.retrieval.postprocess.local import LocalMatcher
from pipeline.retrieval.retriever import Gallery, Retriever


def points(*xy):
    """128-d descriptors whose first two coordinates are the given points."""
    out = np.zeros((len(xy), 128), dtype=np.uint8)
    out[:, :2] = np.array(xy)
    return out


def test_match_count_is_the_ratio_test_of_each_gallery_descriptor_against_the_query():
    query = points((0, 0), (10, 0), (0, 10))
    # (1,0): squared distances 1, 81, 101 -> 1/81 < 0.5 passes; (5,0): 25, 25, 125 -> 1 fails.
    # (0,9): 81, 181, 1 -> 1/81 passes. (5,5): 50, 50, 50 fails.
    gallery = [points((1, 0), (5, 0)), points((0, 9), (5, 5)), np.zeros((0, 128), np.uint8)]
    assert match_counts(query, gallery, 0.5).tolist() == [1, 1, 0]
    # A looser ratio lets (5,0)'s 25/25 still fail (not strictly below 1) but nothing else changes.
    assert match_counts(query, gallery, 0.99).tolist() == [1, 1, 0]
    assert match_counts(points((0, 0)), gallery, 0.5).tolist() == [0, 0, 0]  # one query descriptor: no ratio


def textured(seed, size=(96, 160)):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))


def test_sift_descriptors_are_bounded_uint8_and_match_their_own_photo_best():
    a, b = textured(0), textured(1)
    da, db = sift_descriptors(a, 60), sift_descriptors(b, 60)
    assert da.dtype == np.uint8 and da.shape[1] == 128 and 10 < len(da) <= 60
    assert len(sift_descriptors(np.full((64, 64, 3), 128, np.uint8), 60)) == 0  # a flat photo has none
    brighter = np.clip(a.astype(int) + 12, 0, 255).astype(np.uint8)  # the same photo, lit differently
    same, other = match_counts(sift_descriptors(brighter, 60), [da, db], 0.5)
    assert same > 3 * max(1, other)


def test_store_computes_once_and_finds_photos_by_split(tiny_synth, tmp_path):
    from pipeline.cli import main

    work = tmp_path / "work"
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work),
                 "--set", "preprocess.image_size=[48,96]"]) == 0
    store = DescriptorStore.open(work, 40)
    saved = work / "cache" / "local-sift-40.npz"
    assert saved.is_file()
    train = pd.read_csv(tiny_synth / "train.csv")[C.IMAGE].tolist()[:3]
    first = store.get(train, C.TRAIN)
    again = DescriptorStore.open(work, 40).get(train, C.TRAIN)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert store.get(train[:1], C.TRAIN)[0] is first[0]  # the same array: counts are remembered by it
    with pytest.raises(PipelineError, match="not in the image cache"):
        store.get(train[:1], C.TEST)


class FakeStore:
    path = None  # not read from a work folder: nothing is saved

    def __init__(self, photos):
        self.photos = photos

    def get(self, names, split):
        return [self.photos[n] for n in names]


def test_rescoring_blends_the_shortlist_with_match_counts_and_keeps_one_scale():
    """Whale B's photo is the query's own descriptors: its match count lifts it above whale A, whose
    cosine is higher; whale C, outside the shortlist, keeps (1 - w) * score."""
    query = textured(5)
    dq = sift_descriptors(query, 80)
    photos = {"a.jpg": sift_descriptors(textured(6), 80), "b.jpg": dq.copy(), "c.jpg": sift_descriptors(textured(7), 80)}
    vectors = np.eye(3, dtype=np.float32)
    gallery = Gallery(vectors, np.array(["A", "B", "C"]), np.array(["a.jpg", "b.jpg", "c.jpg"]))
    q = np.array([[0.8, 0.6, 0.0]], dtype=np.float32)
    cfg = {"local_top": 2, "local_photos": 5, "local_ratio": 0.5, "local_weight": 0.5, "local_scale": 10.0}
    table = pd.DataFrame({C.IMAGE: ["q"] * 3, C.ID: ["A", "B", "C"], C.SCORE: np.array([0.8, 0.6, 0.0], np.float32)})
    out = LocalMatcher(FakeStore(photos), cfg).rescore(table, [dq], ["q"], vectors, q, gallery)
    counts = dict(zip("AB", match_counts(dq, [photos["a.jpg"], photos["b.jpg"]], 0.5)))
    expected = {"A": 0.5 * 0.8 + 0.5 * counts["A"] / (counts["A"] + 10),
                "B": 0.5 * 0.6 + 0.5 * counts["B"] / (counts["B"] + 10), "C": 0.0}
    assert out[C.ID].tolist() == ["B", "A", "C"]
    assert out.set_index(C.ID)[C.SCORE].to_dict() == pytest.approx(expected, abs=1e-6)


def test_retriever_with_local_matching_needs_descriptors():
    from pipeline.config import DEFAULTS

    cfg = {**DEFAULTS["knn"], "local": True}
    gallery = Gallery(np.eye(2, dtype=np.float32), np.array(["A", "B"]), np.array(["a", "b"]))
    with pytest.raises(PipelineError, match="knn.local"):
        Retriever(cfg).search(gallery, np.eye(2, dtype=np.float32), ["x", "y"])


def test_remembered_counts_live_as_long_as_the_query_descriptors():
    """A long-running web page must not keep every identified photo's counts: they go with the array."""
    import gc

    photos = {"a.jpg": sift_descriptors(textured(6), 40)}
    matcher = LocalMatcher(FakeStore(photos), {"local_ratio": 0.5})
    query = sift_descriptors(textured(5), 40)
    first = matcher._match(query, ["a.jpg"])
    assert matcher._match(query, ["a.jpg", "a.jpg"]) == first * 2 and len(matcher._counts) == 1
    del query
    gc.collect()
    assert matcher._counts == {}


def _local_world(tiny_synth, tmp_path):
    """A preprocessed tiny work folder, its train gallery (random unit vectors) and two test queries."""
    from pipeline.cli import main

    work = tmp_path / "work"
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work),
                 "--set", "preprocess.image_size=[48,96]"]) == 0
    train = pd.read_csv(tiny_synth / "train.csv")
    train = train[train[C.ID] != C.NEW_WHALE]
    tests = pd.read_csv(tiny_synth / "sample_submission.csv")[C.IMAGE].tolist()[:2]
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(rng.normal(size=(n, 8)).astype(np.float32))
    gallery = Gallery(unit(len(train)), train[C.ID].to_numpy(), train[C.IMAGE].to_numpy())
    whales = sorted(set(train[C.ID]))
    table = pd.DataFrame({C.IMAGE: np.repeat(tests, len(whales)), C.ID: whales * len(tests),
                          C.SCORE: rng.uniform(size=len(tests) * len(whales)).astype(np.float32)})
    return work, gallery, tests, unit(len(tests)), table


def _counting(monkeypatch):
    """Counts the gallery photos match_counts is asked to match."""
    import pipeline.retrieval.local.collect as lf

    asked, real = [], lf.match_counts
    monkeypatch.setattr(lf, "match_counts", lambda q, g, *a: asked.extend([1] * len(g)) or real(q, g, *a))
    return asked


LOCAL = {"local_top": 2, "local_photos": 2, "local_ratio": 0.8, "local_weight": 0.5, "local_scale": 10.0}


def test_match_counts_between_cached_photos_are_saved_for_the_next_run(tiny_synth, tmp_path, monkeypatch):
    import os

    work, gallery, tests, queries, table = _local_world(tiny_synth, tmp_path)
    asked = _counting(monkeypatch)

    def run(cfg=LOCAL, descriptors=None):
        store = DescriptorStore.open(work, 40)  # a fresh store and matcher: what the next process has
        before = len(asked)
        out = LocalMatcher(store, cfg).rescore(table, descriptors or store.get(tests, C.TEST), tests,
                                               gallery.vectors, queries, gallery)
        return out, len(asked) - before

    first, counted = run()
    assert counted > 0 and (work / "cache" / "local-matches-40-r0.8.npz").is_file()
    again, recounted = run()
    assert recounted == 0  # every pair came from the saved counts...
    pd.testing.assert_frame_equal(again, first)  # ...and they are the counts the first run computed
    assert run({**LOCAL, "local_ratio": 0.6})[1] == counted  # another ratio: other counts, another file
    assert (work / "cache" / "local-matches-40-r0.6.npz").is_file()

    # A photo outside the cache (identify's upload) is matched afresh every time and never saved.
    uploads = [d.copy() for d in DescriptorStore.open(work, 40).get(tests, C.TEST)]
    assert run(descriptors=uploads)[1] == counted and run(descriptors=uploads)[1] == counted

    # Descriptors computed again (another modification time): the saved counts no longer apply.
    sift = work / "cache" / "local-sift-40.npz"
    os.utime(sift, ns=(sift.stat().st_atime_ns, sift.stat().st_mtime_ns + 10**9))
    stale, recounted = run()
    assert recounted == counted
    pd.testing.assert_frame_equal(stale, first)


def test_saved_match_counts_merge_what_another_process_saved_and_survive_a_broken_file(tmp_path, caplog):
    from pipeline.retrieval.local.saved import SavedMatches

    sift = tmp_path / "local-sift-40.npz"
    np.savez(sift, descriptors=np.zeros((0, 128), np.uint8), offsets=np.zeros(1, np.int64))
    one, two = SavedMatches.beside(sift, 0.8), SavedMatches.beside(sift, 0.8)  # two processes at once
    one.add(3, [5, 6], [7, 0])
    two.add(4, [5], [2])
    one.save()
    two.save()
    assert SavedMatches.beside(sift, 0.8).get(3, [5, 6, 9]) == [7, 0, None]
    assert SavedMatches.beside(sift, 0.8).get(4, [5, 3]) == [2, None]
    assert SavedMatches.beside(sift, 0.8).get(5, [3]) == [None]  # (query, gallery) is ordered

    one.path.write_bytes(b"not an npz")
    with caplog.at_level("WARNING"):
        broken = SavedMatches.beside(sift, 0.8)
    assert broken.get(3, [5]) == [None] and "unreadable saved match counts" in caplog.text
    broken.add(3, [5], [7])
    broken.save()
    assert SavedMatches.beside(sift, 0.8).get(3, [5]) == [7]
