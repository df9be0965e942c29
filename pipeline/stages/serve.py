"""serve: a web page on http://127.0.0.1:8000, served by waitress (a production WSGI server; its threads
share one loaded bundle).

    --catalogue DIR   the review screen: pending photos beside their candidates, one-key decisions
                      (docs/catalogue.md, "The review page")
    --work WORK       upload a photo and see its top five whales

Bound to 127.0.0.1 by default. Bound to any other address (--host 0.0.0.0, a LAN address), every
request needs the access token: generated at start and printed once, or read from --token-file."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", default=None, help="serve the review screen of this catalogue folder")
    parser.add_argument("--work", default="work")
    parser.add_argument("--models", nargs="+", default=None, help="default: every model with embeddings")
    parser.add_argument("--host", default="127.0.0.1", help="localhost by default: not exposed to the network")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    parser.add_argument("--max-upload-mb", type=float, default=10.0)
    parser.add_argument("--token-file", default=None,
                        help="the access token (one line, 16+ characters) instead of a generated one")
    parser.add_argument("--require-token", action="store_true", help="need the token on localhost too")


def run(args: argparse.Namespace) -> None:
    import waitress

    from pipeline.errors import PipelineError
    from pipeline.web.security import is_loopback, new_token, read_token

    loopback = is_loopback(args.host)
    require_token = args.require_token or not loopback or args.token_file is not None
    token = (read_token(args.token_file) if args.token_file else new_token()) if require_token else None
    options = dict(require_token=require_token, token=token, loopback_hosts=loopback, max_upload_mb=args.max_upload_mb)
    if args.catalogue:
        from pipeline.web.review import create_review_app

        app = create_review_app(args.catalogue, **options)
        what = f"Review screen of {args.catalogue}"
    else:
        from pipeline.io.paths import embedded_models as default_models
        from pipeline.web.app import create_app

        models = args.models or default_models(args.work)
        if not models:
            raise PipelineError("no trained model with embeddings; run train and embed first", args.work)
        app = create_app(args.work, models, **options)
        what = f"Identification page of {args.work}"
    shown = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{shown}:{args.port}/"
    if not require_token:
        print(f"{what} on {address} (this machine only)", flush=True)
    elif args.token_file:
        print(f"{what} on {address}: every request needs the token in {args.token_file} "
              f"(open {address}?token=TOKEN once, or send 'Authorization: Bearer TOKEN')", flush=True)
    else:  # printed once, here: it is in no file
        print(f"{what} on {address}?token={token}\n(the access token is printed only this once; every request "
              "needs it: the address above sets a cookie, or send 'Authorization: Bearer TOKEN')", flush=True)
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="whale")
