"""Calibrated fusion (decision/fusion_calibration.py): P(same individual) from the local count and
from the global score, judged on held-out pairs; the fused scale; no fold's own pairs reach the
calibration that scores it; and the knn stage end to end with knn.local_calibrate."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.decision.fusion_calibration import LOCAL_COUNT, FusionCalibration, cross_fitted


def pairs(seed, queries=400, whales=10):
    """Raw rows as the retriever gives them: each query's shortlist, the right whale among them for
    most queries, with a global score and a local count that are higher, noisily, for the right one."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for q in range(queries):
        name = f"s{seed}q{q}"
        right = rng.integers(0, whales) if rng.random() < 0.8 else -1  # -1: a new individual
        truth[name] = f"w{right}" if right >= 0 else C.NEW_WHALE
        for w in range(whales):
            same = w == right
            score = rng.normal(0.7 if same else 0.5, 0.08)
            count = rng.poisson(25 if same else 4)
            rows.append((name, f"w{w}", score, count if w < 6 else -1))
    raw = pd.DataFrame(rows, columns=[C.IMAGE, C.ID, C.SCORE, LOCAL_COUNT])
    return raw, pd.Series(truth)


def test_p_same_from_the_local_count_is_calibrated_on_held_out_pairs():
    fit_raw, fit_truth = pairs(0)
    held_raw, held_truth = pairs(1)
    calibration = FusionCalibration.fit(fit_raw, fit_truth, weight=0.5)
    shortlisted = held_raw[held_raw[LOCAL_COUNT] >= 0]
    p = calibration.p_local(shortlisted[LOCAL_COUNT])
    right = (shortlisted[C.ID].to_numpy() == held_truth.reindex(shortlisted[C.IMAGE]).to_numpy())
    order = np.argsort(p, kind="stable")
    for part in np.array_split(order, 8):  # binned probability against the share of same-individual pairs
        assert abs(p[part].mean() - right[part].mean()) < 0.05, (p[part].mean(), right[part].mean())
    g = calibration.p_global(held_raw[C.SCORE])
    everyone = held_raw[C.ID].to_numpy() == held_truth.reindex(held_raw[C.IMAGE]).to_numpy()
    assert abs(g.mean() - everyone.mean()) < 0.02
    assert np.all(np.diff(calibration.p_local(np.arange(60))) >= 0)  # more inliers never mean less likely


def test_the_fused_score_is_the_weighted_mean_of_the_two_probabilities():
    raw, truth = pairs(2)
    calibration = FusionCalibration.fit(raw, truth, weight=0.3)
    fused = calibration.apply(raw.head(20))
    expected = 0.7 * calibration.p_global(raw[C.SCORE].head(20)) + 0.3 * calibration.p_local(raw[LOCAL_COUNT].head(20))
    merged = raw.head(20).assign(expected=expected).merge(fused, on=[C.IMAGE, C.ID], suffixes=("_raw", ""))
    assert np.allclose(merged[C.SCORE], merged["expected"], atol=1e-6)
    assert LOCAL_COUNT not in fused.columns and fused[C.SCORE].between(0, 1).all()
    # Outside the shortlist (count -1) a whale takes P_local(0).
    outside = raw.head(20)[raw.head(20)[LOCAL_COUNT] < 0]
    assert len(outside) and np.allclose(calibration.p_local(outside[LOCAL_COUNT]), calibration.p_local([0]))
    again = FusionCalibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert np.allclose(again.apply(raw.head(20))[C.SCORE], fused[C.SCORE], atol=1e-5)  # saved to 6 digits


def test_no_fold_is_scored_by_a_calibration_that_saw_its_own_pairs():
    raws = {k: pairs(10 + k, queries=150)[0] for k in range(3)}
    truth = pd.concat([pairs(10 + k, queries=150)[1] for k in range(3)])
    first = cross_fitted(raws, truth, 0.5)
    tampered = truth.copy()
    fold0 = raws[0][C.IMAGE].unique()
    tampered[fold0] = C.NEW_WHALE  # fold 0's own labels: all wrong now
    second = cross_fitted(raws, tampered, 0.5)
    pd.testing.assert_frame_equal(first[0], second[0])  # fold 0's scores did not move
    assert not first[1][C.SCORE].equals(second[1][C.SCORE])  # the other folds' did
    with pytest.raises(Exception, match="at least two folds"):
        cross_fitted({0: raws[0]}, truth, 0.5)


def test_knn_with_calibrated_fusion_writes_probabilities_and_the_bundle_applies_them(trained_tiny, tmp_path, capsys):
    import shutil

    from pipeline.cli import main
    from tests.conftest import TINY_SETS

    data, trained = trained_tiny
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    sets = [x for s in [*TINY_SETS, "knn.local_calibrate=true", "knn.local_geometry=homography"] for x in ("--set", s)]
    assert main(["knn", "--work", str(work), "--model", "demo_triplet", "--folds-file", str(work / "folds.csv"),
                 *sets]) == 0
    folder = work / "predictions" / "demo_triplet"
    oof = pd.read_parquet(folder / "oof.parquet")
    assert oof[C.SCORE].between(0, 1).all() and LOCAL_COUNT not in oof.columns
    calibration = json.loads((folder / "local_calibration.json").read_text())
    assert calibration["pairs"] > 0 and calibration["local_p"][-1] >= calibration["local_p"][0]
    # identify (through the bundle) scores a test photo exactly as knn scored it.
    test = pd.read_parquet(folder / "test.parquet")
    name = test[C.IMAGE].iloc[0]
    capsys.readouterr()
    assert main(["identify", str(data / "test" / name), "--work", str(work), "--models", "demo_triplet", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top5"]
    expected = test[test[C.IMAGE] == name].sort_values(C.SCORE, ascending=False)
    known = [c for c in top if c["id"] != C.NEW_WHALE]
    for c in known:
        assert c["score"] == pytest.approx(float(expected.set_index(C.ID)[C.SCORE][c["id"]]), abs=1e-3)
