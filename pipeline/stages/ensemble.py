"""ensemble: combine the models listed in configs/ensemble.yaml by every method asked for, and compare.

Methods (ensemble.methods, pipeline/ensemble/methods.py): fusion, classifier, blend. Each is written as
predictions/ensemble_<method>; the one named by ensemble.output (best: the highest cross-validated
MAP@5) also as predictions/ensemble, which submit reads. Prints (and writes to reports/ensemble.md)
MAP@5 per fold and overall for every single model and every method.

With --model NAME it passes that one model's predictions through (what `make all` does)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.data.cache import ImageCache, cache_dir
from pipeline.data.folds import read_folds
from pipeline.ensemble import methods as M
from pipeline.errors import PipelineError
from pipeline.evaluation import cross_validate
from pipeline.io.atomic import write_csv, write_json, write_text
from pipeline.io.paths import prediction_dir
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.retrieval.policy import NewWhalePolicy
from pipeline.retrieval.predictions import Predictions, write_predictions
from pipeline.stages.common import add_common, add_folds_file, folds_file, stage_config

log = logging.getLogger(__name__)
ENSEMBLE = "ensemble"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--model", default=None, help="pass just this model through (instead of configs/ensemble.yaml)")
    add_folds_file(parser)
    parser.add_argument("--list-models", action="store_true", help="print the models of ensemble.yaml and stop")


def members(args: argparse.Namespace, cfg: dict) -> list[dict]:
    if args.model:
        return [{"name": args.model, "weight": 1.0}]
    listed = cfg["ensemble"]["models"]
    if not listed:
        raise PipelineError("no models listed under ensemble.models; name one with --model",
                            Path(args.configs) / "ensemble.yaml")
    unknown = sorted(set(cfg["ensemble"]["methods"]) - set(M.METHODS))
    if unknown:
        raise PipelineError(f"unknown ensemble method {unknown[0]!r}; use {', '.join(M.METHODS)}", "ensemble.methods")
    return [{"name": m["name"], "weight": float(m.get("weight", 1.0))} for m in listed]


def pseudo_label_precision(work, chosen: pd.DataFrame) -> float | None:
    """Share of pseudo-labels that solution.csv confirms, for data sets that have one (reporting only)."""
    report = cache_dir(work) / "preprocess.json"
    if not report.is_file():
        return None
    solution = Path(json.loads(report.read_text())["data"]) / "solution.csv"
    if not solution.is_file() or chosen.empty:
        return None
    truth = pd.read_csv(solution, dtype=str, keep_default_na=False).set_index(C.IMAGE)[C.ID]
    return float((truth.reindex(chosen[C.IMAGE]).to_numpy() == chosen[C.ID].to_numpy()).mean())


def run(args: argparse.Namespace) -> dict:
    args.folds_file = str(folds_file(args))
    cfg = stage_config(args)
    models = members(args, cfg)
    if args.list_models:
        print("\n".join(m["name"] for m in models))
        return {}
    methods = ["fusion"] if args.model else list(cfg["ensemble"]["methods"])
    out = prediction_dir(args.work, ENSEMBLE)
    inputs = [args.folds_file, *(prediction_dir(args.work, m["name"]) / n for m in models
                                 for n in ("oof.parquet", "test.parquet"))]
    if set(methods) & {"classifier", "blend"}:
        inputs += sorted(p for m in models for p in (Path(args.work) / "embeddings" / m["name"]).glob("fold*/*"))
    stamp = Stamp(args.work, "ensemble", fingerprint(inputs, [models, methods, cfg["threshold"], cfg["ensemble"]]),
                  [out / "oof.parquet", out / "test.parquet", out / "threshold.json", out / "members.csv"])
    if stamp.up_to_date(args.force):
        return Predictions.read(out).threshold
    folds = read_folds(args.folds_file)
    preds = [Predictions.read(prediction_dir(args.work, m["name"])) for m in models]
    common = sorted(set.intersection(*(set(int(f) for f in p.oof[C.FOLD].unique()) for p in preds)))
    results = {"fusion": M.fusion([p.oof[p.oof[C.FOLD].isin(common)] for p in preds], [p.test for p in preds],
                                  [m["weight"] for m in models], folds)}
    pseudo = {}
    if set(methods) & {"classifier", "blend"}:
        test_names = ImageCache.open(args.work).split(C.TEST)[C.IMAGE].to_numpy()
        oof, test, chosen = M.classifier(args.work, models, folds, common, test_names, cfg)
        results["classifier"] = (oof, test)
        if chosen:
            pooled = pd.concat(chosen.values()).drop_duplicates()
            precision = pseudo_label_precision(args.work, pooled)
            pseudo = {"added_per_fold": {int(k): int(len(v)) for k, v in chosen.items()},
                      "precision_vs_solution": precision,
                      "min_score": float(cfg["ensemble"]["pseudo_labels"]["min_score"])}
            log.info("pseudo-labels per fold: %s%s", pseudo["added_per_fold"],
                     "" if precision is None else f" (precision against solution.csv {precision:.3f}, reporting only)")
        results["blend"] = M.blend(results["fusion"], results["classifier"], float(cfg["ensemble"]["blend_weight"]),
                                   folds)

    table, scores = compare(args.work, models, methods, results, folds, cfg, args.folds_file)
    choice = cfg["ensemble"]["output"]
    if choice == "best":
        choice = max(methods, key=lambda m: scores[m])
    elif choice not in methods:
        raise PipelineError(f"ensemble.output {choice!r} is not one of the methods run ({', '.join(methods)})",
                            "ensemble.output")
    policy = write_predictions(out, *results[choice], folds, cfg, args.folds_file)
    write_csv(out / "members.csv", pd.DataFrame(models).assign(method=choice))
    write_json(Path(args.work) / "reports" / "ensemble.json",
               {"methods": methods, "chosen": choice, "scores": scores, "pseudo_labels": pseudo})
    stamp.write()
    if len(methods) > 1 or len(models) > 1:
        print(table)
    log.info("ensemble of %s: submit uses %s (CV MAP@5 %.4f)", ", ".join(m["name"] for m in models), choice,
             scores[choice])
    return policy.to_dict()


def compare(work, models, methods, results, folds, cfg, folds_path) -> tuple[str, dict]:
    """MAP@5 per fold and overall of each single model and each method; written to reports/ensemble.md."""
    rows, scores = [], {}
    policy = NewWhalePolicy.from_config(cfg)
    entries = [(m["name"], Predictions.read(prediction_dir(work, m["name"])).oof) for m in models]
    entries += [(f"ensemble: {m}", results[m][0]) for m in methods]
    for name, oof in entries:
        report = cross_validate(oof, folds, policy)
        rows.append({"predictions": name, **{f"fold {f['fold']}": f["map5"] for f in report["folds"]},
                     "overall": report["map5"]})
        if name.startswith("ensemble: "):
            scores[name[len("ensemble: "):]] = report["map5"]
    for method in methods:
        folder = prediction_dir(work, f"{ENSEMBLE}_{method}")
        write_predictions(folder, *results[method], folds, cfg, folds_path)
        write_csv(folder / "members.csv", pd.DataFrame(models).assign(method=method))
    frame = pd.DataFrame(rows)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    write_text(Path(work) / "reports" / "ensemble.md",
               f"# Ensemble cross-validation (MAP@5, threshold strategy {cfg['threshold']['strategy']})\n\n"
               + "\n".join(lines) + "\n")
    return frame.to_string(index=False), scores
