"""serve: a local web page (http://127.0.0.1:8000) to upload a photo and see its top five whales."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", default="work")
    parser.add_argument("--models", nargs="+", default=None, help="default: every model with embeddings")
    parser.add_argument("--host", default="127.0.0.1", help="localhost by default: not exposed to the network")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=10.0)


def run(args: argparse.Namespace) -> None:
    from pipeline.errors import PipelineError
    from pipeline.io.paths import embedded_models as default_models
    from pipeline.web.app import create_app

    models = args.models or default_models(args.work)
    if not models:
        raise PipelineError("no trained model with embeddings; run train and embed first", args.work)
    create_app(args.work, models, max_upload_mb=args.max_upload_mb).run(host=args.host, port=args.port)
