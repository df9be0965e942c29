"""knn: per fold, search validation photos against that fold's training photos (out-of-fold
predictions) and test photos against every known train photo; tune the new_whale threshold."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.data.cache import ImageCache
from pipeline.data.folds import check_folds
from pipeline.errors import PipelineError
from pipeline.retrieval.embeddings import load_embeddings
from pipeline.retrieval.index import search
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.retrieval.predictions import Predictions, write_predictions
from pipeline.retrieval.scores import fuse, whale_scores
from pipeline.stages.common import (add_common, add_folds, embedding_dir, folds_with, parse_folds, prediction_dir,
                                   stage_config)
from pipeline.stages.folds import read_folds

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, model=True)
    add_folds(parser)


def fold_scores(folder: Path, folds: pd.DataFrame, fold: int, test_names, cfg: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    k = cfg["knn"]
    train_vectors = load_embeddings(folder, folds[C.IMAGE], C.TRAIN)
    known = (folds[C.ID] != C.NEW_WHALE).to_numpy()
    gallery = known & (folds[C.FOLD] != fold).to_numpy()
    queries = (folds[C.FOLD] == fold).to_numpy()
    options = {"kind": k["index"], "nlist": k["nlist"], "nprobe": k["nprobe"]}  # flat ignores nlist/nprobe
    sims, idx = search(train_vectors[gallery], train_vectors[queries], k["neighbours"], **options)
    oof = whale_scores(sims, idx, folds[C.ID].to_numpy()[gallery], folds[C.IMAGE].to_numpy()[queries], k["keep_top"])
    oof[C.FOLD] = fold
    test_vectors = load_embeddings(folder, test_names, C.TEST)
    sims, idx = search(train_vectors[known], test_vectors, k["neighbours"], **options)
    test = whale_scores(sims, idx, folds[C.ID].to_numpy()[known], np.asarray(test_names), k["keep_top"])
    return oof, test


def run(args: argparse.Namespace) -> dict:
    cfg = stage_config(args)
    folds = read_folds(args.folds_file)
    cache = ImageCache.open(args.work)
    check_folds(folds, cache.split(C.TRAIN)[C.IMAGE], args.folds_file)
    test_names = cache.split(C.TEST)[C.IMAGE].to_numpy()
    root = Path(args.work) / "embeddings" / cfg["name"]
    available = folds_with(root, "index.csv")
    wanted = available if args.folds == "all" else parse_folds(args.folds, int(folds[C.FOLD].max()) + 1)
    if not wanted:
        raise PipelineError("no embeddings; run the embed stage first", root)
    out = prediction_dir(args.work, cfg["name"])
    inputs = [args.folds_file, *(embedding_dir(args.work, cfg["name"], k) / n for k in wanted
                                 for n in ("train.npy", "test.npy", "index.csv"))]
    stamp = Stamp(args.work, f"knn-{cfg['name']}", fingerprint(inputs, [wanted, cfg["knn"], cfg["threshold"]]),
                  [out / "oof.parquet", out / "test.parquet", out / "threshold.json"])
    if stamp.up_to_date(args.force):
        return Predictions.read(out).threshold
    oofs, tests = [], []
    for fold in wanted:
        oof, test = fold_scores(embedding_dir(args.work, cfg["name"], fold), folds, fold, test_names, cfg)
        oofs.append(oof)
        tests.append(test)
    threshold = write_predictions(out, pd.concat(oofs, ignore_index=True), fuse(tests), folds,
                                  cfg["threshold"]["grid"], cfg["threshold"])
    log.info("%s: folds %s, new_whale threshold %.4f (out-of-fold MAP@5 %.4f at it), predictions in %s",
             cfg["name"], wanted, threshold["threshold"], threshold["oof_map5_in_sample"], out)
    stamp.write()
    return threshold
