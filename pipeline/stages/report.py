"""report: one self-contained HTML file in WORK/reports/ (CV table, threshold curve, training curves,
embedding map, worst validation queries with their top five)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.io.atomic import write_text
from pipeline.io.paths import reports_dir
from pipeline.stages.common import add_common, add_folds_file, folds_file, stage_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    add_folds_file(parser)
    parser.add_argument("--name", default="ensemble", help="prediction set whose queries to show")
    parser.add_argument("--sample", type=int, default=24, help="validation queries to show")
    parser.add_argument("--out", default=None, help="default: WORK/reports/report.html")


def run(args: argparse.Namespace) -> str:
    args.folds_file = str(folds_file(args))
    from pipeline.data.folds import read_folds
    from pipeline.reporting.report import build_report

    out = Path(args.out) if args.out else reports_dir(args.work) / "report.html"
    write_text(out, build_report(args.work, read_folds(args.folds_file), args.name, args.sample, stage_config(args)))
    log.info("report written to %s", out)
    print(f"Report: {out}")
    return str(out)
