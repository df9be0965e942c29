"""preprocess: validate the Kaggle layout, crop, cache every photo resized as one uint8 array, and
list duplicate photos.

Writes to WORK/cache/: images.npy (N x H x W x 3 uint8, memory-mappable), manifest.parquet, hashes.npy
(N x 8 uint8 perceptual hashes), duplicates.csv (pairs within train and train/test) and preprocess.json
(counts, crop and duplicate report)."""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.data.cache import cache_dir
from pipeline.data.crop import read_boxes
from pipeline.data.duplicates import find_duplicates, merged_ids, duplicate_answers
from pipeline.data.images import UnreadableImage, UnusableBox, decode_photo
from pipeline.errors import PipelineError
from pipeline.progress import track
from pipeline.io.atomic import atomic_path, write_csv, write_json, write_npy, write_parquet
from pipeline.io.layout import read_layout
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.stages.common import add_common, add_data, stage_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data(parser)
    add_common(parser)


def framing_facts(pre: dict) -> list:
    """The framing settings in the cache's fingerprint; left out while off, so that caches made
    before they existed stay up to date."""
    return [{k: True} for k in ("trim_padding", "keep_aspect") if pre[k]]


def _decode(job):
    index, path, size, box, auto_crop, box_predicted, trim_padding, keep_aspect = job
    try:
        return index, decode_photo(Path(path), size, box, auto_crop, box_predicted, trim_padding, keep_aspect), None
    except UnreadableImage as e:
        return index, None, e


class RowWriter:
    """Writes an .npy array row by row with plain file writes: the rows go through the page cache, not
    this process's memory (a memory map's dirty pages would count against it: 3 GB for Kaggle's set)."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.f = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        self.offset, self.row_bytes = self.f.tell(), int(np.prod(shape[1:]))
        self.f.truncate(self.offset + shape[0] * self.row_bytes)

    def write(self, row: int, array: np.ndarray) -> None:
        self.f.seek(self.offset + row * self.row_bytes)
        self.f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())

    def close(self) -> None:
        self.f.close()


def run(args: argparse.Namespace) -> dict:
    cfg = stage_config(args)
    pre, dup = cfg["preprocess"], cfg["duplicates"]
    size = tuple(int(v) for v in pre["image_size"])
    layout = read_layout(args.data)
    boxes = read_boxes(pre["boxes"]) if pre["boxes"] else {}
    box_inputs = [p for p in (pre["boxes"], pre["boxes_model"]) if p]
    started = time.time()
    out = cache_dir(args.work)
    photos = [layout.train_dir / n for n in layout.train[C.IMAGE]] + [layout.test_dir / n for n in layout.test[C.IMAGE]]
    outputs = [out / "images.npy", out / "manifest.parquet", out / "hashes.npy", out / "duplicates.csv",
               out / "preprocess.json"]
    stamp = Stamp(args.work, "preprocess",
                  fingerprint([layout.root / "train.csv", layout.root / "sample_submission.csv", *photos,
                               *box_inputs],
                              [pre["image_size"], pre["auto_crop"], dup, *framing_facts(pre)]), outputs)
    if stamp.up_to_date(args.force):
        return {}

    manifest = pd.concat([
        layout.train.assign(**{C.SPLIT: C.TRAIN}),
        layout.test.assign(**{C.SPLIT: C.TEST, C.ID: ""}),
    ], ignore_index=True)
    manifest[C.ROW] = np.arange(len(manifest))
    unknown = sorted(set(boxes) - set(manifest[C.IMAGE]))
    if unknown:
        raise PipelineError(f"{len(unknown)} box(es) name photos that are in neither train.csv nor "
                            f"sample_submission.csv (first: {unknown[0]})", pre["boxes"])
    box_rows = {name: i + 2 for i, name in enumerate(boxes)}  # read_boxes keeps the file's order
    predicted_names: set[str] = set()
    if pre["boxes_model"]:
        # The learned detector boxes every photo the boxes file does not (manual boxes win). A
        # predicted box is a guess: where it is unusable the photo falls back (decode_photo), counted.
        from pipeline.detection.fit import load_box_model, predict_boxes

        unboxed = {p.name: p for p in photos if p.name not in boxes}
        predicted = predict_boxes(load_box_model(pre["boxes_model"]), unboxed)
        predicted_names = set(unboxed)
        boxes = {**{r[0]: tuple(r[1:]) for r in predicted.itertuples(index=False)}, **boxes}
        log.info("box model %s: boxes predicted for %d photos", pre["boxes_model"], len(unboxed))
    # Where each photo came from, to name the file and row when it cannot be read.
    sources = [(layout.root / "train.csv", i + 2) for i in range(len(layout.train))] + \
              [(layout.root / "sample_submission.csv", i + 2) for i in range(len(layout.test))]
    out.mkdir(parents=True, exist_ok=True)
    n = len(manifest)
    widths, heights = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int32)
    gray = np.zeros(n, dtype=bool)
    hashes = np.zeros((n, 8), dtype=np.uint8)
    crops = [""] * n
    fell_back: list[str] = []
    jobs = [(i, str(p), size, boxes.get(p.name), bool(pre["auto_crop"]), p.name in predicted_names,
             bool(pre["trim_padding"]), bool(pre["keep_aspect"]))
            for i, p in enumerate(photos)]
    workers = max(1, int(pre["workers"]))
    with atomic_path(out / "images.npy") as tmp:
        writer = RowWriter(tmp, (n, *size, 3))
        pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap_unordered(_decode, jobs, chunksize=16) if pool else map(_decode, jobs)
            for index, d, error in track(results, n, "preprocess", unit="photo"):
                if isinstance(error, UnusableBox):  # only a box the user wrote gets here
                    name = photos[index].name
                    raise PipelineError(f"box of {name!r}: {error} ({photos[index]})", pre["boxes"], box_rows[name])
                if error is not None:
                    csv_path, row = sources[index]
                    raise PipelineError(f"photo {photos[index]}: {error}", csv_path, row)
                if d.box_fell_back:
                    fell_back.append(photos[index].name)
                writer.write(index, d.image)
                widths[index], heights[index], gray[index], hashes[index] = d.width, d.height, d.gray, d.hash
                if d.box is not None:
                    crops[index] = ",".join(f"{v:.0f}" for v in d.box)
        finally:
            if pool:
                pool.terminate()
            writer.close()
    manifest[C.WIDTH], manifest[C.HEIGHT], manifest[C.GRAY], manifest[C.CROP] = widths, heights, gray, crops

    pairs = find_duplicates(manifest, hashes, int(dup["max_distance"]))
    merges = merged_ids(pairs) if dup["merge_ids"] else {}
    manifest[C.ORIGINAL_ID] = manifest[C.ID]
    if merges:
        manifest[C.ID] = manifest[C.ID].map(lambda x: merges.get(x, x))
    write_npy(out / "hashes.npy", hashes)
    write_csv(out / "duplicates.csv", pairs)
    write_parquet(out / "manifest.parquet", manifest)
    within = pairs[(pairs["split_a"] == C.TRAIN) & (pairs["split_b"] == C.TRAIN)]
    report = {
        "data": str(layout.root), "image_size": list(size), "train": int(len(layout.train)),
        "test": int(len(layout.test)), "known_ids": int(manifest.loc[manifest[C.SPLIT] == C.TRAIN, C.ID]
                                                       .loc[lambda s: s != C.NEW_WHALE].nunique()),
        "new_whale_train": int((layout.train[C.ID] == C.NEW_WHALE).sum()),
        "grayscale_share": float(gray.mean()),
        "auto_crop": bool(pre["auto_crop"]),
        "trim_padding": bool(pre["trim_padding"]), "keep_aspect": bool(pre["keep_aspect"]),
        "cropped_by_box": int(sum(p.name in boxes for p in photos)) - len(fell_back),
        "cropped_automatically": int(sum(bool(c) for c in crops)) - int(sum(p.name in boxes for p in photos))
                                 + len(fell_back),
        # Predicted boxes that left under 2x2 pixels of their photo: those photos were auto-cropped or kept whole.
        "box_model": {"path": str(pre["boxes_model"]), "predicted": len(predicted_names),
                      "fell_back": len(fell_back), "fell_back_photos": sorted(fell_back)[:50]}
                     if pre["boxes_model"] else None,
        "duplicates": {"max_distance": int(dup["max_distance"]), "train_pairs": int(len(within)),
                       "train_pairs_across_ids": int((within["id_a"] != within["id_b"]).sum()),
                       "test_photos_with_train_duplicate": int(len(duplicate_answers(pairs))),
                       "merged_ids": merges},
        "seconds": round(time.time() - started, 1),
    }
    write_json(out / "preprocess.json", report)
    stamp.write()
    log.info("cached %d train + %d test photos at %dx%d in %s (%.0f%% grayscale, %d cropped)", report["train"],
             report["test"], size[0], size[1], out, 100 * report["grayscale_share"],
             report["cropped_by_box"] + report["cropped_automatically"])
    if fell_back:
        log.warning("box model: %d of %d predicted boxes were unusable (under 2x2 pixels inside the photo); "
                    "those photos fell back to the automatic crop, else the whole photo (first: %s; all "
                    "counted in %s)", len(fell_back), len(predicted_names), sorted(fell_back)[0],
                    out / "preprocess.json")
    d = report["duplicates"]
    log.info("duplicates (<= %d bits): %d train pairs (%d across ids), %d test photos with a train duplicate; "
             "%d ids merged; list in %s", d["max_distance"], d["train_pairs"], d["train_pairs_across_ids"],
             d["test_photos_with_train_duplicate"], len(merges), out / "duplicates.csv")
    return report
