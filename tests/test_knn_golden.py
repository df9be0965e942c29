"""Pins the knn stage's predictions across the refactor of issue #33 (one result type, re-scorers in
retrieval/postprocess/, decision/, identification above the bundle, registries): the same inputs must
give the same outputs before and after.

Inputs are fixed and need no training (training is not bit-identical across CPUs): the tiny synthetic
data set (conftest's `tiny_synth`, seed 3) is preprocessed and folded, and each fold's "embeddings" are
made by a seeded RNG (a unit vector per whale plus noise, random vectors for new_whale and unseen test
whales). knn then runs through the CLI with each variant's overrides:

    defaults    the config defaults: max aggregation, local matching on (SIFT, homography inliers)
    rerank      local counts without geometry after DBA, alpha-QE and k-reciprocal re-ranking
    centroid    centroid aggregation with local counts

The golden file tests/golden/knn_predictions.csv was generated from the code at commit a4c5960 (main
before the refactor) by running this module with KNN_GOLDEN_WRITE=1; it holds each query's five best
whales (out-of-fold and fused test tables) and each variant's new_whale threshold. Regenerate it only
for a deliberate change of behaviour, and say so in the commit."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.cli import main

GOLDEN = Path(__file__).parent / "golden" / "knn_predictions.csv"
VARIANTS = {
    "defaults": [],
    "rerank": ["knn.local_geometry=none", "knn.dba_k=3", "knn.qe_k=2", "knn.rerank=kreciprocal", "knn.k1=6",
               "knn.k2=3"],
    "centroid": ["knn.aggregation=centroid", "knn.local_geometry=none"],
}
SETS = ["preprocess.image_size=[96,192]", "folds.n_folds=3"]


@pytest.fixture(scope="module")
def seeded_work(tiny_synth, tmp_path_factory):
    """A work folder with a cache, folds and seeded embeddings for model 'seeded' (3 folds)."""
    work = tmp_path_factory.mktemp("golden") / "w"
    args = [x for s in SETS for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *args]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *args]) == 0
    train = pd.read_csv(tiny_synth / "train.csv")
    test = sorted(p.name for p in (tiny_synth / "test").iterdir())
    rng = np.random.default_rng(33)
    whales = sorted(set(train[C.ID]) - {C.NEW_WHALE})
    centre = {w: rng.normal(size=16) for w in whales}

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    for fold in range(3):
        out = work / "embeddings" / "seeded" / f"fold{fold}"
        out.mkdir(parents=True)
        vectors = [centre[w] + 0.9 * rng.normal(size=16) if w != C.NEW_WHALE else rng.normal(size=16)
                   for w in train[C.ID]]
        np.save(out / "train.npy", unit(np.array(vectors)))
        # Test photos: a known whale for most, a random vector for a few (unseen whales).
        picks = rng.integers(0, len(whales), len(test))
        tests = [centre[whales[p]] + 0.9 * rng.normal(size=16) if rng.random() > 0.3 else rng.normal(size=16)
                 for p in picks]
        np.save(out / "test.npy", unit(np.array(tests)))
        pd.DataFrame({C.IMAGE: list(train[C.IMAGE]) + test, C.SPLIT: [C.TRAIN] * len(train) + [C.TEST] * len(test),
                      C.ROW: list(range(len(train))) + list(range(len(test)))}).to_csv(out / "index.csv", index=False)
    configs = work.parent / "configs"
    (configs / "models").mkdir(parents=True)
    (configs / "models" / "seeded.yaml").write_text("model:\n  backbone: test_resnet\n")
    return work, configs


def predictions(work, configs, variant: str) -> pd.DataFrame:
    sets = [x for s in [*SETS, *VARIANTS[variant]] for x in ("--set", s)]
    assert main(["knn", "--work", str(work), "--configs", str(configs), "--model", "seeded",
                 "--folds-file", str(work / "folds.csv"), "--force", *sets]) == 0
    folder = work / "predictions" / "seeded"
    rows = []
    for table in ("oof", "test"):
        scores = pd.read_parquet(folder / f"{table}.parquet")
        top = scores.sort_values([C.IMAGE, C.SCORE], ascending=[True, False], kind="stable").groupby(C.IMAGE).head(5)
        rows.append(top[[C.IMAGE, C.ID, C.SCORE]].assign(table=table))
    threshold = json.loads((folder / "threshold.json").read_text())["threshold"]
    rows.append(pd.DataFrame({C.IMAGE: ["<threshold>"], C.ID: [""], C.SCORE: [threshold], "table": ["policy"]}))
    return pd.concat(rows, ignore_index=True).assign(variant=variant)


def test_knn_predictions_are_pinned(seeded_work):
    work, configs = seeded_work
    now = pd.concat([predictions(work, configs, v) for v in VARIANTS], ignore_index=True)
    now = now[["variant", "table", C.IMAGE, C.ID, C.SCORE]]
    if os.environ.get("KNN_GOLDEN_WRITE"):
        GOLDEN.parent.mkdir(exist_ok=True)
        now.assign(**{C.SCORE: now[C.SCORE].round(6)}).to_csv(GOLDEN, index=False)
    golden = pd.read_csv(GOLDEN, dtype={C.IMAGE: str, C.ID: str}, keep_default_na=False)
    assert len(now) == len(golden)
    for column in ("variant", "table", C.IMAGE, C.ID):
        assert now[column].astype(str).tolist() == golden[column].astype(str).tolist(), column
    np.testing.assert_allclose(now[C.SCORE].to_numpy(float), golden[C.SCORE].to_numpy(float), rtol=0, atol=2e-5)
