"""The ensemble against the best single model at the same training minutes, and the default model
against the pytorch-metric-learning recipe, on the real sets. One command, everything side by side:

    python -m benchmarks.ensemble [--budget 1] [--folds 5] [--sets nyala lion] [--peer-sets nyala]

Per set, with one folds file shared by every row:
  - the best single recipe (the default, `make all` with no MODEL) trains `budget` minutes per fold;
  - the members of configs/ensemble.yaml share those minutes: each trains budget / (number of
    trainings) per fold, where a recipe with snapshots counts once (its snapshots are free members);
  - every ensemble method of configs/ensemble.yaml combines them.
It prints MAP@5 per fold and overall (cross-validated: each fold at the new_whale policy fitted on the
other folds) and the test MAP@5 against solution.csv, which is printed for the record and chooses
nothing. Then the peer: ../shared/peers/pml_baseline.py (each of its two recipes) trains for the same
total minutes as the default model (budget x folds) on the set, side by side with it."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PEER = REPO.parent / "shared" / "peers" / "pml_baseline.py"
PEER_RECIPES = {"triplet (loo)": ["--loss", "triplet", "--tune", "loo"],
                "arcface (split)": ["--loss", "arcface", "--tune", "split"]}


def stage(*argv: str) -> None:
    from pipeline.cli import main

    if main(list(argv)) != 0:
        raise RuntimeError(f"stage {argv[0]} failed: {' '.join(argv)}")


class Bench:
    """One set's work folder, folds file and shared command-line arguments."""

    def __init__(self, data: Path, work: Path, overrides: list[str]):
        self.data, self.work = data, work
        self.folds_file = work / "folds.csv"
        self.base = ["--work", str(work), "--configs", str(REPO / "configs"),
                     *(x for o in overrides for x in ("--set", o))]
        self.common = [*self.base, "--folds-file", str(self.folds_file)]
        self.solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)

    def prepare(self) -> None:
        stage("preprocess", "--data", str(self.data), *self.base)
        stage("folds", *self.common)

    def model(self, name: str, minutes: float) -> float:
        """Trains, embeds and searches with one recipe; returns the training minutes per fold it used."""
        started = time.time()
        stage("train", *self.common, "--model", name, "--budget", f"{minutes:.4f}")
        spent = (time.time() - started) / 60
        stage("embed", *self.common, "--model", name)
        stage("knn", *self.common, "--model", name)
        return spent

    def row(self, label: str, prediction_set: str, minutes: float | None) -> dict:
        """CV MAP@5 per fold and overall, and test MAP@5 of one prediction set."""
        from pipeline.config import load_stage_config
        from pipeline.data.folds import read_folds
        from pipeline.evaluation import cross_validate
        from pipeline.io.paths import prediction_dir
        from pipeline.io.submission import read_submission, score_submission
        from pipeline.retrieval.policy import NewWhalePolicy
        from pipeline.retrieval.predictions import Predictions

        cfg = load_stage_config(REPO / "configs")
        oof = Predictions.read(prediction_dir(self.work, prediction_set)).oof
        report = cross_validate(oof, read_folds(self.folds_file), NewWhalePolicy.from_config(cfg))
        out = self.work / f"{prediction_set}.csv"
        stage("submit", *self.common, "--name", prediction_set, "--out", str(out))
        return {"set": self.data.name, "predictions": label,
                "min/fold": None if minutes is None else round(minutes, 2),
                **{f"fold {f['fold']}": f["map5"] for f in report["folds"]}, "CV": report["map5"],
                "test": round(score_submission(read_submission(out), self.solution), 4)}


def peer(data: Path, recipe: list[str], seconds: float, out: Path) -> float:
    """Test MAP@5 of the pytorch-metric-learning peer, run as its docstring says."""
    run = subprocess.run([sys.executable, str(PEER), str(data), "--budget", str(seconds), "--out", str(out), *recipe],
                         capture_output=True, text=True)
    found = re.search(r"MAP@5 ([0-9.]+)", run.stdout)
    if run.returncode != 0 or not found:
        raise RuntimeError(f"{PEER.name} failed:\n{run.stdout[-1000:]}\n{run.stderr[-2000:]}")
    return float(found.group(1))


def ensemble_rows(bench: Bench, budget: float) -> list[dict]:
    from pipeline.config import DEFAULT_MODEL, load_stage_config

    cfg = load_stage_config(REPO / "configs")
    members = [m["name"] for m in cfg["ensemble"]["models"]]
    rows = [bench.row(f"best single: {DEFAULT_MODEL}", DEFAULT_MODEL, bench.model(DEFAULT_MODEL, budget))]
    print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    share = budget / len(members)
    for name in members:
        rows.append(bench.row(f"member: {name}", name, bench.model(name, share)))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    stage("ensemble", *bench.common)
    for method in cfg["ensemble"]["methods"]:
        rows.append(bench.row(f"ensemble: {method}", f"ensemble_{method}", None))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=1.0, help="training minutes per fold, single model and ensemble alike")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=["nyala", "lion"])
    parser.add_argument("--peer-sets", nargs="*", default=["nyala"], help="sets on which the PML peer also runs")
    parser.add_argument("--work", type=Path, default=None, help="keep the work folders here (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("WHALE_PROGRESS", "off")
    from pipeline.config import DEFAULT_MODEL

    started = time.time()
    tables, peers = [], []
    with tempfile.TemporaryDirectory(prefix="bench-ensemble-") as tmp:
        root = args.work or Path(tmp)
        for name in args.sets:
            data = SHARED / name
            if not (data / "train.csv").is_file():
                print(f"skip {name}: {data} not present")
                continue
            bench = Bench(data, root / name, [f"folds.n_folds={args.folds}", f"seed={args.seed}"])
            bench.prepare()
            rows = ensemble_rows(bench, args.budget)
            tables.append(pd.DataFrame(rows))
            if name in args.peer_sets and PEER.is_file():
                seconds = args.budget * args.folds * 60
                single = rows[0]["test"]
                for label, recipe in PEER_RECIPES.items():
                    score = peer(data, recipe, seconds, root / name / "peer.csv")
                    peers.append({"set": name, "minutes": seconds / 60, "PML recipe": label, "PML test": score,
                                  f"{DEFAULT_MODEL} test": single, "difference": round(single - score, 4)})
                    print(pd.DataFrame(peers[-1:]).to_string(index=False), flush=True)
    print(f"\n== ensemble vs best single, {args.budget} training minute(s) per fold in all, {args.folds} folds, "
          f"seed {args.seed} (CV chooses; test is for the record) ==")
    for table in tables:
        best_single = table.loc[0, "CV"]
        methods = table[table["predictions"].str.startswith("ensemble: ")]
        print()
        print(table.to_string(index=False))
        print(f"best method minus best single, CV: {methods['CV'].max() - best_single:+.4f} (goal >= +0.03); "
              f"classifier minus fusion, CV: "
              f"{_cv(table, 'ensemble: classifier') - _cv(table, 'ensemble: fusion'):+.4f} (goal > 0)")
    if peers:
        print(f"\n== {DEFAULT_MODEL} vs the pytorch-metric-learning recipe, same total training minutes "
              f"(goal: best PML recipe + 0.10) ==")
        print(pd.DataFrame(peers).to_string(index=False))
    print(f"\nwall time {round((time.time() - started) / 60, 1)} min")


def _cv(table: pd.DataFrame, label: str) -> float:
    found = table.loc[table["predictions"] == label, "CV"]
    return float(found.iloc[0]) if len(found) else float("nan")


if __name__ == "__main__":
    main()
