"""The retrieval path on the real sets: this tree against a baseline commit, and the retrieval options
(aggregation, query expansion, database-side augmentation, k-reciprocal re-ranking) on the same
embeddings. One command, everything side by side:

    python -m benchmarks.retrieval [--epochs 6] [--folds 5] [--seeds 0 1] [--baseline f33aa05] [--sets nyala lion]

Training runs a fixed number of epochs (not minutes), so the figures do not depend on how busy the
machine is. For each set and seed: the whole chain (default recipe) in this tree, then knn/ensemble/cv
again for every retrieval variant on the same trained models; then, for the baseline commit (checked
out in a temporary git worktree, run with this virtual environment), the same chain. CV MAP@5 chooses;
MAP@5 against solution.csv is printed for the record and never chooses anything."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

VARIANTS = {  # name -> knn overrides
    "max (default)": [],
    "centroid": ["knn.aggregation=centroid"],
    "alpha-QE k=3": ["knn.qe_k=3"],
    "DBA k=3": ["knn.dba_k=3"],
    "DBA + alpha-QE": ["knn.dba_k=3", "knn.qe_k=3"],
    "k-reciprocal": ["knn.rerank=kreciprocal"],
    "verification head": ["knn.verify=true"],
    "verification blend 0.5": ["knn.verify=true", "knn.verify_weight=0.5"],
    # Without local matching the scores are the head's own probabilities: its calibration is read there.
    "no local matching": ["knn.local=false"],
    "verification head, no local matching": ["knn.verify=true", "knn.local=false"],
    "verification head, retrieval features only": ["knn.verify=true", "knn.verify_features=retrieval"],
}

# Runs one chain in whatever tree is on sys.path (this one, or the baseline's worktree).
CHAIN = """
import json, sys
from pathlib import Path
import pandas as pd
from pipeline.chain import run_chain
from pipeline.config import DEFAULT_MODEL
from pipeline.io.submission import read_submission, score_submission
data, work, configs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
overrides = json.loads(sys.argv[4])
run_chain(data, work, DEFAULT_MODEL, configs, overrides, folds_file=work / "folds.csv", submission=work / "sub.csv")
solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
print(json.dumps({"cv": json.loads((work / "reports" / "cv.json").read_text())["map5"],
                  "test": score_submission(read_submission(work / "sub.csv"), solution)}))
"""


def chain(tree: Path, data: Path, work: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "WHALE_PROGRESS": "off"}
    run = subprocess.run([sys.executable, "-c", CHAIN, str(data), str(work), str(tree / "configs"),
                          json.dumps(overrides)], cwd=tree, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"chain failed in {tree}:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def variant(data: Path, work: Path, overrides: list[str]) -> dict:
    from pipeline.chain import chain_argv
    from pipeline.cli import main
    from pipeline.config import DEFAULT_MODEL
    from pipeline.io.submission import read_submission, score_submission

    # The chain's stages from knn on (their order is the stage registry's), forced: same models, new settings.
    for argv in chain_argv(data, work, DEFAULT_MODEL, REPO / "configs", overrides, folds_file=work / "folds.csv",
                           submission=work / "variant.csv", start="knn"):
        if main([*argv, "--force"]) != 0:
            raise RuntimeError(f"{argv[0]} failed for {overrides}")
    solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
    out = {"cv": json.loads((work / "reports" / "cv.json").read_text())["map5"],
           "test": score_submission(read_submission(work / "variant.csv"), solution)}
    if "knn.verify=true" in overrides and "knn.local=false" in overrides:
        out.update(calibration(work, DEFAULT_MODEL))
    return out


def calibration(work: Path, model: str) -> dict:
    """Brier score and reliability of the verified probabilities on out-of-fold (query, whale) pairs:
    the label is whether the whale is the query's true one. Bins are deciles of the probability (a
    shortlist's right whales are rare, so fixed-width bins would put nearly every pair in the first)."""
    from pipeline import columns as C
    from pipeline.data.folds import read_folds

    oof = pd.read_parquet(work / "predictions" / model / "oof.parquet")
    truth = read_folds(work / "folds.csv").set_index(C.IMAGE)[C.TRUTH]
    y = (oof[C.ID].to_numpy() == truth.reindex(oof[C.IMAGE]).to_numpy()).astype(float)
    p = oof[C.SCORE].to_numpy(dtype=float)
    bins = pd.qcut(p, 10, duplicates="drop")
    table = pd.DataFrame({"p": p, "y": y, "bin": bins}).groupby("bin", observed=True).agg(
        pairs=("y", "size"), mean_p=("p", "mean"), share_right=("y", "mean")).round(3)
    top1 = oof.sort_values(C.SCORE, ascending=False, kind="stable").drop_duplicates(C.IMAGE).index
    print(f"reliability of the verification head on out-of-fold pairs ({work.name}):\n{table.to_string()}\n"
          f"each query's best whale: mean probability {p[top1].mean():.3f}, right for {y[top1].mean():.3f}", flush=True)
    return {"brier": round(float(np.mean((p - y) ** 2)), 4), "brier_base_rate": round(float(np.mean((y.mean() - y) ** 2)), 4),
            "mean_p": round(float(p.mean()), 4), "share_right": round(float(y.mean()), 4), "pairs": int(len(y))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--baseline", default=None, help="a commit to compare with (default: none)")
    parser.add_argument("--sets", nargs="+", default=["nyala", "lion"])
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS)[1:],
                        help="the retrieval options to run (default: all)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the work folders here (<set>-<seed>); a later run reuses what is up to date")
    args = parser.parse_args()
    os.environ.setdefault("WHALE_PROGRESS", "off")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        baseline = None
        if args.baseline:
            baseline = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), args.baseline], cwd=REPO, check=True)
        try:
            for name in args.sets:
                data = SHARED / name
                if not (data / "train.csv").is_file():
                    print(f"skip {name}: {data} not present")
                    continue
                for seed in args.seeds:
                    overrides = [f"folds.n_folds={args.folds}", f"train.epochs={args.epochs}", f"seed={seed}"]
                    work = (args.work or Path(tmp)) / f"{name}-{seed}"
                    result = chain(REPO, data, work, overrides)
                    rows.append({"set": name, "seed": seed, "code": "this tree", "retrieval": "max (default)", **result})
                    print(rows[-1], flush=True)
                    for label, extra in list(VARIANTS.items())[1:]:
                        if args.variants is not None and label not in args.variants:
                            continue
                        rows.append({"set": name, "seed": seed, "code": "this tree", "retrieval": label,
                                     **variant(data, work, overrides + extra)})
                        print(rows[-1], flush=True)
                    if baseline is not None:
                        result = chain(baseline, data, Path(tmp) / f"{name}-{seed}-baseline", overrides)
                        rows.append({"set": name, "seed": seed, "code": f"baseline {args.baseline}",
                                     "retrieval": "max (default)", **result})
                        print(rows[-1], flush=True)
        finally:
            if baseline is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO)
    if not rows:
        return
    table = pd.DataFrame(rows)
    table["cv"], table["test"] = table["cv"].round(4), table["test"].round(4)
    print()
    print(table.to_string(index=False))
    summary = table.groupby(["set", "code", "retrieval"], sort=False)[["cv", "test"]].agg(["mean", "min", "max"])
    print()
    print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
