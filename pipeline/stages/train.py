"""train: fit one model config on each requested fold (and, with --full, on all train photos)."""
from __future__ import annotations

import argparse
import logging

from pipeline import columns as C
from pipeline.config import training_part
from pipeline.data.cache import ImageCache
from pipeline.data.folds import check_folds
from pipeline.io.paths import model_dir
from pipeline.stages.common import add_common, add_folds, folds_file, parse_folds, seed_everything, stage_config
from pipeline.data.folds import read_folds
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.fit import comparable, fit

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, model=True)
    add_folds(parser)
    parser.add_argument("--budget", type=float, default=None,
                        help="training minutes per fold (overrides train.time_budget_min)")
    parser.add_argument("--restart", action="store_true", help="ignore last.pt and train from scratch")


def run(args: argparse.Namespace) -> list[dict]:
    args.folds_file = str(folds_file(args))
    if args.budget is not None:
        args.overrides = [*args.overrides, f"train.time_budget_min={args.budget}"]
    cfg = stage_config(args)
    seed_everything(cfg["seed"])
    cache = ImageCache.open(args.work)
    folds = read_folds(args.folds_file)
    check_folds(folds, cache.split(C.TRAIN)[C.IMAGE], args.folds_file)
    results = []
    for fold in parse_folds(args.folds, int(folds[C.FOLD].max()) + 1):
        out = model_dir(args.work, cfg["name"], fold)
        final = out / "final.pt"
        if final.exists() and not (args.force or args.restart):
            if training_part(comparable(load_checkpoint(final)["config"])) == training_part(comparable(cfg)):
                log.info("fold %d: %s is up to date with this config; skipping (--force to retrain)", fold, final)
                continue
        if args.force:
            args.restart = True
        result = fit(cfg, cache, folds, fold, out, restart=args.restart)
        log.info("fold %d: %d epochs, %d steps in %.0fs on %s", fold, result["epochs"], result["steps"],
                 result["seconds"], result["device"])
        results.append(result)
    return results
