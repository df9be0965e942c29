"""boxes: `whale boxes train` learns a fluke detector from the photos you boxed (a CSV
Image,x0,y0,x1,y1 in original pixels, train and/or test photos), writes WORK/boxes/model.pt and
WORK/boxes/predicted.csv (a box for every other photo of the layout), and reports its IoU on the
boxed photos it held out. Then `--set preprocess.boxes_model=WORK/boxes/model.pt` crops with it."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from pipeline import columns as C
from pipeline.detection.fit import (boxed_photos, mean_iou, predict_boxes, predict_fractions, save_box_model,
                                    train_box_model)
from pipeline.io.atomic import write_csv, write_json
from pipeline.io.layout import read_layout
from pipeline.io.paths import boxes_dir
from pipeline.stages.common import add_common, add_data, stage_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["train"], help="train: learn from the boxes CSV, predict the rest")
    add_data(parser)
    add_common(parser)
    parser.add_argument("--boxes", required=True, help="CSV Image,x0,y0,x1,y1 of the photos you boxed")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share of the boxed photos held out to report IoU on (then all are used)")


def photo_paths(layout) -> dict[str, Path]:
    paths = {n: layout.train_dir / n for n in layout.train[C.IMAGE]}
    paths.update({n: layout.test_dir / n for n in layout.test[C.IMAGE]})
    return paths


def run(args: argparse.Namespace) -> dict:
    cfg = stage_config(args)
    layout = read_layout(args.data)
    paths = photo_paths(layout)
    size = int(cfg["boxes"]["image_size"])
    images, targets, names = boxed_photos(args.boxes, paths, size)
    report = {"boxed": len(names)}
    held = np.random.default_rng(int(cfg["seed"])).random(len(names)) < float(args.holdout)
    if held.any() and (~held).sum() >= 2:
        model = train_box_model(images[~held], targets[~held], cfg, int(cfg["seed"]))
        # The floor a model must beat: the mean box of its training photos, the answer of one that learned nothing.
        mean_box = np.tile(targets[~held].mean(axis=0), (int(held.sum()), 1))
        report.update(held_out=int(held.sum()),
                      held_out_iou=round(mean_iou(predict_fractions(model, images[held]), targets[held]), 4),
                      held_out_mean_box_iou=round(mean_iou(mean_box, targets[held]), 4))
        log.info("box model: mean IoU %.3f on %d held-out boxed photos (the training photos' mean box: %.3f)",
                 report["held_out_iou"], report["held_out"], report["held_out_mean_box_iou"])
    model = train_box_model(images, targets, cfg, int(cfg["seed"]))
    out = boxes_dir(args.work)
    save_box_model(out / "model.pt", model)
    others = {n: p for n, p in paths.items() if n not in set(names)}
    write_csv(out / "predicted.csv", predict_boxes(model, others))
    write_json(out / "report.json", report)
    print(f"Box model: {out / 'model.pt'} (predicted boxes for {len(others)} photos in {out / 'predicted.csv'})")
    return report
