"""The learned fluke detector on the synthetic set, whose true boxes are known (data/boxes.csv):

    python -m benchmarks.boxes [--share 0.3] [--whales 200]

Trains the box model on `share` of the train photos' boxes, then reports the mean IoU with the true box
on every other train photo for: the learned boxes, the border-colour automatic crop (data/crop.py),
the whole photo, and the mean box of the training photos (what a model that learned nothing outputs)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline import columns as C


def measure(data: Path, share: float = 0.3, overrides=(), seed: int = 0) -> dict:
    from pipeline.config import load_config
    from pipeline.data.crop import auto_box
    from pipeline.detection.fit import mean_iou, predict_fractions, thumbnails, train_box_model

    truth = pd.read_csv(data / "boxes.csv")
    train = set(pd.read_csv(data / "train.csv")[C.IMAGE])
    truth = truth[truth[C.IMAGE].isin(train)].reset_index(drop=True)
    chosen = np.random.default_rng(seed).random(len(truth)) < share
    cfg = load_config([], list(overrides))
    paths = [data / "train" / n for n in truth[C.IMAGE]]
    images, sizes = thumbnails(paths, int(cfg["boxes"]["image_size"]))
    fractions = truth[["x0", "y0", "x1", "y1"]].to_numpy() / np.concatenate([sizes, sizes], axis=1)
    model = train_box_model(images[chosen], fractions[chosen].astype(np.float32), cfg, seed)
    rest = ~chosen
    learned = predict_fractions(model, images[rest])
    border = []
    for path, (w, h) in zip(np.array(paths)[rest], sizes[rest]):
        with Image.open(path) as img:
            box = auto_box(img.convert("RGB"))
        border.append((0, 0, 1, 1) if box is None else (box[0] / w, box[1] / h, box[2] / w, box[3] / h))
    mean_box = np.tile(fractions[chosen].mean(axis=0), (rest.sum(), 1))
    whole = np.tile([0.0, 0.0, 1.0, 1.0], (rest.sum(), 1))
    return {"trained_on": int(chosen.sum()), "evaluated_on": int(rest.sum()),
            "learned_iou": round(mean_iou(learned, fractions[rest]), 4),
            "border_colour_iou": round(mean_iou(np.array(border), fractions[rest]), 4),
            "whole_photo_iou": round(mean_iou(whole, fractions[rest]), 4),
            "mean_box_iou": round(mean_iou(mean_box, fractions[rest]), 4)}


def main() -> None:
    from pipeline.data.synth import SynthSpec, make_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--whales", type=int, default=200)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-boxes-") as tmp:
        make_dataset(Path(tmp), SynthSpec(n_whales=args.whales, seed=5), progress=False)
        result = measure(Path(tmp), args.share, args.overrides)
    print(pd.DataFrame([result]).to_string(index=False))


if __name__ == "__main__":
    main()
