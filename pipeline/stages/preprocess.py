"""preprocess: validate the Kaggle layout and cache every photo resized, as one uint8 array."""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import columns as C
from pipeline.data.cache import cache_dir
from pipeline.data.images import UnreadableImage, load_rgb
from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path, write_json, write_parquet
from pipeline.io.layout import read_layout
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.stages.common import add_common, add_data, stage_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data(parser)
    add_common(parser)


def _decode(job):
    index, path, size = job
    try:
        return index, *load_rgb(Path(path), size), None
    except UnreadableImage as e:
        return index, None, 0, 0, False, str(e)


def run(args: argparse.Namespace) -> dict:
    cfg = stage_config(args)
    size = tuple(int(v) for v in cfg["preprocess"]["image_size"])
    layout = read_layout(args.data)
    started = time.time()
    out = cache_dir(args.work)
    photos = [layout.train_dir / n for n in layout.train[C.IMAGE]] + [layout.test_dir / n for n in layout.test[C.IMAGE]]
    stamp = Stamp(args.work, "preprocess",
                  fingerprint([layout.root / "train.csv", layout.root / "sample_submission.csv", *photos],
                              cfg["preprocess"]["image_size"]),
                  [out / "images.npy", out / "manifest.parquet", out / "preprocess.json"])
    if stamp.up_to_date(args.force):
        return {}

    manifest = pd.concat([
        layout.train.assign(**{C.SPLIT: C.TRAIN}),
        layout.test.assign(**{C.SPLIT: C.TEST, C.ID: ""}),
    ], ignore_index=True)
    manifest[C.ROW] = np.arange(len(manifest))
    # Where each photo came from, to name the file and row when it cannot be read.
    sources = [(layout.root / "train.csv", i + 2) for i in range(len(layout.train))] + \
              [(layout.root / "sample_submission.csv", i + 2) for i in range(len(layout.test))]
    out.mkdir(parents=True, exist_ok=True)
    widths = np.zeros(len(manifest), dtype=np.int32)
    heights = np.zeros(len(manifest), dtype=np.int32)
    gray = np.zeros(len(manifest), dtype=bool)
    jobs = [(i, str(p), size) for i, p in enumerate(photos)]
    workers = max(1, int(cfg["preprocess"]["workers"]))
    with atomic_path(out / "images.npy") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(manifest), *size, 3))
        pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap_unordered(_decode, jobs, chunksize=16) if pool else map(_decode, jobs)
            for index, arr, w, h, g, error in tqdm(results, total=len(jobs), desc="preprocess", unit="photo"):
                if error is not None:
                    csv_path, row = sources[index]
                    raise PipelineError(f"photo {photos[index]}: {error}", csv_path, row)
                images[index], widths[index], heights[index], gray[index] = arr, w, h, g
        finally:
            if pool:
                pool.terminate()
        images.flush()
        del images
    manifest[C.WIDTH], manifest[C.HEIGHT], manifest[C.GRAY] = widths, heights, gray
    write_parquet(out / "manifest.parquet", manifest)
    report = {
        "data": str(layout.root), "image_size": list(size), "train": int(len(layout.train)),
        "test": int(len(layout.test)), "known_ids": int(layout.train[C.ID].ne(C.NEW_WHALE).groupby(layout.train[C.ID]).any().sum()),
        "new_whale_train": int((layout.train[C.ID] == C.NEW_WHALE).sum()),
        "grayscale_share": float(gray.mean()), "seconds": round(time.time() - started, 1),
    }
    write_json(out / "preprocess.json", report)
    stamp.write()
    log.info("cached %d train + %d test photos at %dx%d in %s (%.0f%% grayscale)", report["train"],
             report["test"], size[0], size[1], out, 100 * report["grayscale_share"])
    return report
