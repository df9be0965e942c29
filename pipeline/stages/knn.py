"""knn: per fold model, the out-of-fold scores of its validation photos and the scores of the test
photos, both searched against the gallery that model trained on (retrieval/retriever.py); test scores
fused over the fold models; the new_whale policy fitted on the out-of-fold scores."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.data.cache import ImageCache
from pipeline.data.folds import check_folds, read_folds
from pipeline.errors import PipelineError
from pipeline.io.paths import embedding_dir, embeddings_root, folds_with, prediction_dir
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.retrieval.embeddings import load_embeddings
from pipeline.retrieval.local.extract import DescriptorStore
from pipeline.retrieval.predictions import Predictions, write_predictions
from pipeline.retrieval.retriever import Retriever, fold_gallery
from pipeline.retrieval.scores import fuse_models
from pipeline.stages.common import add_common, add_folds, folds_file, parse_folds, stage_config

log = logging.getLogger(__name__)


def fold_scores(folder: Path, folds: pd.DataFrame, fold: int, test_names, retriever: Retriever):
    """(out-of-fold table, test table, whales in the gallery) of fold model `fold`; the re-scorers read
    the cached photos' own features (local descriptors) from the retriever."""
    vectors = load_embeddings(folder, folds[C.IMAGE], C.TRAIN)
    gallery = fold_gallery(vectors, folds, fold)
    queries = (folds[C.FOLD] == fold).to_numpy()
    names = folds[C.IMAGE].to_numpy()[queries]
    oof = retriever.search(gallery, vectors[queries], names,
                           query_features=retriever.cached_features(names, C.TRAIN)).scores
    test = retriever.search(gallery, load_embeddings(folder, test_names, C.TEST), test_names,
                            query_features=retriever.cached_features(test_names, C.TEST)).scores
    return oof.assign(**{C.FOLD: fold}), test, set(gallery.ids)


def calibrated(results, folds: pd.DataFrame, cfg: dict, out: Path):
    """knn.local_calibrate: fold k's out-of-fold rows fused by a calibration fitted on the other folds'
    rows; test rows by one fitted on every fold's rows, which is saved for identify and the bundle."""
    from pipeline.io.atomic import write_json
    from pipeline.decision.fusion_calibration import FusionCalibration, cross_fitted

    truth = folds.set_index(C.IMAGE)[C.TRUTH]
    weight = float(cfg["knn"]["local_weight"])
    raw = {int(r[0][C.FOLD].iloc[0]): r[0] for r in results if len(r[0])}
    fused = cross_fitted(raw, truth, weight)
    everything = FusionCalibration.fit(pd.concat(raw.values(), ignore_index=True), truth, weight)
    write_json(out / "local_calibration.json", everything.to_dict())
    return [(fused[int(r[0][C.FOLD].iloc[0])], everything.apply(r[1]), r[2]) for r in results]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, model=True)
    add_folds(parser)


def run(args: argparse.Namespace) -> dict:
    args.folds_file = str(folds_file(args))
    cfg = stage_config(args)
    folds = read_folds(args.folds_file)
    cache = ImageCache.open(args.work)
    check_folds(folds, cache.split(C.TRAIN)[C.IMAGE], args.folds_file)
    test_names = cache.split(C.TEST)[C.IMAGE].to_numpy()
    root = embeddings_root(args.work, cfg["name"])
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
    store = DescriptorStore.open(args.work, cfg["knn"]["local_keypoints"]) if cfg["knn"]["local"] else None
    calibrate = bool(cfg["knn"]["local"] and cfg["knn"]["local_calibrate"])
    # Fitting knn.local_calibrate: the tables keep the global score and the local count apart.
    retriever = Retriever({**cfg["knn"], "local_raw": calibrate}, cfg["seed"], descriptors=store)
    results = [fold_scores(embedding_dir(args.work, cfg["name"], k), folds, k, test_names, retriever) for k in wanted]
    if calibrate:
        results = calibrated(results, folds, cfg, out)
    policy = write_predictions(out, pd.concat([r[0] for r in results], ignore_index=True),
                               fuse_models([([r[1] for r in results], [r[2] for r in results])], [1.0]), folds, cfg,
                               args.folds_file)
    log.info("%s: folds %s, new_whale threshold %.4f (MAP@5 %.4f on the out-of-fold queries it was fitted on: "
             "in-sample; `whale cv` gives the nested figure), predictions in %s", cfg["name"], wanted,
             policy.threshold if policy.threshold is not None else float("nan"), policy.fitted["map5_in_sample"], out)
    stamp.write()
    return policy.to_dict()
