"""score: MAP@5 of a submission CSV against a solution CSV (Image,Id with the true label)."""
from __future__ import annotations

import argparse

from pipeline.io.layout import read_labels_csv
from pipeline.io.submission import read_submission, score_submission


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission")
    parser.add_argument("solution")


def run(args: argparse.Namespace) -> float:
    from pathlib import Path

    solution = read_labels_csv(Path(args.solution))
    score = score_submission(read_submission(args.submission), solution, args.submission)
    print(f"MAP@5 against {args.solution}: {score:.4f}")
    return score
