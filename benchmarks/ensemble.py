"""The ensemble against the best single model at the same training minutes, and the default model
against the pytorch-metric-learning recipe, on the real sets. One command, everything side by side:

    python -m benchmarks.ensemble [--budget 1] [--folds 5] [--sets nyala lion] [--peer-sets nyala]

Per set, with one folds file shared by every row:
  - the default recipe (`make all` with no MODEL) trains `budget` minutes per fold, scored with global
    retrieval only, then with the default retrieval (+ local-feature re-scoring);
  - the members of configs/ensemble.yaml share those minutes: each trains budget / (number of
    trained members) per fold; a training-free member (train.epochs: 0, e.g. colour_histogram) costs none;
  - the members' per-photo upper bound: MAP@5 if each photo took its best member's answer (an oracle);
  - every ensemble method of configs/ensemble.yaml combines them;
  - the snapshot ensemble of the default recipe (`<default>_snapshots`: one run of `budget` minutes
    whose learning rate restarts, each cycle's end kept as a member) at the same minutes.
It prints MAP@5 per fold and overall (cross-validated: each fold at the new_whale policy fitted on the
other folds) and the test MAP@5 against solution.csv, which is printed for the record and chooses
nothing. Then the peer: ../shared/peers/pml_baseline.py (each of its two recipes) trains for the same
total minutes as the default model (budget x folds) on the set, side by side with it; with
--sift-sets, the training-free SIFT peer (../shared/peers/sift_baseline.py) too.

The goal line compares the best ensemble method with the best single recipe by CV: the default recipe
or any member alone, a training-free member included (it is a single recipe at no minutes)."""
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
SIFT_PEER = REPO.parent / "shared" / "peers" / "sift_baseline.py"
PEER_RECIPES = {"triplet (loo)": ["--loss", "triplet", "--tune", "loo"],
                "arcface (split)": ["--loss", "arcface", "--tune", "split"]}


def stage(*argv: str) -> None:
    from pipeline.cli import main

    if main(list(argv)) != 0:
        raise RuntimeError(f"stage {argv[0]} failed: {' '.join(argv)}")


class Bench:
    """One set's work folder, folds file and shared command-line arguments."""

    def __init__(self, data: Path, work: Path, overrides: list[str], seed: int = 0):
        self.data, self.work, self.seed = data, work, seed
        self.folds_file = work / "folds.csv"
        self.base = ["--work", str(work), "--configs", str(REPO / "configs"),
                     *(x for o in overrides for x in ("--set", o))]
        self.common = [*self.base, "--folds-file", str(self.folds_file)]
        self.solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)

    def prepare(self) -> None:
        stage("preprocess", "--data", str(self.data), *self.base)
        stage("folds", *self.common)

    def model(self, name: str, minutes: float, knn: list[str] = ()) -> float:
        """Trains, embeds and searches with one recipe (`knn`: extra knn arguments); returns the training
        minutes it took (all folds)."""
        started = time.time()
        stage("train", *self.common, "--model", name, "--budget", f"{minutes:.4f}")
        spent = (time.time() - started) / 60
        stage("embed", *self.common, "--model", name)
        stage("knn", *self.common, "--model", name, *knn)
        return spent

    def _scoring(self):
        """(the folds, the new_whale policy of the default config) that every row is scored with."""
        from pipeline.config import load_stage_config
        from pipeline.data.folds import read_folds
        from pipeline.decision.policy import NewWhalePolicy

        return read_folds(self.folds_file), NewWhalePolicy.from_config(load_stage_config(REPO / "configs"))

    def _oof(self, prediction_set: str) -> pd.DataFrame:
        from pipeline.io.paths import prediction_dir
        from pipeline.retrieval.predictions import Predictions

        return Predictions.read(prediction_dir(self.work, prediction_set)).oof

    def _row(self, label: str, minutes: float | None, report: dict, test: float | None) -> dict:
        return {"set": self.data.name, "predictions": label,
                "train min": None if minutes is None else round(minutes, 2),
                **{f"fold {f['fold']}": f["map5"] for f in report["folds"]}, "CV": report["map5"], "test": test}

    def row(self, label: str, prediction_set: str, minutes: float | None) -> dict:
        """CV MAP@5 per fold and overall, and test MAP@5 of one prediction set."""
        from pipeline.decision.evaluation import cross_validate
        from pipeline.io.submission import read_submission, score_submission

        report = cross_validate(self._oof(prediction_set), *self._scoring())
        out = self.work / f"{prediction_set}.csv"
        stage("submit", *self.common, "--name", prediction_set, "--out", str(out))
        return self._row(label, minutes, report, round(score_submission(read_submission(out), self.solution), 4))

    def agreement(self, members: list[str]) -> pd.DataFrame:
        return top1_agreement({name: self._oof(name) for name in members})

    def bound_row(self, members: list[str], label: str) -> dict:
        """The members' per-photo upper bound (evaluation.best_member_bound), per fold and overall."""
        from pipeline.decision.evaluation import best_member_bound

        return self._row(label, None, best_member_bound([self._oof(name) for name in members], *self._scoring()), None)


def top1_agreement(oofs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Pairwise share of the photos (those every member scored) whose best-scoring whale two members
    agree on: members worth ensembling fail on different photos, so they disagree more often."""
    from pipeline import columns as C

    best = {name: o.sort_values(C.SCORE, ascending=False, kind="stable").drop_duplicates(C.IMAGE)
            .set_index(C.IMAGE)[C.ID] for name, o in oofs.items()}
    common = sorted(set.intersection(*(set(b.index) for b in best.values())))
    names = list(best)
    table = pd.DataFrame(index=names, columns=names, dtype=float)
    for a in names:
        for b in names:
            table.loc[a, b] = round(float((best[a].loc[common].to_numpy() == best[b].loc[common].to_numpy()).mean()), 3)
    return table


def best_single(table: pd.DataFrame) -> pd.Series:
    """The single recipe with the best CV: the default recipe or any member alone (a training-free member
    is a single recipe too, at no minutes)."""
    singles = table[table["predictions"].str.match(r"(default recipe|member|member \(training-free\)): ")]
    return singles.loc[singles["CV"].idxmax()]


def best_method(table: pd.DataFrame) -> pd.Series:
    """The ensemble method with the best CV (the snapshot ensemble included)."""
    methods = table[table["predictions"].str.startswith("ensemble: ")]
    return methods.loc[methods["CV"].idxmax()]


def _peer_score(script: Path, args: list[str], pattern: str) -> float:
    """Runs one peer script and reads the MAP@5 it prints (`pattern`: its output line, one group)."""
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    found = re.search(pattern, run.stdout)
    if run.returncode != 0 or not found:
        raise RuntimeError(f"{script.name} failed:\n{run.stdout[-1000:]}\n{run.stderr[-2000:]}")
    return float(found.group(1))


def peer(data: Path, recipe: list[str], seconds: float, out: Path) -> float:
    """Test MAP@5 of the pytorch-metric-learning peer, run as its docstring says."""
    return _peer_score(PEER, [str(data), "--budget", str(seconds), "--out", str(out), *recipe], r"MAP@5 ([0-9.]+)")


def sift_peer(data: Path, out: Path) -> tuple[float, float]:
    """(test MAP@5, seconds) of wildlife-tools' training-free SIFT matcher, run as its docstring says."""
    started = time.time()
    score = _peer_score(SIFT_PEER, [str(data), "--out", str(out)], r"test MAP@5 ([0-9.]+)")
    return score, time.time() - started


def ensemble_rows(bench: Bench, budget: float) -> list[dict]:
    from pipeline.config import DEFAULT_MODEL, load_stage_config

    cfg = load_stage_config(REPO / "configs")
    members = [m["name"] for m in cfg["ensemble"]["models"]]
    spent = bench.model(DEFAULT_MODEL, budget, ["--set", "knn.local=false"])
    rows = [bench.row(f"{DEFAULT_MODEL}, global retrieval only", DEFAULT_MODEL, spent)]
    print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    stage("knn", *bench.common, "--model", DEFAULT_MODEL)  # the default retrieval: + local-feature re-scoring
    rows.append(bench.row(f"default recipe: {DEFAULT_MODEL}", DEFAULT_MODEL, spent))
    print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    # Training-free members (no epochs of the network nor of a head: colour_histogram, the zero-shot recipes)
    # learn nothing; members that train the whole network share the budget; a head on frozen features
    # (train.head_epochs) takes the minutes its features take, whatever the budget, and they are counted.
    trains = {name: load_stage_config(REPO / "configs", name)["train"] for name in members}
    trained = [name for name in members if int(trains[name]["epochs"]) != 0]
    share = budget / max(1, len(trained))
    for name in members:
        kind = "member" if name in trained or int(trains[name].get("head_epochs", 0)) else "member (training-free)"
        # The default recipe as a member at the whole budget is the single model already trained.
        minutes = rows[1]["train min"] if name == DEFAULT_MODEL and share == budget else bench.model(name, share)
        rows.append(bench.row(f"{kind}: {name}", name, minutes))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    rows.append(bench.bound_row(members, "members: each photo's best member (an oracle, not a method)"))
    print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    print(f"\nout-of-fold top-1 agreement between members (share of validation photos whose best whale is the same):\n"
          f"{bench.agreement(members).to_string()}\n", flush=True)
    stage("ensemble", *bench.common)
    spent = sum(r["train min"] for r in rows[2:] if r["train min"] is not None)
    for method in cfg["ensemble"]["methods"]:
        rows.append(bench.row(f"ensemble: {method}", f"ensemble_{method}", spent))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    snapshots = f"{DEFAULT_MODEL}_snapshots"
    if (REPO / "configs" / "models" / f"{snapshots}.yaml").is_file():
        rows.append(bench.row(f"ensemble: snapshots of one run ({snapshots})", snapshots, bench.model(snapshots, budget)))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    return rows


def classifier_diagnostics(bench: Bench, model: str) -> dict:
    """Why a softmax classifier over embeddings does or does not beat kNN here: the classifier over the
    best single model's own features (trained, and untrained: class means), and how much tighter the
    photos the network trained on sit around their whale's mean than validation photos do."""
    import copy

    import numpy as np

    from pipeline import columns as C
    from pipeline.config import load_stage_config
    from pipeline.data.cache import ImageCache
    from pipeline.data.folds import read_folds
    from pipeline.ensemble.methods import classifier
    from pipeline.decision.evaluation import cross_validate
    from pipeline.io.paths import embedding_dir, prediction_dir
    from pipeline.retrieval.embeddings import load_embeddings
    from pipeline.retrieval.predictions import Predictions
    from pipeline.decision.policy import NewWhalePolicy

    cfg = load_stage_config(REPO / "configs", overrides=[f"seed={bench.seed}"])
    folds, policy = read_folds(bench.folds_file), NewWhalePolicy.from_config(cfg)
    test_names = ImageCache.open(bench.work).split(C.TEST)[C.IMAGE].to_numpy()
    fold_list = sorted(int(f) for f in Predictions.read(prediction_dir(bench.work, model)).oof[C.FOLD].unique())
    out = {"set": bench.data.name}
    for label, epochs in (("classifier on its features", cfg["ensemble"]["classifier"]["epochs"]),
                          ("class means (untrained)", 0)):
        c = copy.deepcopy(cfg)
        c["ensemble"]["classifier"]["epochs"] = epochs
        c["ensemble"]["pseudo_labels"]["enabled"] = False
        c["ensemble"]["classifier"]["local"] = False  # features alone, against the model's global kNN
        oof = classifier(bench.work, [{"name": model, "weight": 1.0}], folds, fold_list, test_names, c)[0]
        out[label] = cross_validate(oof, folds, policy)["map5"]
    seen, unseen = [], []
    for k in fold_list:
        vectors = load_embeddings(embedding_dir(bench.work, model, k), folds[C.IMAGE], C.TRAIN)
        known = (folds[C.ID] != C.NEW_WHALE).to_numpy()
        train, val = known & (folds[C.FOLD] != k).to_numpy(), known & (folds[C.FOLD] == k).to_numpy()
        ids = folds[C.ID].to_numpy()
        for i in np.flatnonzero(train | val):
            mates = np.flatnonzero(train & (ids == ids[i]))
            mates = mates[mates != i]
            if len(mates):
                (seen if train[i] else unseen).append(float(np.mean(vectors[mates] @ vectors[i])))
    out["cosine to own whale: trained photos"] = round(float(np.mean(seen)), 3)
    out["validation photos"] = round(float(np.mean(unseen)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=1.0, help="training minutes per fold, single model and ensemble alike")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=["nyala", "lion"])
    parser.add_argument("--peer-sets", nargs="*", default=["nyala"], help="sets on which the PML peer also runs")
    parser.add_argument("--sift-sets", nargs="*", default=[],
                        help="sets on which the training-free SIFT peer also runs (minutes per set on 2 cores)")
    parser.add_argument("--work", type=Path, default=None, help="keep the work folders here (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("WHALE_PROGRESS", "off")
    from pipeline.config import DEFAULT_MODEL

    started = time.time()
    tables, peers, diagnostics, sift = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-ensemble-") as tmp:
        root = args.work or Path(tmp)
        for name in args.sets:
            data = SHARED / name
            if not (data / "train.csv").is_file():
                print(f"skip {name}: {data} not present")
                continue
            bench = Bench(data, root / name, [f"folds.n_folds={args.folds}", f"seed={args.seed}"], args.seed)
            bench.prepare()
            rows = ensemble_rows(bench, args.budget)
            tables.append(pd.DataFrame(rows))
            diagnostics.append({**classifier_diagnostics(bench, DEFAULT_MODEL), "its kNN (global)": rows[0]["CV"]})
            print(pd.DataFrame(diagnostics[-1:]).to_string(index=False), flush=True)
            if name in args.peer_sets and PEER.is_file():
                seconds = args.budget * args.folds * 60
                single = rows[1]["test"]
                for label, recipe in PEER_RECIPES.items():
                    score = peer(data, recipe, seconds, root / name / "peer.csv")
                    peers.append({"set": name, "minutes": seconds / 60, "PML recipe": label, "PML test": score,
                                  f"{DEFAULT_MODEL} test": single, "difference": round(single - score, 4),
                                  "global retrieval only": rows[0]["test"]})
                    print(pd.DataFrame(peers[-1:]).to_string(index=False), flush=True)
            if name in args.sift_sets and SIFT_PEER.is_file():
                score, seconds = sift_peer(data, root / name / "sift_peer.csv")
                sift.append({"set": name, "SIFT peer test": score, "its minutes": round(seconds / 60, 1),
                             f"{DEFAULT_MODEL} test": rows[1]["test"], "best single by CV, test": best_single(tables[-1])["test"],
                             "best ensemble method by CV, test": best_method(tables[-1])["test"]})
                print(pd.DataFrame(sift[-1:]).to_string(index=False), flush=True)
    print(f"\n== ensemble vs best single, {args.budget} training minute(s) per fold in all, {args.folds} folds, "
          f"seed {args.seed} (CV chooses; test is for the record) ==")
    for table in tables:
        single, best = best_single(table), best_method(table)
        print()
        print(table.to_string(index=False))
        print(f"best single recipe by CV: {single['predictions']} {single['CV']:.4f}; best ensemble method: "
              f"{best['predictions']} {best['CV']:.4f}")
        print(f"best method minus best single, CV: {best['CV'] - single['CV']:+.4f} (goal >= +0.03); minus the "
              f"default recipe: {best['CV'] - table.loc[1, 'CV']:+.4f}; classifier minus fusion, CV: "
              f"{_cv(table, 'ensemble: classifier') - _cv(table, 'ensemble: fusion'):+.4f} (goal > 0)")
    if diagnostics:
        print(f"\n== the classifier over one model's features against that model's kNN, CV MAP@5; mean cosine of "
              f"a photo to its whale's training photos ==")
        print(pd.DataFrame(diagnostics).to_string(index=False))
    if peers:
        print(f"\n== {DEFAULT_MODEL} vs the pytorch-metric-learning recipe, same total training minutes "
              f"(goal: best PML recipe + 0.10) ==")
        print(pd.DataFrame(peers).to_string(index=False))
    if sift:
        print("\n== the training-free SIFT matcher (wildlife-tools' recipe, ../shared/peers/sift_baseline.py), test MAP@5 ==")
        print(pd.DataFrame(sift).to_string(index=False))
    print(f"\nwall time {round((time.time() - started) / 60, 1)} min")


def _cv(table: pd.DataFrame, label: str) -> float:
    found = table.loc[table["predictions"] == label, "CV"]
    return float(found.iloc[0]) if len(found) else float("nan")


if __name__ == "__main__":
    main()
