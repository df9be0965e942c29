"""identify: the five most likely known whales for each photo given (new_whale where the threshold
says so), with scores and each candidate's best-matching train photos."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", help="photo files to identify")
    parser.add_argument("--work", default="work")
    parser.add_argument("--models", nargs="+", default=None,
                        help="trained recipes to use (default: every model with embeddings in WORK; several are "
                             "fused as the ensemble stage's fusion fused them)")
    parser.add_argument("--bundle", default=None, help="an identification bundle (`whale bundle`) instead of WORK")
    parser.add_argument("--threshold", type=float, default=None, help="override the tuned new_whale threshold")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> list[dict]:
    from pipeline.errors import PipelineError
    from pipeline.io.paths import embedded_models, embeddings_root
    from pipeline.identify import Identifier

    if args.bundle:
        identifier = Identifier.from_bundle(args.bundle, args.threshold)
        models = identifier.models
    else:
        models = args.models or embedded_models(args.work)
        if not models:
            raise PipelineError("no trained model with embeddings; run train and embed first",
                                embeddings_root(args.work))
        identifier = Identifier(args.work, models, args.threshold)
    photos = [identifier.load_photo(p) for p in args.photos]
    results = [r.as_dict() for r in identifier.identify(photos, [str(p) for p in args.photos])]
    if args.json:
        print(json.dumps({"models": models, "threshold": identifier.threshold, "results": results}, indent=2))
    else:
        for r in results:
            print(r["query"])
            for rank, c in enumerate(r["top5"], 1):
                score = "" if c["score"] is None else f"{c['score']:.3f}"
                print(f"  {rank}. {c['id']:<12} {score:>6}  {' '.join(c['photos'])}")
    return results
