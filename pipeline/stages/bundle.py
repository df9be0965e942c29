"""bundle: write the identification bundle of a work folder (pipeline/bundle.py): every fold model's
checkpoint, its gallery, the retriever settings, the fusion weights, the new_whale policy and the
calibrated P(new individual), with a manifest (data fingerprint, version id). identify, serve and the
catalogue load it once."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", default="work")
    parser.add_argument("--models", nargs="+", default=None,
                        help="models to bundle (default: every model with embeddings in WORK; several are fused "
                             "as the ensemble stage's fusion fused them)")
    parser.add_argument("--out", default=None, help="bundle folder (default: WORK/bundle)")


def run(args: argparse.Namespace) -> dict:
    from pipeline.bundle import Bundle
    from pipeline.errors import PipelineError
    from pipeline.io.paths import bundle_dir, embedded_models, embeddings_root

    models = args.models or embedded_models(args.work)
    if not models:
        raise PipelineError("no trained model with embeddings; run train and embed first", embeddings_root(args.work))
    out = Path(args.out) if args.out else bundle_dir(args.work)
    bundle = Bundle.from_work(args.work, models)
    version = bundle.save(out)
    print(f"Bundle {version}: {', '.join(models)} -> {out}")
    return bundle.manifest
