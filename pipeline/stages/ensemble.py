"""ensemble: combine the models listed in configs/ensemble.yaml, by every method asked for, and compare.

Methods (ensemble.methods):
  fusion      weighted mean of the models' per-whale kNN scores;
  classifier  a softmax classifier over the models' concatenated embeddings: for fold k it trains on
              fold k's training photos only and predicts fold k's validation photos (out of fold) and
              test (averaged over folds);
  blend       blend_weight * fusion + (1 - blend_weight) * classifier probability.
Each method is written as predictions/ensemble_<method>; the one named by ensemble.output (best: the
highest cross-validated MAP@5) also as predictions/ensemble, which submit reads. Optional pseudo-labels
add confident test photos to the classifier's training and train it again. Prints (and writes to
reports/ensemble.md) MAP@5 per fold and overall for every single model and every method.

With --model NAME it passes that one model's predictions through (what `make all` does)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.config import load_config
from pipeline.data.cache import ImageCache, cache_dir
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_csv, write_json, write_text
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.retrieval.predictions import Predictions, write_predictions
from pipeline.retrieval.scores import fuse
from pipeline.stages.common import add_common, embedding_dir, prediction_dir
from pipeline.stages.folds import read_folds

log = logging.getLogger(__name__)
ENSEMBLE = "ensemble"
METHODS = ("fusion", "classifier", "blend")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--model", default=None, help="pass just this model through (instead of configs/ensemble.yaml)")
    parser.add_argument("--folds-file", default="folds/folds.csv")
    parser.add_argument("--list-models", action="store_true", help="print the models of ensemble.yaml and stop")


def members(args: argparse.Namespace) -> tuple[list[dict], dict]:
    # An explicit --pipeline file must exist; the default ones are optional.
    paths = [Path(args.pipeline)] if args.pipeline else [Path(args.configs) / "pipeline.yaml"]
    paths = [p for p in paths if args.pipeline or p.is_file()]
    if (Path(args.configs) / "ensemble.yaml").is_file():
        paths.append(Path(args.configs) / "ensemble.yaml")
    cfg = load_config(paths, args.overrides)
    if args.model:
        return [{"name": args.model, "weight": 1.0}], cfg
    listed = cfg["ensemble"]["models"]
    if not listed:
        raise PipelineError("no models listed under ensemble.models; name one with --model",
                            Path(args.configs) / "ensemble.yaml")
    unknown = sorted(set(cfg["ensemble"]["methods"]) - set(METHODS))
    if unknown:
        raise PipelineError(f"unknown ensemble method {unknown[0]!r}; use {', '.join(METHODS)}", "ensemble.methods")
    return [{"name": m["name"], "weight": float(m.get("weight", 1.0))} for m in listed], cfg


# ---------------------------------------------------------------------------------------- classifier

def classifier_predictions(work, models: list[dict], folds: pd.DataFrame, fold_list: list[int], test_names,
                           cfg: dict, extra: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold and test probability tables of the softmax over concatenated embeddings.
    `extra` (Image, Id) are pseudo-labelled test photos added to every fold's training."""
    from pipeline.ensemble.classifier import predict_proba, top_table, train_classifier
    from pipeline.ensemble.features import concatenated, mirrored

    ccfg, keep = cfg["ensemble"]["classifier"], cfg["knn"]["keep_top"]
    weights = [m["weight"] for m in models]
    oofs, tests = [], []
    for fold in fold_list:
        dirs = [embedding_dir(work, m["name"], fold) for m in models]
        train = folds[(folds[C.ID] != C.NEW_WHALE) & (folds[C.FOLD] != fold)]
        val = folds[folds[C.FOLD] == fold]
        x = concatenated(dirs, weights, train[C.IMAGE], C.TRAIN)
        ids = train[C.ID].to_numpy()
        if extra is not None and len(extra):
            x = np.concatenate([x, concatenated(dirs, weights, extra[C.IMAGE], C.TEST)])
            ids = np.concatenate([ids, extra[C.ID].to_numpy()])
        classes = np.array(sorted(set(ids)))
        y = np.searchsorted(classes, ids)
        if ccfg["flips"]:
            dims = [np.load(d / "test.npy", mmap_mode="r").shape[1] for d in dirs]
            x = np.concatenate([x, mirrored(x, dims)])
            y = np.concatenate([y, y + len(classes)])
        model = train_classifier(x, y, len(classes) * (2 if ccfg["flips"] else 1), ccfg, seed=int(cfg["seed"]) + fold)
        n = len(classes)  # mirrored classes compete in the softmax but are never answers
        val_p = predict_proba(model, concatenated(dirs, weights, val[C.IMAGE], C.TRAIN))[:, :n]
        test_p = predict_proba(model, concatenated(dirs, weights, test_names, C.TEST))[:, :n]
        oofs.append(top_table(val_p, classes, val[C.IMAGE], keep).assign(**{C.FOLD: fold}))
        tests.append(top_table(test_p, classes, test_names, keep))
    return pd.concat(oofs, ignore_index=True), fuse(tests)


def pseudo_labels(test: pd.DataFrame, min_score: float) -> pd.DataFrame:
    """Test photos whose best whale scores at least min_score, with that whale."""
    best = test.sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).drop_duplicates(C.IMAGE)
    chosen = best[best[C.SCORE] >= min_score]
    return chosen[[C.IMAGE, C.ID]].reset_index(drop=True)


def pseudo_label_precision(work, chosen: pd.DataFrame) -> float | None:
    """Share of pseudo-labels that solution.csv confirms, for data sets that have one (reporting only)."""
    import json

    report = cache_dir(work) / "preprocess.json"
    if not report.is_file():
        return None
    solution = Path(json.loads(report.read_text())["data"]) / "solution.csv"
    if not solution.is_file() or chosen.empty:
        return None
    truth = pd.read_csv(solution, dtype=str, keep_default_na=False).set_index(C.IMAGE)[C.ID]
    return float((truth.reindex(chosen[C.IMAGE]).to_numpy() == chosen[C.ID].to_numpy()).mean())


# ----------------------------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> dict:
    models, cfg = members(args)
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
    weights = [m["weight"] for m in models]
    common = sorted(set.intersection(*(set(int(f) for f in p.oof[C.FOLD].unique()) for p in preds)))
    fold_of = folds.set_index(C.IMAGE)[C.FOLD]

    results: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    oof = fuse([p.oof[p.oof[C.FOLD].isin(common)].drop(columns=C.FOLD) for p in preds], weights)
    results["fusion"] = (oof.assign(**{C.FOLD: oof[C.IMAGE].map(fold_of)}), fuse([p.test for p in preds], weights))
    pseudo = {}
    if set(methods) & {"classifier", "blend"}:
        test_names = ImageCache.open(args.work).split(C.TEST)[C.IMAGE].to_numpy()
        results["classifier"] = classifier_predictions(args.work, models, folds, common, test_names, cfg)
        if cfg["ensemble"]["pseudo_labels"]["enabled"]:
            chosen = pseudo_labels(results["classifier"][1], float(cfg["ensemble"]["pseudo_labels"]["min_score"]))
            precision = pseudo_label_precision(args.work, chosen)
            pseudo = {"added": int(len(chosen)), "precision_vs_solution": precision,
                      "min_score": float(cfg["ensemble"]["pseudo_labels"]["min_score"])}
            log.info("pseudo-labels: %d confident test photos added%s", len(chosen),
                     "" if precision is None else f" (precision against solution.csv {precision:.3f})")
            results["classifier"] = classifier_predictions(args.work, models, folds, common, test_names, cfg, chosen)
        w = float(cfg["ensemble"]["blend_weight"])
        blend_oof = fuse([results["fusion"][0].drop(columns=C.FOLD), results["classifier"][0].drop(columns=C.FOLD)],
                         [w, 1 - w])
        results["blend"] = (blend_oof.assign(**{C.FOLD: blend_oof[C.IMAGE].map(fold_of)}),
                            fuse([results["fusion"][1], results["classifier"][1]], [w, 1 - w]))

    table, scores = compare(args.work, models, methods, results, folds, cfg)
    choice = cfg["ensemble"]["output"]
    if choice == "best":
        choice = max(methods, key=lambda m: scores[m])
    elif choice not in methods:
        raise PipelineError(f"ensemble.output {choice!r} is not one of the methods run ({', '.join(methods)})",
                            "ensemble.output")
    threshold = write_predictions(out, *results[choice], folds, cfg["threshold"]["grid"], cfg["threshold"])
    write_csv(out / "members.csv", pd.DataFrame(models))
    write_json(Path(args.work) / "reports" / "ensemble.json",
               {"methods": methods, "chosen": choice, "scores": scores, "pseudo_labels": pseudo})
    stamp.write()
    if len(methods) > 1 or len(models) > 1:
        print(table)
    log.info("ensemble of %s: submit uses %s (CV MAP@5 %.4f), threshold %.4f", ", ".join(m["name"] for m in models),
             choice, scores[choice], threshold["threshold"])
    return threshold


def compare(work, models, methods, results, folds, cfg) -> tuple[str, dict]:
    """MAP@5 per fold and overall of each single model and each method; written to reports/ensemble.md."""
    from pipeline.stages.cv import evaluate

    rows, scores = [], {}
    entries = [(m["name"], Predictions.read(prediction_dir(work, m["name"])).oof) for m in models]
    entries += [(f"ensemble: {m}", results[m][0]) for m in methods]
    for name, oof in entries:
        report = evaluate(oof, folds, cfg["threshold"]["grid"], cfg["threshold"])
        row = {"predictions": name, **{f"fold {f['fold']}": f["map5"] for f in report["folds"]}, "overall": report["map5"]}
        rows.append(row)
        if name.startswith("ensemble: "):
            scores[name[len("ensemble: "):]] = report["map5"]
    for method in methods:
        folder = prediction_dir(work, f"{ENSEMBLE}_{method}")
        write_predictions(folder, *results[method], folds, cfg["threshold"]["grid"], cfg["threshold"])
    frame = pd.DataFrame(rows)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    write_text(Path(work) / "reports" / "ensemble.md",
               f"# Ensemble cross-validation (MAP@5, threshold strategy {cfg['threshold']['strategy']})\n\n"
               + "\n".join(lines) + "\n")
    return frame.to_string(index=False), scores
