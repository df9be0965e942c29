"""synth: write the built-in synthetic fluke data set in the Kaggle layout (with solution.csv)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.data.synth import SynthSpec, make_dataset

log = logging.getLogger(__name__)
REAL_LABELS = Path("../shared/data/humpback_labels/train.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/synth", help="folder to write (must not hold a data set yet)")
    parser.add_argument("--whales", type=int, default=SynthSpec.n_whales, help="known whales in train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", default=str(REAL_LABELS),
                        help="a real train.csv whose photos-per-whale shape to copy (used when present)")
    parser.add_argument("--force", action="store_true", help="write even if the folder already holds train.csv")


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    if (out / "train.csv").exists() and not args.force:
        log.info("%s already holds a data set; keeping it (--force to regenerate)", out)
        return {}
    if args.force and out.exists():
        import shutil

        shutil.rmtree(out)
    labels = Path(args.labels) if args.labels and Path(args.labels).is_file() else None
    summary = make_dataset(out, SynthSpec(n_whales=args.whales, seed=args.seed), label_file=labels)
    log.info("synthetic data in %s: %s (photos-per-whale shape from %s)", out, summary, labels or "built-in table")
    return summary
