"""ensemble: combine the models listed in configs/ensemble.yaml by every method asked for, and compare.

Methods (ensemble.methods; the METHODS registry of pipeline/ensemble/methods.py): fusion, classifier,
blend. Each is written as predictions/ensemble_<method>; the one named by ensemble.output (best: the
highest cross-validated MAP@5) also as predictions/ensemble, which submit reads. Prints (and writes to reports/ensemble.md)
MAP@5 per fold and overall for every single model and every method.

With --model NAME it passes that one model's predictions through (what `make all` does)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.data.folds import read_folds
from pipeline.ensemble import methods as M
from pipeline.errors import PipelineError
from pipeline.decision.evaluation import cross_validate
from pipeline.io.atomic import write_csv, write_json, write_text
from pipeline.io.paths import embeddings_root, prediction_dir, reports_dir
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.decision.policy import NewWhalePolicy
from pipeline.retrieval.predictions import Predictions, write_predictions
from pipeline.stages.common import add_common, add_folds_file, folds_file, stage_config

log = logging.getLogger(__name__)
ENSEMBLE = "ensemble"
MEMBER = "member: "  # ensemble.output best may choose a member: its predictions pass through


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--model", default=None, help="pass just this model through (instead of configs/ensemble.yaml)")
    add_folds_file(parser)
    parser.add_argument("--list-models", action="store_true", help="print the models of ensemble.yaml and stop")
    parser.add_argument("--budget", type=float, default=None,
                        help="with --list-models: total training minutes per fold, printed beside each model as "
                             "its share ('-' for a member the budget does not bind: a head, training-free)")


def members(args: argparse.Namespace, cfg: dict) -> list[dict]:
    if args.model:
        return [{"name": args.model, "weight": 1.0}]
    listed = cfg["ensemble"]["models"]
    if not listed:
        raise PipelineError("no models listed under ensemble.models; name one with --model",
                            Path(args.configs) / "ensemble.yaml")
    M.run_order(cfg["ensemble"]["methods"])  # an unknown method: the registry's error, naming those there are
    return [{"name": m["name"], "weight": float(m.get("weight", 1.0))} for m in listed]


def run(args: argparse.Namespace) -> dict:
    args.folds_file = str(folds_file(args))
    cfg = stage_config(args)
    models = members(args, cfg)
    if args.list_models:
        if args.budget is None:
            print("\n".join(m["name"] for m in models))
        else:
            from pipeline.ensemble.budget import member_budgets

            shares = member_budgets([m["name"] for m in models], args.budget, args.configs, args.overrides, args.pipeline)
            print("\n".join(f"{name} {'-' if minutes is None else f'{minutes:.4g}'}" for name, minutes in shares.items()))
        return {}
    methods = ["fusion"] if args.model else list(cfg["ensemble"]["methods"])
    out = prediction_dir(args.work, ENSEMBLE)
    inputs = [args.folds_file, *(prediction_dir(args.work, m["name"]) / n for m in models
                                 for n in ("oof.parquet", "test.parquet"))]
    if M.reads_embeddings(methods):
        inputs += sorted(p for m in models for p in embeddings_root(args.work, m["name"]).glob("fold*/*"))
    stamp = Stamp(args.work, "ensemble", fingerprint(inputs, [models, methods, cfg["threshold"], cfg["ensemble"]]),
                  [out / "oof.parquet", out / "test.parquet", out / "threshold.json", out / "members.csv"])
    if stamp.up_to_date(args.force):
        return Predictions.read(out).threshold
    folds = read_folds(args.folds_file)
    preds = [Predictions.read(prediction_dir(args.work, m["name"])) for m in models]
    common = sorted(set.intersection(*(set(int(f) for f in p.oof[C.FOLD].unique()) for p in preds)))
    on_common = [p.oof[p.oof[C.FOLD].isin(common)] for p in preds]  # members scored on the folds the methods cover
    state = M.Run(args.work, models, on_common, [p.test for p in preds], folds, common, cfg)
    results = M.run_methods(state, methods)  # each after the methods it needs
    chosen, pseudo = state.pseudo_labels, {}
    if chosen:  # the labels themselves go to the report; scoring them against test truth is a benchmark's job
        labels = reports_dir(args.work) / "pseudo_labels.csv"
        write_csv(labels, pd.concat(chosen.values()).drop_duplicates()[[C.IMAGE, C.ID]])
        pseudo = {"added_per_fold": {int(k): int(len(v)) for k, v in chosen.items()},
                  "min_score": float(cfg["ensemble"]["pseudo_labels"]["min_score"]), "labels": str(labels)}
        log.info("pseudo-labels per fold: %s (listed in %s)", pseudo["added_per_fold"], labels)

    frame, scores, member_scores = compare(args.work, models, on_common, methods, results, folds, cfg,
                                           args.folds_file)
    choice = cfg["ensemble"]["output"]
    if choice == "best":
        # Among the methods and the members alike: an ensemble that scores below one of its members by
        # CV is not what a submission should use. A tie goes to the method (listed first).
        options = {**{m: scores[m] for m in methods},
                   **{f"{MEMBER}{name}": v for name, v in member_scores.items()}}
        choice = max(options, key=lambda k: options[k])
    elif choice not in methods:
        raise PipelineError(f"ensemble.output {choice!r} is not one of the methods run ({', '.join(methods)})",
                            "ensemble.output")
    if choice.startswith(MEMBER):
        name = choice[len(MEMBER):]
        index = [m["name"] for m in models].index(name)
        chosen_result, chosen_score = (on_common[index], preds[index].test), member_scores[name]
    else:
        chosen_result, chosen_score = results[choice], scores[choice]
    policy = write_predictions(out, *chosen_result, folds, cfg, args.folds_file)
    write_csv(out / "members.csv", pd.DataFrame(models).assign(method=choice))
    write_json(reports_dir(args.work) / "ensemble.json",
               {"methods": methods, "chosen": choice, "scores": scores, "member_scores": member_scores,
                "pseudo_labels": pseudo})
    table = frame.to_string(index=False) + f"\nsubmit uses: {choice} (CV MAP@5 {chosen_score:.4f})"
    why = "the highest CV MAP@5 among the methods and the members" if cfg["ensemble"]["output"] == "best" \
        else "ensemble.output"
    write_text(reports_dir(args.work) / "ensemble.md",
               f"# Ensemble cross-validation (MAP@5, threshold strategy {cfg['threshold']['strategy']})\n\n"
               f"{markdown_table(frame)}\n\nSubmit uses **{choice}** (CV MAP@5 {chosen_score:.4f}): {why}.\n")
    stamp.write()
    if len(methods) > 1 or len(models) > 1:
        print(table)
    log.info("ensemble of %s: submit uses %s (CV MAP@5 %.4f)", ", ".join(m["name"] for m in models), choice,
             chosen_score)
    return policy.to_dict()


def compare(work, models, member_oofs, methods, results, folds, cfg, folds_path) -> tuple[pd.DataFrame, dict, dict]:
    """MAP@5 per fold and overall of each single model and each method: (table, method -> MAP@5,
    member -> MAP@5); writes each method's predictions."""
    rows, scores, member_scores = [], {}, {}
    policy = NewWhalePolicy.from_config(cfg)
    entries = [(m["name"], oof) for m, oof in zip(models, member_oofs)]
    entries += [(f"ensemble: {m}", results[m][0]) for m in methods]
    for name, oof in entries:
        report = cross_validate(oof, folds, policy)
        rows.append({"predictions": name, **{f"fold {f['fold']}": f["map5"] for f in report["folds"]},
                     "overall": report["map5"]})
        if name.startswith("ensemble: "):
            scores[name[len("ensemble: "):]] = report["map5"]
        else:
            member_scores[name] = report["map5"]
    for method in methods:
        folder = prediction_dir(work, f"{ENSEMBLE}_{method}")
        write_predictions(folder, *results[method], folds, cfg, folds_path)
        write_csv(folder / "members.csv", pd.DataFrame(models).assign(method=method))
    return pd.DataFrame(rows), scores, member_scores


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(lines)
