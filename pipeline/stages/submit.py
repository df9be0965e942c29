"""submit: five labels per test photo from the fused test scores and the tuned threshold."""
from __future__ import annotations

import argparse
import logging

import pandas as pd

from pipeline import columns as C
from pathlib import Path

from pipeline.data.cache import ImageCache, cache_dir
from pipeline.data.duplicates import put_first, duplicate_answers
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.io.atomic import write_csv
from pipeline.io.submission import check_submission
from pipeline.retrieval.predictions import Predictions, fallback_whales
from pipeline.io.paths import prediction_dir
from pipeline.stages.common import add_common, add_folds_file, folds_file, stage_config
from pipeline.data.folds import read_folds

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--name", default="ensemble", help="prediction set under WORK/predictions/")
    add_folds_file(parser)
    parser.add_argument("--out", default="submissions/submission.csv", help="submission CSV to write")
    parser.add_argument("--threshold", type=float, default=None, help="override the tuned new_whale threshold")


def run(args: argparse.Namespace) -> str:
    args.folds_file = str(folds_file(args))
    folder = prediction_dir(args.work, args.name)
    duplicates = stage_config(args)["duplicates"]
    stamp = Stamp(args.work, f"submit-{Path(args.out).resolve()}",
                  fingerprint([folder / "test.parquet", folder / "threshold.json", args.folds_file,
                               cache_dir(args.work) / "manifest.parquet", cache_dir(args.work) / "duplicates.csv"],
                              [args.name, args.threshold, duplicates]), [args.out])
    if stamp.up_to_date(args.force):
        print(f"Submission: {args.out}")
        return args.out
    preds = Predictions.read(folder)
    cache = ImageCache.open(args.work)
    test_names = cache.split(C.TEST)[C.IMAGE].tolist()  # sample_submission's order
    policy = preds.policy
    if args.threshold is not None:
        policy.threshold = float(args.threshold)
    labels = policy.labels(preds.test, test_names, fallback_whales(read_folds(args.folds_file)))
    threshold = policy.threshold
    if duplicates["use_in_submission"]:
        labels = answer_duplicates(cache, test_names, labels)
    submission = pd.DataFrame({C.IMAGE: test_names, C.ID: [" ".join(x) for x in labels]})
    check_submission(submission, test_names, args.out)
    write_csv(args.out, submission)
    stamp.write()
    share = sum(x[0] == C.NEW_WHALE for x in labels) / max(1, len(labels))
    log.info("wrote %s: %d photos, threshold %.4f, new_whale first for %.0f%%", args.out, len(labels), threshold,
             100 * share)
    print(f"Submission: {args.out}")
    return args.out


def answer_duplicates(cache: ImageCache, test_names, labels):
    """Opt-in (duplicates.use_in_submission): a test photo with a near-identical known-whale train photo
    gets that whale first. Ids come from the manifest, so merged ids are used when merging is on."""
    pairs = pd.read_csv(cache.folder / "duplicates.csv", dtype=str, keep_default_na=False)
    pairs["distance"] = pairs["distance"].astype(int)
    ids = cache.manifest.set_index(C.IMAGE)[C.ID]
    pairs["id_a"] = ids.reindex(pairs["image_a"]).to_numpy()
    answers = duplicate_answers(pairs)
    labels, used = put_first(labels, test_names, answers)
    log.warning("duplicates.use_in_submission: %d test photo(s) answered by their train duplicate's whale", used)
    print(f"Train/test duplicates used for {used} test photo(s)")
    return labels
