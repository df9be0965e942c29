"""Every loss recipe trained on a real set at the same wall-clock budget, side by side.

    python -m benchmarks.losses [--budget 1] [--folds 3] [--data ../shared/data/nyala] [--recipes a b ...]

Preprocessing and folds are shared; each recipe then trains (the same budget per fold), embeds, runs
kNN, submits and is cross-validated in the same WORK. Prints one table: recipe, backbone, epochs
and steps done (mean per fold), CV MAP@5, MAP@5 against solution.csv, wall time of the recipe."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from pipeline.chain import run_chain
from pipeline.config import load_stage_config
from pipeline.io.atomic import write_text
from pipeline.io.submission import read_submission, score_submission

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"
# The spine's baseline first, then one recipe per family (configs/models/*.yaml).
RECIPES = ["resnet18_arcface", "arcface", "cosface", "sphereface", "dynamic_subcenter", "normsoftmax",
           "triplet_hard", "triplet_semihard", "triplet_flip_newwhale", "contrastive", "npair_hard_classes",
           "margin_dw", "coupled_clusters", "bce_triplet", "divide_conquer"]


def trained(work: Path, recipe: str) -> tuple[float, float]:
    """Mean epochs and steps per fold of a recipe's final checkpoints."""
    states = [torch.load(p, weights_only=True) for p in sorted((work / "models" / recipe).glob("fold*/final.pt"))]
    return (sum(s["epochs"] for s in states) / len(states), sum(s["steps"] for s in states) / len(states))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "nyala")
    parser.add_argument("--budget", type=float, default=0.75, help="training minutes per fold")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        print(f"skip: {args.data} not present")
        return
    solution = pd.read_csv(args.data / "solution.csv", dtype=str, keep_default_na=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-losses-") as tmp:
        work = Path(tmp)
        for recipe in args.recipes:
            started = time.time()
            submission = run_chain(args.data, work, recipe, CONFIGS, [f"folds.n_folds={args.folds}"],
                                   submission=work / f"{recipe}.csv", budget=args.budget)
            seconds = time.time() - started
            epochs, steps = trained(work, recipe)
            cv = json.loads((work / "reports" / "cv.json").read_text())
            rows.append({"recipe": recipe,
                         "backbone": load_stage_config(CONFIGS, recipe)["model"]["backbone"],
                         "epochs": round(epochs, 1), "steps": round(steps), "cv_map5": round(cv["map5"], 4),
                         "test_map5": round(score_submission(read_submission(submission), solution), 4),
                         "wall_s": round(seconds)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{args.data.name}: {args.budget} min per fold, {args.folds} folds, image size "
          f"{load_stage_config(CONFIGS)['preprocess']['image_size']}")
    print(table.to_string(index=False))
    if args.out:
        lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
