"""MAP@5 on real humpback flukes: the default recipe, the zero-shot start, the pytorch-metric-learning
recipe from the same ImageNet weights and wildlife-tools' SIFT matcher, all in one run.

    python -m benchmarks.humpback --quick            # humpback_small (731 / 421 photos)
    python -m benchmarks.humpback --budget 5         # humpback (4,360 / 2,454 photos)

Rows: CV MAP@5 per fold and overall (5 folds; CV chooses defaults), test MAP@5 against solution.csv (for
the record), training minutes, optimiser steps and training photos per second. The PML peer trains once
on all of train for the same total minutes as the default recipe's folds together
(../shared/peers/pml_baseline.py --model tf_efficientnet_lite0 --weights FILE, FILE the mapped
EfficientNet-Lite0 package weights in timm's layout); the SIFT peer needs no training (--side 200)."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.ensemble import PEER, SHARED, SIFT_PEER, Bench, _peer_score

ZERO_SHOT = "lite0_zero_shot"


def humpback_set(quick: bool) -> Path | None:
    """../shared/data/humpback (humpback_small with --quick), or None, said on stdout, when it is absent."""
    data = SHARED / ("humpback_small" if quick else "humpback")
    if not (data / "train.csv").is_file():
        print(f"skip {data.name}: {data} not present")
        return None
    return data


def throughput(work: Path, name: str) -> dict:
    """Steps, training photos per second and the head's seconds, summed over the folds' checkpoints."""
    steps = photos = seconds = head = 0.0
    folds = 0
    for path in sorted((work / "models" / name).glob("fold*/final.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = state["config"]
        batch = int(cfg["sampler"]["classes_per_batch"]) * int(cfg["sampler"]["photos_per_class"])
        steps += state["steps"]
        photos += state["steps"] * batch
        seconds += state["elapsed"]
        head += float((state.get("head") or {}).get("head_total_seconds", 0.0))
        folds += 1
    return {"steps/fold": round(steps / max(1, folds)), "train photos/s": round(photos / seconds, 1) if seconds else None,
            "head s/fold": round(head / max(1, folds), 1)}


def lite0_timm_file(out: Path) -> Path:
    """The package's lite0 weights in timm's layout, for the PML peer's --weights."""
    from pipeline.models.weights import load_backbone

    spec = {"backbone": "tf_efficientnet_lite0", "architecture": "tf_efficientnet_lite0", "backbone_args": {},
            "img_size": None}
    backbone = load_backbone(spec, {"weights": "package:efficientnet_lite0"})
    torch.save(backbone.state_dict(), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="humpback_small instead of humpback")
    parser.add_argument("--budget", type=float, default=5.0, help="training minutes per fold")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--model", default=None, help="the recipe to measure (default: the default recipe)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--pml", nargs="*", default=["arcface"], choices=["arcface", "triplet"],
                        help="the PML peer's recipes (each trains for the default's total minutes)")
    parser.add_argument("--sift", action=argparse.BooleanOptionalAction, default=None,
                        help="run the SIFT peer (default: with --quick only; on humpback it compares every test "
                             "photo with every train photo, hours on 2 cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override for every row")
    parser.add_argument("--work", type=Path, default=None, help="keep the work folders here")
    args = parser.parse_args()
    os.environ.setdefault("WHALE_PROGRESS", "off")
    from pipeline.config import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    data = humpback_set(args.quick)
    if data is None:
        return
    name = data.name
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-humpback-") as tmp:
        root = args.work or Path(tmp)
        bench = Bench(data, root / name, [f"folds.n_folds={args.folds}", *args.overrides])
        bench.prepare()
        for recipe, budget in ((model, args.budget), *(() if args.no_zero_shot else ((ZERO_SHOT, None),))):
            spent = bench.model(recipe, budget or 0.0)
            rows.append({**bench.row(f"{recipe}{' (default)' if recipe == DEFAULT_MODEL else ''}", recipe, spent),
                         **throughput(bench.work, recipe)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
        solution = bench.solution
        rows.append({"set": name, "predictions": "all new_whale",
                     "test": round(float((solution["Id"] == "new_whale").mean()), 4)})
        if not args.no_peers and PEER.is_file():
            seconds = args.budget * args.folds * 60
            weights = lite0_timm_file(root / "lite0_timm.pth")
            for loss in args.pml:
                tune = {"arcface": "split", "triplet": "loo"}[loss]  # each recipe's tuning, as its docstring has it
                t0 = time.time()
                score = _peer_score(PEER, [str(data), "--model", "tf_efficientnet_lite0", "--weights", str(weights),
                                           "--hw", "128,256", "--budget", str(seconds), "--loss", loss, "--tune", tune,
                                           "--out", str(root / f"pml_{loss}.csv")], r"MAP@5 ([0-9.]+)")
                rows.append({"set": name, "predictions": f"PML {loss} ({tune}), lite0 ImageNet",
                             "train min": round((time.time() - t0) / 60, 2), "test": score})
                print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
        if not args.no_peers and SIFT_PEER.is_file() and (args.quick if args.sift is None else args.sift):
            t0 = time.time()
            score = _peer_score(SIFT_PEER, [str(data), "--side", "200", "--out", str(root / "sift.csv")],
                                r"test MAP@5 ([0-9.]+)")
            rows.append({"set": name, "predictions": "SIFT matcher (wildlife-tools), --side 200",
                         "train min": round((time.time() - t0) / 60, 2), "test": score})
    print(f"\n== {name}: {args.budget} training minute(s) per fold, {args.folds} folds (CV chooses; test for the record) ==")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nwall time {round((time.time() - started) / 60, 1)} min")


if __name__ == "__main__":
    main()
