"""Local matching as the field does it, measured on the real sets (issue: keypoint geometry, RANSAC
inliers, calibrated fusion):

    python -m benchmarks.local [--budget 1] [--sets nyala lion] [--no-peer]

Per set (5 folds): the default recipe is trained once (BUDGET minutes per fold) and embedded once;
every row re-scores the same embeddings with another local-matching setting (knn, then CV MAP@5 per
fold and overall; test MAP@5 against solution.csv for the record, it chooses nothing):

    no local matching | ratio-test counts | RANSAC homography inliers (the default) | RANSAC
    fundamental inliers, each with and without calibrated fusion (knn.local_calibrate),

then the training-free recipe (colour-histogram shortlist + local matching, no training) with the
same settings, against wildlife-tools' training-free SIFT matcher (../shared/peers/sift_baseline.py,
test MAP@5: it has no CV). Last, the cost: photos per second for descriptors and pairs per second for
counting and for verification, so a user can size a catalogue."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.ensemble import SHARED, Bench, sift_peer, stage

LOCAL_VARIANTS = {  # label -> knn overrides
    "no local matching": ["knn.local=false"],
    "ratio-test counts": ["knn.local_geometry=none"],
    "ratio-test counts, calibrated": ["knn.local_geometry=none", "knn.local_calibrate=true"],
    "homography inliers": ["knn.local_geometry=homography"],
    "homography inliers, calibrated": ["knn.local_geometry=homography", "knn.local_calibrate=true"],
    "fundamental inliers": ["knn.local_geometry=fundamental"],
    "fundamental inliers, calibrated": ["knn.local_geometry=fundamental", "knn.local_calibrate=true"],
}
QUICK = ("fundamental",)  # --quick leaves these rows out
TRAINING_FREE = "colour_histogram"


def knn_rows(bench: Bench, model: str, label: str, minutes: float | None, variants: dict) -> list[dict]:
    rows = []
    for name, sets in variants.items():
        started = time.time()
        stage("knn", *bench.common, "--model", model, *(x for s in sets for x in ("--set", s)))
        stage("ensemble", *bench.common, "--model", model, *(x for s in sets for x in ("--set", s)))
        row = bench.row(f"{label}: {name}", "ensemble", minutes)
        row["knn s"] = round(time.time() - started)
        rows.append(row)
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    return rows


def cost(work: Path, keypoints: int = 500, pairs: int = 300, seed: int = 0) -> dict:
    """Photos/s for descriptors (a fresh computation over 100 cached photos) and pairs/s for ratio-test
    counts and for homography / fundamental verification (random pairs of cached photos)."""
    from pipeline.data.cache import ImageCache
    from pipeline.retrieval.local.collect import inlier_counts, match_counts
    from pipeline.retrieval.local.extract import sift_descriptors

    cache = ImageCache.open(work)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(cache.images), size=min(100, len(cache.images)), replace=False)
    started = time.perf_counter()
    features = [sift_descriptors(cache.images[r], keypoints) for r in rows]
    out = {"descriptors photos/s": round(len(rows) / (time.perf_counter() - started), 1)}
    chosen = rng.integers(0, len(features), size=(pairs, 2))
    for name, score in (("counts", lambda q, g: match_counts(q, g, 0.5)),
                        ("homography", lambda q, g: inlier_counts(q, g, 0.5, "homography")),
                        ("fundamental", lambda q, g: inlier_counts(q, g, 0.5, "fundamental"))):
        started = time.perf_counter()
        for a, b in chosen:  # one pair per call: what a shortlist of one photo per whale costs
            score(features[a], [features[b]])
        out[f"{name} pairs/s"] = round(pairs / (time.perf_counter() - started), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=1.0, help="training minutes per fold of the default recipe")
    parser.add_argument("--sets", nargs="+", default=["nyala", "lion"])
    parser.add_argument("--no-peer", action="store_true", help="skip wildlife-tools' SIFT matcher")
    parser.add_argument("--quick", action="store_true", help="leave out the fundamental-matrix rows")
    args = parser.parse_args()
    from pipeline.config import DEFAULT_MODEL

    rows, peers, costs = [], [], []
    for name in args.sets:
        data = SHARED / name
        if not (data / "train.csv").is_file():
            print(f"skip {name}: {data} not present")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-local-{name}-") as tmp:
            bench = Bench(data, Path(tmp), [])
            bench.prepare()
            spent = bench.model(DEFAULT_MODEL, args.budget, ["--set", "knn.local=false"])
            variants = {k: v for k, v in LOCAL_VARIANTS.items() if not (args.quick and any(q in k for q in QUICK))}
            rows += knn_rows(bench, DEFAULT_MODEL, f"{DEFAULT_MODEL}", spent, variants)
            stage("train", *bench.common, "--model", TRAINING_FREE)
            stage("embed", *bench.common, "--model", TRAINING_FREE)
            free = {k: v for k, v in variants.items() if "fundamental" not in k}
            rows += knn_rows(bench, TRAINING_FREE, "training-free", 0.0, free)
            if not args.no_peer:
                score, seconds = sift_peer(data, Path(tmp) / "sift.csv")
                peers.append({"set": name, "wildlife-tools SIFT matcher, test MAP@5": round(score, 4),
                              "wall s": round(seconds)})
            costs.append({"set": name, **cost(Path(tmp))})
    table = pd.DataFrame(rows)
    print("\n== CV MAP@5 per fold and overall (test MAP@5 for the record) ==")
    print(table.to_string(index=False))
    for name, part in table.groupby("set"):
        trained = part[~part["predictions"].str.startswith("training-free")]
        best = trained.loc[trained["CV"].idxmax()]
        print(f"{name}: best by CV {best['predictions']} ({best['CV']:.4f})")
    if peers:
        print("\n== training-free peer ==")
        print(pd.DataFrame(peers).to_string(index=False))
    if costs:
        print("\n== cost on this machine ==")
        print(pd.DataFrame(costs).to_string(index=False))


if __name__ == "__main__":
    main()
