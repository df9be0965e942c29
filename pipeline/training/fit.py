"""Train one model on one fold: data, model, loss, optimiser, hooks, resume, final weights."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from pipeline import columns as C
from pipeline.data.cache import ImageCache
from pipeline.data.datasets import CachedPhotos, training_items
from pipeline.data.samplers import PKBatchSampler
from pipeline.data.transforms import train_transform
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_yaml
from pipeline.losses import build_loss
from pipeline.models import build_model
from pipeline.models.net import model_from_checkpoint, set_grad_checkpointing
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.device import amp_dtype, precision_name
from pipeline.training.divide import Recluster
from pipeline.training.head import fit_head, frozen_features
from pipeline.training.distributed import cleanup, device_for, prepare_model, setup
from pipeline.training.hooks import Checkpoint, EpochLog, Progress, Snapshots, StepDelay, TimeBudget
from pipeline.training.loop import Trainer
from pipeline.training.optim import build_optimizer

log = logging.getLogger(__name__)

# Config sections whose change makes an old checkpoint unusable for resuming.
RESUME_SECTIONS = ("model", "loss", "sampler", "divide", "augment", "preprocess", "seed")
# Settings that change memory and speed, never the weights: switching them on mid-run (after an
# out-of-memory error) resumes, and a trained model stays up to date.
COMPUTE_ONLY = (("model", "grad_checkpointing"),)


def comparable(cfg: dict) -> dict:
    """The config without its compute-only settings."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for section, key in COMPUTE_ONLY:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


def pk_sampler(labels, sampling: dict, seed: int, dist, accumulate_steps: int) -> PKBatchSampler:
    """The P x K sampler of this rank; a global batch that does not split over the processes (or a
    process's share over the micro-batches) is a config error, not a ValueError."""
    try:
        sampler = PKBatchSampler(labels, sampling["classes_per_batch"], sampling["photos_per_class"], seed,
                                 rank=dist.rank, world=dist.world, new_whale_share=float(sampling["new_whale_share"]),
                                 hard_classes=bool(sampling["hard_classes"]),
                                 hard_class_pool=int(sampling["hard_class_pool"]))
    except ValueError as e:
        if "does not split" not in str(e):
            raise PipelineError(str(e), "sampler") from None
        raise PipelineError(f"the global batch (sampler.classes_per_batch x photos_per_class = "
                            f"{sampling['classes_per_batch']} x {sampling['photos_per_class']}, capped at the fold's "
                            f"whales) does not split over {dist.world} processes: make it a multiple of "
                            f"{dist.world}", "sampler.classes_per_batch") from None
    local = sampler.batch_size // dist.world
    if accumulate_steps < 1 or local % accumulate_steps:
        raise PipelineError(f"each process's batch of {local} photos does not split into {accumulate_steps} "
                            "equal micro-batches", "train.accumulate_steps")
    return sampler


def training_photos(folds: pd.DataFrame, fold: int | None, new_whale: bool = False) -> pd.DataFrame:
    """Known-whale photos outside validation fold `fold` (all known photos when fold is None), and
    train's new_whale photos outside that fold too when `new_whale`."""
    part = folds if new_whale else folds[folds[C.ID] != C.NEW_WHALE]
    if fold is not None:
        part = part[part[C.FOLD] != fold]
    return part.reset_index(drop=True)


def fit(cfg: dict, cache: ImageCache, folds: pd.DataFrame, fold: int | None, out_dir: Path,
        restart: bool = False) -> dict:
    dist = setup()
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        for stale in out_dir.glob(".*.tmp-*"):  # left by a run killed mid-write
            stale.unlink()
    last_path, final_path = out_dir / "last.pt", out_dir / "final.pt"
    sampling = cfg["sampler"]
    photos = training_photos(folds, fold, new_whale=float(sampling["new_whale_share"]) > 0)
    whales = sorted(set(photos[C.ID]) - {C.NEW_WHALE})
    if len(whales) < 2:
        raise PipelineError(f"fold {fold} has {len(whales)} known whale(s) to train on; need at least 2",
                            "folds file")
    index = pd.Series(np.arange(len(whales)), index=whales)
    labels = photos[C.ID].map(index).fillna(-1).astype(int).to_numpy()  # new_whale: -1
    rows, labels, flipped = training_items(labels, cache.rows(photos[C.IMAGE]), len(whales),
                                           bool(sampling["flip_as_new_identity"]))
    num_classes = len(whales) * (2 if sampling["flip_as_new_identity"] else 1)
    class_counts = np.bincount(labels[labels >= 0], minlength=num_classes)

    if cfg["model"]["centre"] and int(cfg["train"]["epochs"]) != 0:
        raise PipelineError("model.centre is fitted by the zero-shot path only; set train.epochs: 0 or "
                            "model.centre: false", "model.centre")
    seed = int(cfg["seed"]) + (fold or 0)
    torch.manual_seed(seed)
    device = device_for(dist)
    resume = last_path.exists() and not restart
    state = load_checkpoint(last_path) if resume else None
    if state is not None:
        check_resumable(state["config"], cfg, last_path)
    cache_hw = tuple(cache.images.shape[1:3])
    head_epochs = int(cfg["train"]["head_epochs"])
    if int(cfg["train"]["epochs"]) == 0 and head_epochs == 0:
        model = build_model(cfg, cache_hw)
        if model.centre is not None:
            set_centre(model, cache.images, cache.rows(photos[C.IMAGE]), int(cfg["embed"]["batch_size"]), device)
        return zero_shot(cfg, model, whales, fold, final_path, dist, device)
    # A resumed run rebuilds its network from the checkpoint: the pretrained weights are not read again.
    model = model_from_checkpoint(state, snapshots=False) if state is not None and state.get("network") \
        else build_model(cfg, cache_hw)
    set_grad_checkpointing(model, bool(cfg["model"]["grad_checkpointing"]))
    model = prepare_model(model, dist).to(device)
    loss = build_loss(cfg, num_classes, model.embedding_dim, class_counts).to(device)
    t = cfg["train"]
    budget = t["time_budget_min"]
    head = {}
    if head_epochs and state is None:  # a resumed run's checkpoint already holds the trained head
        started = time.monotonic()
        head_rows, head_flipped, head_labels = head_items(rows, flipped, labels, t)
        features = frozen_features(model.to(device), cache, head_rows, head_flipped, int(cfg["embed"]["batch_size"]),
                                   device)
        head = fit_head(model, loss, features, head_labels, cfg, seed)
        head["head_total_seconds"] = round(time.monotonic() - started, 1)
        if budget is not None:  # the features' and the head's minutes come out of the budget
            budget = max(0.0, float(budget) - head["head_total_seconds"] / 60)
    optimizer = build_optimizer(model, loss, cfg)
    precision = amp_dtype(device, bool(t["amp"]), str(t["amp_dtype"]))
    transform = train_transform(cfg["augment"])
    sampler = pk_sampler(labels, sampling, seed, dist, int(t["accumulate_steps"]))
    dataset = CachedPhotos(cache.images, rows, labels, transform, flipped)
    divide = cfg["divide"]
    recluster = [Recluster(CachedPhotos(cache.images, rows, labels, None, flipped), int(divide["clusters"]),
                           int(divide["every_epochs"]), float(divide["finetune_share"]),
                           int(cfg["embed"]["batch_size"]))] if int(divide["clusters"]) > 1 else []
    loader = DataLoader(dataset, batch_sampler=sampler,
                        num_workers=int(t["workers"]), pin_memory=device.type == "cuda",
                        persistent_workers=int(t["workers"]) > 0)
    delay = [StepDelay(float(os.environ["WHALE_STEP_DELAY"]))] if os.environ.get("WHALE_STEP_DELAY") else []
    cycles = int(t["snapshots"])
    if cycles < 1:
        raise PipelineError(f"train.snapshots must be 1 or more, not {cycles}", "train.snapshots")
    # Snapshots come before the checkpoint hook: a checkpoint written at a cycle's end holds its snapshot.
    snapshots = [Snapshots(cycles)] if cycles > 1 else []
    trainer = Trainer(model, loss, optimizer, loader, device, int(t["epochs"]), cfg, seed,
                      hooks=[TimeBudget(budget)] + recluster + snapshots +
                            ([Progress(f"train fold {fold}"), EpochLog(out_dir / "log.csv"), Checkpoint(last_path)]
                             if dist.is_main else []) + delay,
                      precision=precision, grad_clip=t["grad_clip"], warmup_epochs=float(t["warmup_epochs"]),
                      time_budget_s=None if budget is None else float(budget) * 60, dist=dist, cycles=cycles,
                      accumulate_steps=int(t["accumulate_steps"]), max_skipped_steps=int(t["max_skipped_steps"]))
    if state is not None:
        trainer.restore(state, last_path)
        log.info("resuming %s at epoch %d (%.0fs already spent)", last_path, trainer.epoch, trainer.elapsed_before)
    if dist.is_main:
        write_yaml(out_dir / "config.yaml", cfg)
    trainer.run()
    final = {"model": model.state_dict(), "network": model.spec, "config": cfg, "whales": whales,
             "fold": -1 if fold is None else fold,
             "epochs": trainer.epoch, "steps": trainer.step, "elapsed": trainer.elapsed(),
             "history": trainer.history, "snapshots": trainer.snapshots, "head": head,
             # How it ran (make gpu-check asserts CUDA and mixed precision from these).
             "device": str(device), "precision": precision_name(precision), "processes": dist.world,
             "skipped_steps": trainer.skipped_steps}
    if dist.is_main:
        save_checkpoint(final_path, final)
    cleanup(dist)
    return {"fold": fold, "epochs": trainer.epoch, "steps": trainer.step, "seconds": round(trainer.elapsed(), 1),
            "final_loss": trainer.history[-1]["loss"] if trainer.history else None, "whales": len(whales),
            "photos": len(rows), "device": str(device), "processes": dist.world,
            "precision": precision_name(precision), "skipped_steps": trainer.skipped_steps, **head}


def head_items(rows: np.ndarray, flipped: np.ndarray, labels: np.ndarray, train_cfg: dict):
    """What the head learns from: the training items, and with train.head_mirrors their mirror images
    as the same whale (an augmentation that costs nothing: the mirrored features are computed anyway),
    unless the items already hold the mirrors as whales of their own (sampler.flip_as_new_identity)."""
    if not train_cfg["head_mirrors"] or np.asarray(flipped).any():
        return rows, flipped, labels
    return (np.concatenate([rows, rows]), np.concatenate([np.zeros(len(rows), bool), np.ones(len(rows), bool)]),
            np.concatenate([labels, labels]))


@torch.no_grad()
def set_centre(model, images, rows, batch_size: int, device) -> None:
    """model.centre: the mean pooled feature of the training photos and of their mirrors (so a
    mirrored query, as flip TTA embeds it, is centred alike)."""
    from pipeline.models.embedding import photo_batches

    model.to(device).eval()
    total, count = torch.zeros_like(model.centre), 0
    for batch in photo_batches(images, rows, batch_size, device):
        total += model.pooled(batch).float().sum(0) + model.pooled(torch.flip(batch, dims=[3])).float().sum(0)
        count += 2 * len(batch)
    model.centre.copy_(total / max(count, 1))
    model.cpu()


def zero_shot(cfg: dict, model, whales: list[str], fold: int | None, final_path: Path, dist, device) -> dict:
    """train.epochs: 0 writes the (pretrained) network as it is: embed, knn, ensemble and identify then
    treat it like any trained model (what wildlife-tools users do with MegaDescriptor)."""
    if dist.is_main:
        save_checkpoint(final_path, {"model": model.state_dict(), "network": model.spec, "config": cfg,
                                     "whales": whales, "fold": -1 if fold is None else fold, "epochs": 0,
                                     "steps": 0, "elapsed": 0.0, "history": []})
        write_yaml(final_path.parent / "config.yaml", cfg)
        log.info("fold %s: train.epochs is 0, so the network is saved untrained (zero-shot) as %s", fold, final_path)
    cleanup(dist)
    return {"fold": fold, "epochs": 0, "steps": 0, "seconds": 0.0, "final_loss": None, "whales": len(whales),
            "photos": 0, "device": str(device), "processes": dist.world}


def check_resumable(saved: dict, current: dict, path: Path) -> None:
    saved, current = comparable(saved), comparable(current)
    for section in RESUME_SECTIONS:
        if saved.get(section) != current.get(section):
            raise PipelineError(f"checkpoint was trained with a different {section!r} config; "
                                "use --restart to train from scratch", path)
