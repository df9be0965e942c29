"""MAP@5 on the real re-identification sets in ../shared/data (nyala, lion), end to end.

    python -m benchmarks.real_data --budget 2 [--model coupled_clusters] [--sets nyala lion]

Runs the whole chain (preprocess .. cv) per set in a temporary WORK, then scores the submission
against the set's solution.csv. Prints one table: set, model, budget, wall time, CV MAP@5, MAP@5 on
test, and the 'new_whale for everything' baseline. Sets that are absent are skipped."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.chain import run_chain
from pipeline.config import DEFAULT_MODEL
from pipeline.io.submission import read_submission, score_submission

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def run_set(data: Path, model: str, budget: float, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{data.name}-") as tmp:
        work = Path(tmp)
        started = time.time()
        run_chain(data, work, model, CONFIGS, overrides, budget=budget)
        seconds = time.time() - started
        solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
        test_map5 = score_submission(read_submission(work / "sub.csv"), solution)
        cv = json.loads((work / "reports" / "cv.json").read_text())
        return {"set": data.name, "model": model, "budget_min_per_fold": budget, "wall_s": round(seconds),
                "cv_map5": cv["map5"], "test_map5": round(test_map5, 4),
                "new_whale_only": round(float((solution[C.ID] == C.NEW_WHALE).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=2.0, help="training minutes per fold")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sets", nargs="+", default=["nyala", "lion"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = []
    for name in args.sets:
        data = SHARED / name
        if not (data / "train.csv").is_file():
            print(f"skip {name}: {data} not present")
            continue
        rows.append(run_set(data, args.model, args.budget, args.overrides))
    if rows:
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
