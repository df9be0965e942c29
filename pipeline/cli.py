"""`whale <stage> ...`: one console script, a subcommand per stage (also `python -m pipeline.cli`)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

# albumentations otherwise asks PyPI for a newer version at import: slow, and offline machines wait.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pipeline.errors import PipelineError
# The registry of stages (imports no stage module). The CLI is the one door from the library side to
# the stages: pipeline.chain reads the chain's order through it (tests/test_one_path.py).
from pipeline.stages import STAGES, chain_stages, ordered  # noqa: F401 (chain_stages: for pipeline.chain)


LIST = "stages"


def list_stages(args: argparse.Namespace | None = None) -> None:
    width = max(len(s.name) for s in ordered())
    for s in ordered():
        print(f"  {s.name:<{width}}  {'*' if s.chain is not None else ' '} {s.help}")
    print("  (* run by `make all`, in this order)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All stages' arguments, or just those of `only`: importing a stage pulls in torch and timm
    (seconds), so a command imports the one stage it runs."""
    parser = argparse.ArgumentParser(prog="whale", description="Humpback whale identification pipeline")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True)
    # Not a stage: the registry's list, what `make help` prints (imports no stage, runs before install).
    sub.add_parser(LIST, help="list the stages in order (* the chain `make all` runs)").set_defaults(run=list_stages)
    for stage in ordered():
        if only is not None and stage.name != only:
            sub.add_parser(stage.name, help=stage.help)
            continue
        module = stage.load()
        stage_parser = sub.add_parser(stage.name, help=stage.help, description=module.__doc__)
        module.add_arguments(stage_parser)
        stage_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(stage if stage in STAGES or stage == LIST else None).parse_args(argv)
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
