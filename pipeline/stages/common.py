"""Arguments and paths shared by the stages."""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from pipeline.config import DEFAULT_MODEL, load_stage_config


def add_common(parser: argparse.ArgumentParser, model: bool = False) -> None:
    parser.add_argument("--work", default="work", help="working folder for caches, models, predictions")
    parser.add_argument("--configs", default="configs", help="folder holding models/ and ensemble.yaml")
    parser.add_argument("--pipeline", default=None,
                        help="shared settings file (default: <configs>/pipeline.yaml when present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
    parser.add_argument("--force", action="store_true", help="redo the stage even if its inputs did not change")
    if model:
        parser.add_argument("--model", default=DEFAULT_MODEL,
                            help=f"a config name under configs/models/ (default {DEFAULT_MODEL})")


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data", help="folder in the Kaggle layout")


def add_folds_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folds-file", default=None,
                        help="fold assignment (default: folds/<data set>-<hash>.csv for the data cached in --work)")


def folds_file(args: argparse.Namespace) -> Path:
    """The folds file named on the command line, else the one that follows the work folder's data set."""
    from pipeline.io.paths import default_folds_file

    return Path(args.folds_file) if args.folds_file else default_folds_file(args.work)


def add_folds(parser: argparse.ArgumentParser) -> None:
    add_folds_file(parser)
    parser.add_argument("--folds", default="all", help="which folds, e.g. 'all' or '0,2'")


def stage_config(args: argparse.Namespace) -> dict:
    return load_stage_config(args.configs, getattr(args, "model", None), args.overrides, args.pipeline)


def parse_folds(text: str, n_folds: int) -> list[int]:
    from pipeline.errors import PipelineError

    if text in ("all", "", None):
        return list(range(n_folds))
    try:
        folds = sorted({int(t) for t in str(text).split(",") if t.strip() != ""})
    except ValueError:
        raise PipelineError(f"--folds {text!r} must be 'all' or comma-separated fold numbers", "command line") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise PipelineError(f"fold {bad[0]} does not exist (folds are 0..{n_folds - 1})", "command line")
    return folds


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
