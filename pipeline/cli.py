"""`whale <stage> ...`: one console script, a subcommand per stage (also `python -m pipeline.cli`)."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# albumentations otherwise asks PyPI for a newer version at import: slow, and offline machines wait.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pipeline.errors import PipelineError

STAGES = {
    "synth": "write the built-in synthetic data set",
    "boxes": "learn a fluke detector from boxed photos (whale boxes train)",
    "preprocess": "validate the Kaggle layout and cache resized photos",
    "folds": "cross-validation folds shaped like test",
    "train": "train a model config on each fold",
    "embed": "embeddings of train and test photos per fold model",
    "knn": "nearest whales per photo and the new_whale threshold",
    "ensemble": "fuse several models' predictions",
    "submit": "write the submission CSV",
    "cv": "MAP@5 per fold and overall",
    "score": "MAP@5 of a submission against a solution.csv",
    "bundle": "export a work folder's models, galleries and policy for identification",
    "identify": "top five known whales for new photos",
    "report": "a self-contained HTML report of the run",
    "serve": "a local web page to identify uploaded photos",
    "catalogue": "keep a catalogue of known individuals: add photos, review, decide, export",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All stages' arguments, or just those of `only`: importing a stage pulls in torch and timm
    (seconds), so a command imports the one stage it runs."""
    parser = argparse.ArgumentParser(prog="whale", description="Humpback whale identification pipeline")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, help_text in STAGES.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"pipeline.stages.{name}")
        stage_parser = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(stage_parser)
        stage_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(stage if stage in STAGES else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        args.run(args)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
