"""ensemble: fuse the per-whale scores of the models listed in configs/ensemble.yaml (weighted mean)
and tune one new_whale threshold on the fused out-of-fold predictions. With one model it passes its
predictions through."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_csv
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.retrieval.predictions import Predictions, write_predictions
from pipeline.retrieval.scores import fuse
from pipeline.stages.common import add_common, prediction_dir
from pipeline.stages.folds import read_folds

log = logging.getLogger(__name__)
ENSEMBLE = "ensemble"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--model", default=None, help="fuse just this model (instead of configs/ensemble.yaml)")
    parser.add_argument("--folds-file", default="folds/folds.csv")


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
    return [{"name": m["name"], "weight": float(m.get("weight", 1.0))} for m in listed], cfg


def run(args: argparse.Namespace) -> dict:
    models, cfg = members(args)
    out = prediction_dir(args.work, ENSEMBLE)
    inputs = [args.folds_file, *(prediction_dir(args.work, m["name"]) / n for m in models
                                 for n in ("oof.parquet", "test.parquet"))]
    stamp = Stamp(args.work, "ensemble", fingerprint(inputs, [models, cfg["threshold"]]),
                  [out / "oof.parquet", out / "test.parquet", out / "threshold.json", out / "members.csv"])
    if stamp.up_to_date(args.force):
        return Predictions.read(out).threshold
    folds = read_folds(args.folds_file)
    preds = [Predictions.read(prediction_dir(args.work, m["name"])) for m in models]
    weights = [m["weight"] for m in models]
    common = set.intersection(*(set(p.oof[C.FOLD].unique()) for p in preds))
    oof = fuse([p.oof[p.oof[C.FOLD].isin(common)].drop(columns=C.FOLD) for p in preds], weights)
    oof[C.FOLD] = oof[C.IMAGE].map(folds.set_index(C.IMAGE)[C.FOLD])
    test = fuse([p.test for p in preds], weights)
    threshold = write_predictions(out, oof, test, folds, cfg["threshold"]["grid"])
    write_csv(out / "members.csv", pd.DataFrame(models))
    stamp.write()
    log.info("ensemble of %s: threshold %.4f", ", ".join(m["name"] for m in models), threshold["threshold"])
    return threshold
