"""cv: MAP@5 per fold and overall on out-of-fold predictions.

Each fold is scored at a threshold tuned on the *other* folds, so no fold's score comes from a
threshold tuned on itself; with a single fold, the in-sample figure is all there is, and says so.
The MAP@5-against-threshold curve is over all out-of-fold queries."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.io.atomic import write_json, write_text
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.metrics import map_at_5
from pipeline.retrieval.predictions import Predictions
from pipeline.retrieval.threshold import map5_by_threshold, share_threshold, top_whales, tune_threshold
from pipeline.stages.common import add_common, prediction_dir, stage_config
from pipeline.stages.folds import read_folds

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--name", default="ensemble", help="prediction set under WORK/predictions/")
    parser.add_argument("--folds-file", default="folds/folds.csv")


def evaluate(oof: pd.DataFrame, folds: pd.DataFrame, grid: int = 201, threshold_cfg: dict | None = None) -> dict:
    """Per fold and overall MAP@5. Strategy cv: each fold at the threshold tuned on the other folds;
    strategy share: each fold at the threshold that puts new_whale first for the configured share of
    its own queries (no labels involved)."""
    by_share = bool(threshold_cfg) and threshold_cfg.get("strategy", "cv") == "share"
    done = sorted(int(f) for f in oof[C.FOLD].unique())
    queries = folds[folds[C.FOLD].isin(done)].reset_index(drop=True)
    ids, vals = top_whales(oof, queries[C.IMAGE])
    truths = queries[C.TRUTH].to_numpy()
    fold_of = queries[C.FOLD].to_numpy()
    per_fold, ap_sum = [], 0.0
    for k in done:
        mine = fold_of == k
        others = ~mine
        nested = len(done) > 1
        if by_share:
            t = share_threshold(vals[mine], threshold_cfg["new_whale_share"])
        else:
            t, _, _ = tune_threshold(ids[others if nested else mine], vals[others if nested else mine],
                                     truths[others if nested else mine], grid)
        score = float(map5_by_threshold(ids[mine], vals[mine], truths[mine], [t])[0])
        ap_sum += score * mine.sum()
        per_fold.append({"fold": k, "queries": int(mine.sum()), "threshold": round(t, 4), "map5": round(score, 4),
                         "new_whale_share": round(float((truths[mine] == C.NEW_WHALE).mean()), 3)})
    best_t, in_sample, curve = tune_threshold(ids, vals, truths, grid)
    baseline = map_at_5(truths, [[C.NEW_WHALE]] * len(truths))
    return {
        "folds": per_fold, "map5": round(ap_sum / len(queries), 4), "queries": int(len(queries)),
        "threshold_nested": len(done) > 1 or by_share, "strategy": "share" if by_share else "cv",
        "threshold": round(best_t, 4), "map5_in_sample": round(in_sample, 4),
        "map5_no_threshold": round(float(map5_by_threshold(ids, vals, truths, [np.inf])[0]), 4),
        "new_whale_first_baseline": round(baseline, 4), "curve": curve.round(5).to_dict(orient="list"),
    }


def markdown(name: str, report: dict) -> str:
    lines = [f"# Cross-validation: {name}", "",
             f"Out-of-fold MAP@5: **{report['map5']:.4f}** over {report['queries']} validation photos "
             + ("(each fold with new_whale first for the configured share of its queries)."
                if report.get("strategy") == "share" else
                "(each fold at a threshold tuned on the other folds)." if report["threshold_nested"]
                else "(one fold: threshold tuned on the same photos, an optimistic figure)."), "",
             "| fold | queries | new_whale share | threshold | MAP@5 |", "|---:|---:|---:|---:|---:|"]
    for f in report["folds"]:
        lines.append(f"| {f['fold']} | {f['queries']} | {f['new_whale_share']:.3f} | {f['threshold']:.4f} | {f['map5']:.4f} |")
    lines += ["", f"- Threshold tuned on all folds (used for test): {report['threshold']:.4f}, "
                  f"MAP@5 there {report['map5_in_sample']:.4f} (in-sample).",
              f"- Never predicting new_whale first: {report['map5_no_threshold']:.4f}; predicting only new_whale: "
              f"{report['new_whale_first_baseline']:.4f}.", "", "## MAP@5 against the new_whale threshold", "",
              "| threshold | MAP@5 |", "|---:|---:|"]
    curve = pd.DataFrame(report["curve"])
    for _, row in curve.iloc[:: max(1, len(curve) // 20)].iterrows():
        lines.append(f"| {row['threshold']:.4f} | {row['map5']:.4f} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    cfg = stage_config(args)
    out = Path(args.work) / "reports"
    oof_path = prediction_dir(args.work, args.name) / "oof.parquet"
    stamp = Stamp(args.work, f"cv-{args.name}", fingerprint([oof_path, args.folds_file], cfg["threshold"]),
                  [out / "cv.json", out / "cv.md"])
    if stamp.up_to_date(args.force):
        report = json.loads((out / "cv.json").read_text())
        print(f"CV MAP@5 ({args.name}): {report['map5']:.4f}")
        return report
    folds = read_folds(args.folds_file)
    preds = Predictions.read(prediction_dir(args.work, args.name))
    report = evaluate(preds.oof, folds, cfg["threshold"]["grid"], cfg["threshold"])
    report["name"] = args.name
    write_json(out / "cv.json", report)
    write_text(out / "cv.md", markdown(args.name, report))
    stamp.write()
    table = pd.DataFrame(report["folds"]).to_string(index=False)
    log.info("CV MAP@5 %.4f (%s)\n%s", report["map5"], args.name, table)
    print(f"CV MAP@5 ({args.name}): {report['map5']:.4f}")
    return report
