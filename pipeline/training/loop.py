"""A plain training loop; everything around it (logs, checkpoints, budget, progress) is a hook."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.device import autocast

log = logging.getLogger(__name__)


def clock() -> float:
    """This process's seconds (a module function, so a test can make one rank's clock run fast)."""
    return time.monotonic()


def lr_factor(progress: float, warmup: float, cycles: int = 1) -> float:
    """Linear warm-up over the first `warmup` share of training, then cosine down to 1%; with several
    cycles, each of the `cycles` equal shares of training is one cosine, the later ones restarting at the
    full rate (warm restarts, for snapshot ensembling)."""
    if warmup > 0 and progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    progress, length = min(1.0, progress), 1.0 / cycles
    cycle = min(cycles - 1, int(progress / length))
    start = cycle * length + (warmup if cycle == 0 else 0.0)
    t = (progress - start) / max(1e-8, (cycle + 1) * length - start)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class ModelWithLoss(nn.Module):
    """One module for the forward pass and the loss, so DDP synchronises the loss's own parameters
    (ArcFace's class centres) along with the network's. Keeps the batch's embeddings (detached) for
    hooks and samplers that learn from them (hard class mining)."""

    def __init__(self, model: nn.Module, loss: nn.Module, precision: torch.dtype | None, device: torch.device,
                 dist=None):
        from pipeline.training.distributed import DistInfo

        super().__init__()
        self.model, self.loss, self.precision, self.device = model, loss, precision, device
        self.dist = dist or DistInfo()
        self.takes_groups = bool(getattr(loss, "takes_groups", False))
        self.last_embeddings: torch.Tensor | None = None
        self.last_labels: torch.Tensor | None = None

    def forward(self, images: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        from pipeline.training.distributed import gather_with_grad

        with autocast(self.device, self.precision):
            embeddings = self.model(images)
        # Under DDP the loss sees the whole global batch: every rank's embeddings (see distributed.py).
        embeddings = gather_with_grad(embeddings.float(), self.dist)
        labels, groups = self.dist.gather(labels), self.dist.gather(groups)
        self.last_embeddings, self.last_labels = embeddings.detach(), labels
        if self.takes_groups:
            return self.loss(embeddings, labels, groups)
        return self.loss(embeddings, labels)


def keep_batch_norm_statistics(model: nn.Module) -> None:
    """train.freeze_bn: the backbone's batch norm layers in eval mode (their pretrained running
    statistics, not the batch's); their affine weights still learn. The neck's norm trains as usual."""
    backbone = getattr(getattr(model, "module", model), "backbone", None)
    for module in (backbone.modules() if backbone is not None else ()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class Trainer:
    """The loop. Under DDP every decision that shapes a step (the learning rate, the time budget's stop,
    divide and conquer's switch to fine-tuning, snapshots) reads `progress()`, which uses rank 0's
    elapsed time (broadcast after every step), so the ranks never disagree about where training is."""

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer, loader,
                 device: torch.device, epochs: int, config: dict, seed: int, hooks=(),
                 precision: torch.dtype | None = None, grad_clip: float | None = None, warmup_epochs: float = 1.0,
                 time_budget_s: float | None = None, dist=None, cycles: int = 1, accumulate_steps: int = 1,
                 max_skipped_steps: int = 50):
        from pipeline.training.distributed import DistInfo

        self.model, self.loss, self.optimizer, self.loader = model, loss, optimizer, loader
        self.dist = dist or DistInfo()
        self.device, self.epochs, self.config, self.seed = device, int(epochs), config, int(seed)
        self.hooks = list(hooks)
        self.precision = precision
        self.model_with_loss = ModelWithLoss(model, loss, precision, device, self.dist)
        self.step_module: nn.Module = self.model_with_loss
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Some timm backbones keep head parameters that forward_features never uses.
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)
        # Loss scaling is for float16 only: bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision is torch.float16)
        self.grad_clip = grad_clip
        self.accumulate_steps = max(1, int(accumulate_steps))
        self.max_skipped_steps = int(max_skipped_steps)
        self.steps_per_epoch = len(loader.batch_sampler)
        self.cycles = max(1, int(cycles))
        # The warm-up belongs to the first cycle and takes at most half of it.
        self.warmup = min(0.5 / self.cycles, warmup_epochs / max(1, self.epochs))
        self.time_budget_s = time_budget_s
        self.freeze_bn = bool(config["train"].get("freeze_bn", False))
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.epoch = 0  # epochs finished
        self.step = 0
        self.history: list[dict] = []
        self.snapshots: list[dict] = []  # weights at the end of each finished cycle but the last
        self.elapsed_before = 0.0  # seconds spent in earlier (interrupted) runs
        self.shared_elapsed = 0.0  # rank 0's elapsed() at the last clock sync: what progress() reads
        self.skipped_steps = 0  # steps the GradScaler skipped (non-finite loss or gradients)
        self._skipped_in_a_row = 0
        self.last_step_skipped = False
        self._batch_embeddings = self._batch_labels = None  # the last step's, all micro-batches
        self.stop_requested = False
        self.last_loss = float("nan")
        self._started = clock()

    def elapsed(self) -> float:
        """This rank's own seconds of training, across resumes (what rank 0 logs and checkpoints)."""
        return self.elapsed_before + clock() - self._started

    def sync_clock(self) -> None:
        """Every rank takes rank 0's elapsed time: one clock for the whole job."""
        self.shared_elapsed = self.dist.broadcast_float(self.elapsed())

    def progress(self) -> float:
        by_steps = self.step / max(1, self.epochs * self.steps_per_epoch)
        by_time = self.shared_elapsed / self.time_budget_s if self.time_budget_s else 0.0
        return min(1.0, max(by_steps, by_time))

    def _seed_epoch(self) -> None:
        # Everything random in an epoch is a function of (seed, epoch): a resumed run repeats it exactly.
        seed = (self.seed * 1_000_003 + self.epoch) % 2**31
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.loader.batch_sampler.set_epoch(self.epoch)

    def run(self) -> None:
        self._started = clock()
        self.sync_clock()
        for hook in self.hooks:
            hook.before_train(self)
        while self.epoch < self.epochs and not self.stop_requested:
            self._seed_epoch()
            self.sync_clock()  # divide and conquer's before_epoch reads progress()
            for hook in self.hooks:
                hook.before_epoch(self)
            self.model.train()
            self.loss.train()
            if self.freeze_bn:
                keep_batch_norm_statistics(self.model)
            total, count, taken = 0.0, 0, 0
            for images, labels, groups in self.loader:
                self._set_lr()
                loss = self.dist.mean(self._step(images.to(self.device, non_blocking=True), labels.to(self.device),
                                                 groups.to(self.device)))
                self.step += 1
                taken += 1
                if not self.last_step_skipped:
                    self._feed_sampler()
                    self.last_loss = loss
                    total, count = total + loss, count + 1
                self.sync_clock()
                for hook in self.hooks:
                    hook.after_step(self)
                self.stop_requested = self.dist.any(self.stop_requested)
                if self.stop_requested:
                    break
            if taken < self.steps_per_epoch:
                # A budget stop mid-epoch: keep the weights, but count the epoch as not done.
                self.history.append(self._row(total / max(1, count), partial=True))
            else:
                self.epoch += 1
                self.history.append(self._row(total / max(1, count)))
            if self.skipped_steps:
                log.info("%d step(s) skipped so far: non-finite loss or gradients under float16 loss scaling",
                         self.skipped_steps)
            for hook in self.hooks:
                hook.after_epoch(self)
        for hook in self.hooks:
            hook.after_train(self)

    def _row(self, loss: float, partial: bool = False) -> dict:
        return {"epoch": self.epoch, "steps": self.step, "loss": round(loss, 6),
                "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": round(self.elapsed(), 1),
                "partial": int(partial)}

    def _set_lr(self) -> None:
        factor = lr_factor(self.progress(), self.warmup, self.cycles)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def _feed_sampler(self) -> None:
        """Hard class mining learns which whales look alike from the (whole, gathered) batch's embeddings."""
        sampler = self.loader.batch_sampler
        if not getattr(sampler, "hard", False):
            return
        embeddings = F.normalize(self._batch_embeddings, dim=1).cpu()
        sampler.update_bank(embeddings.numpy(), self._batch_labels.cpu().numpy())

    def _no_sync(self, last: bool):
        """DDP all-reduces gradients on the last micro-batch only; the others accumulate locally."""
        if self.dist.enabled and not last:
            return self.step_module.no_sync()
        return contextlib.nullcontext()

    def _step(self, images: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> float:
        """One optimiser step over the batch, in `accumulate_steps` micro-batches whose gradients add up
        (each micro-batch's loss is divided by their number, so a loss that is a mean over photos gets
        the whole batch's gradient). A pair or triplet loss sees one micro-batch at a time."""
        parts = self.accumulate_steps
        if len(images) % parts:
            raise PipelineError(f"this process's batch of {len(images)} photos does not split into {parts} "
                                "equal micro-batches", "train.accumulate_steps")
        self.optimizer.zero_grad(set_to_none=True)
        losses, embeddings, batch_labels, learned = [], [], [], False
        chunks = zip(images.chunk(parts), labels.chunk(parts), groups.chunk(parts))
        for i, (x, y, g) in enumerate(chunks):
            with self._no_sync(last=i == parts - 1):
                loss = self.step_module(x, y, g)
                if not torch.isfinite(loss) and not self.scaler.is_enabled():
                    raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower train.lr")
                losses.append(float(loss.detach()))
                embeddings.append(self.model_with_loss.last_embeddings)
                batch_labels.append(self.model_with_loss.last_labels)
                if not loss.requires_grad:  # a miner found no pair or triplet here: nothing to learn
                    if not self.dist.enabled:
                        continue
                    # Under DDP every rank must join the gradient all-reduce: contribute zeros.
                    loss = loss + 0.0 * sum(p.sum() for p in self.step_module.parameters())
                # A non-finite loss under the scaler still goes backward: its gradients are inf or NaN,
                # so the scaler skips the step (and lowers its scale) on every rank alike.
                self.scaler.scale(loss / parts).backward()
                learned = True
        self._batch_embeddings, self._batch_labels = torch.cat(embeddings), torch.cat(batch_labels)
        self.last_step_skipped = False
        if learned:
            self._optimizer_step()
        return sum(losses) / parts

    def _optimizer_step(self) -> None:
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.loss.parameters()), self.grad_clip)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The scaler lowers its scale exactly when it found inf/NaN gradients and skipped the step.
        self.last_step_skipped = scale is not None and self.scaler.get_scale() < scale
        if not self.last_step_skipped:
            self._skipped_in_a_row = 0
            return
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        if self._skipped_in_a_row >= self.max_skipped_steps:
            raise FloatingPointError(f"{self._skipped_in_a_row} steps in a row had non-finite loss or gradients "
                                     f"(step {self.step}); lower train.lr or set train.amp_dtype: bfloat16")

    # ------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed(), "history": self.history,
            "config": self.config, "sampler": self._sampler_state(), "network": getattr(self.model, "spec", None),
            "snapshots": self.snapshots, "skipped_steps": self.skipped_steps,
        }

    def _sampler_state(self) -> dict:
        state = getattr(self.loader.batch_sampler, "state_dict", lambda: {})()
        return {k: None if v is None else torch.as_tensor(v) for k, v in state.items()}

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.state())

    def restore(self, state: dict, path: Path | str = "last.pt") -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:  # parameter groups changed (train.backbone_lr_multiplier, train.no_decay)
            raise PipelineError(f"the optimiser's parameter groups differ from the checkpoint's ({e}); "
                                "use --restart to train from scratch", path) from None
        # A scaler saved disabled (CPU, or train.amp false) has an empty state, which an enabled one
        # refuses: it then starts from its default scale, which settles within a few steps.
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.elapsed_before = float(state["elapsed"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.history = list(state["history"])
        self.snapshots = list(state.get("snapshots", []))
        sampler = self.loader.batch_sampler
        if state.get("sampler") and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict({k: None if v is None else v.numpy() for k, v in state["sampler"].items()})
