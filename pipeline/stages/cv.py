"""cv: MAP@5 per fold and overall on out-of-fold predictions (pipeline/decision/evaluation.py), written to
WORK/reports/cv.json and cv.md with the config that produced them."""
from __future__ import annotations

import argparse
import json
import logging

import pandas as pd

from pipeline.data.folds import read_folds
from pipeline.decision.evaluation import cross_validate, markdown
from pipeline.io.atomic import write_json, write_text, write_yaml
from pipeline.io.paths import prediction_dir, reports_dir
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.decision.policy import NewWhalePolicy
from pipeline.retrieval.predictions import Predictions
from pipeline.stages.common import add_common, add_folds_file, folds_file, stage_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--name", default="ensemble", help="prediction set under WORK/predictions/")
    add_folds_file(parser)


def run(args: argparse.Namespace) -> dict:
    args.folds_file = str(folds_file(args))
    cfg = stage_config(args)
    out = reports_dir(args.work)
    oof_path = prediction_dir(args.work, args.name) / "oof.parquet"
    stamp = Stamp(args.work, f"cv-{args.name}", fingerprint([oof_path, args.folds_file], cfg["threshold"]),
                  [out / "cv.json", out / "cv.md"])
    if stamp.up_to_date(args.force):
        report = json.loads((out / "cv.json").read_text())
        print(f"CV MAP@5 ({args.name}): {report['map5']:.4f}")
        return report
    folds = read_folds(args.folds_file)
    preds = Predictions.read(prediction_dir(args.work, args.name))
    report = cross_validate(preds.oof, folds, NewWhalePolicy.from_config(cfg))
    report["name"] = args.name
    write_json(out / "cv.json", report)
    write_text(out / "cv.md", markdown(args.name, report))
    write_yaml(out / "cv.config.yaml", cfg)
    stamp.write()
    table = pd.DataFrame(report["folds"]).to_string(index=False)
    log.info("CV MAP@5 %.4f (%s)\n%s", report["map5"], args.name, table)
    print(f"CV MAP@5 ({args.name}): {report['map5']:.4f}")
    return report
