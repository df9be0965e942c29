"""report: one self-contained HTML file in WORK/reports/ (CV table, threshold curve, training curves,
embedding map, worst validation queries with their top five)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.io.atomic import write_text

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", default="work")
    parser.add_argument("--folds-file", default="folds/folds.csv")
    parser.add_argument("--name", default="ensemble", help="prediction set whose queries to show")
    parser.add_argument("--sample", type=int, default=24, help="validation queries to show")
    parser.add_argument("--out", default=None, help="default: WORK/reports/report.html")


def run(args: argparse.Namespace) -> str:
    from pipeline.reporting.report import build_report
    from pipeline.stages.folds import read_folds

    out = Path(args.out) if args.out else Path(args.work) / "reports" / "report.html"
    write_text(out, build_report(args.work, read_folds(args.folds_file), args.name, args.sample))
    log.info("report written to %s", out)
    print(f"Report: {out}")
    return str(out)
