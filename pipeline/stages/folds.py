"""folds: assign every cached train photo to a validation fold shaped like the test set."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.data.cache import ImageCache, cache_dir
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.data.folds import make_folds, read_folds, summarise
from pipeline.io.atomic import write_csv
from pipeline.stages.common import add_common, add_folds_file, folds_file, stage_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    add_folds_file(parser)


def run(args: argparse.Namespace) -> pd.DataFrame:
    args.folds_file = str(folds_file(args))
    cfg = stage_config(args)
    manifest = cache_dir(args.work) / "manifest.parquet"
    stamp = Stamp(args.work, f"folds-{Path(args.folds_file).resolve()}",
                  fingerprint([manifest, cache_dir(args.work) / "duplicates.csv"], [cfg["folds"], cfg["seed"]]),
                  [args.folds_file])
    if stamp.up_to_date(args.force):
        return summarise(read_folds(args.folds_file))
    train = ImageCache.open(args.work).split(C.TRAIN)
    f = cfg["folds"]
    pairs_path = cache_dir(args.work) / "duplicates.csv"
    pairs = pd.read_csv(pairs_path, dtype=str, keep_default_na=False) if pairs_path.is_file() else None
    folds = make_folds(train, f["n_folds"], f["new_whale_share"], f["holdout_whale_share"], cfg["seed"], pairs)
    write_csv(args.folds_file, folds)
    stamp.write()
    summary = summarise(folds)
    log.info("wrote %s (%d photos, %d train-only)\n%s", args.folds_file, len(folds),
             int((folds[C.FOLD] == C.TRAIN_ONLY).sum()), summary.to_string(index=False))
    return summary
