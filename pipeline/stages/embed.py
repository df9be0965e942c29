"""embed: L2-normalised embeddings of every cached train and test photo, per trained fold model."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.data.cache import ImageCache, cache_dir
from pipeline.io.stamp import Stamp, fingerprint
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_csv, write_npy
from pipeline.models.net import EmbeddingNet, model_from_checkpoint
from pipeline.models.embedding import embed_pooled, embed_rows
from pipeline.models.pooled_cache import pooled_features, tensors_digest
from pipeline.io.paths import embedding_dir, folds_with, model_dir, models_root
from pipeline.stages.common import add_common, add_folds, parse_folds, stage_config
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.device import pick_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, model=True)
    add_folds(parser)


def zero_shot_key(state: dict) -> str | None:
    """For an untrained (zero-shot) checkpoint, a digest of its weights: every fold of a zero-shot
    recipe holds the same network (unless model.centre fits one per fold), so it is embedded once."""
    if int(state.get("steps", 1)) != 0 or state.get("snapshots"):
        return None
    return tensors_digest(state["model"]).hexdigest()


def run(args: argparse.Namespace) -> None:
    cfg = stage_config(args)
    cache = ImageCache.open(args.work)
    device = pick_device()
    available = folds_with(models_root(args.work, cfg["name"]), "final.pt")
    folds = available if args.folds == "all" else parse_folds(args.folds, max(available, default=0) + 1)
    if not folds:
        raise PipelineError("no trained fold model; run the train stage first", model_dir(args.work, cfg["name"], 0))
    cache_files = [cache_dir(args.work) / "images.npy", cache_dir(args.work) / "manifest.parquet"]
    embedded: dict[str, Path] = {}  # zero-shot weights digest -> the folder already holding their embeddings
    for fold in folds:
        weights = model_dir(args.work, cfg["name"], fold) / "final.pt"
        out = embedding_dir(args.work, cfg["name"], fold)
        stamp = Stamp(args.work, f"embed-{cfg['name']}-fold{fold}", fingerprint([weights, *cache_files], cfg["embed"]),
                      [out / "train.npy", out / "test.npy", out / "index.csv"])
        if stamp.up_to_date(args.force):
            continue
        state = load_checkpoint(weights)
        key = zero_shot_key(state)
        if key in embedded:
            for name in ("train.npy", "test.npy"):
                write_npy(out / name, np.load(embedded[key] / name))
            write_csv(out / "index.csv", pd.read_csv(embedded[key] / "index.csv"))
            stamp.write()
            log.info("fold %d: the same zero-shot network as %s; its embeddings copied", fold, embedded[key])
            continue
        model = model_from_checkpoint(state).to(device)
        e, t = cfg["embed"], cfg["train"]
        # A backbone that never trained (zero-shot, or a head on frozen features) is the same in every
        # fold: its pooled features are computed once for all of them.
        pooled = pooled_features(model, cache, int(e["batch_size"]), device) \
            if int(state.get("steps", 1)) == 0 and isinstance(model, EmbeddingNet) else None
        index = []
        for split in (C.TRAIN, C.TEST):
            part = cache.split(split)
            if pooled is not None:
                vectors = embed_pooled(model, pooled, part[C.ROW].to_numpy(), bool(e["flip_tta"]), device)
            else:
                vectors = embed_rows(model, cache.images, part[C.ROW].to_numpy(), int(e["batch_size"]),
                                     bool(e["flip_tta"]), device, desc=f"embed fold {fold} {split}",
                                     amp=bool(t["amp"]), amp_dtype=str(t["amp_dtype"]))
            write_npy(out / f"{split}.npy", vectors)
            index.append(pd.DataFrame({C.IMAGE: part[C.IMAGE], C.SPLIT: split, C.ROW: np.arange(len(part))}))
        write_csv(out / "index.csv", pd.concat(index, ignore_index=True))
        stamp.write()
        if key is not None:
            embedded[key] = out
        log.info("fold %d: embeddings of %d photos written to %s", fold, sum(len(i) for i in index), out)
