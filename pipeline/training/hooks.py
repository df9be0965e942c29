"""Hooks around the plain training loop (detectron2's pattern): logging, checkpoints, the time budget."""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

from pipeline.io.atomic import atomic_path

log = logging.getLogger(__name__)


class Hook:
    def before_train(self, trainer) -> None: ...
    def before_epoch(self, trainer) -> None: ...
    def after_step(self, trainer) -> None: ...
    def after_epoch(self, trainer) -> None: ...
    def after_train(self, trainer) -> None: ...


class EpochLog(Hook):
    """log.csv: one row per finished epoch; rewritten whole each time so it is never half a row."""

    def __init__(self, path: Path):
        self.path = path

    def after_epoch(self, trainer) -> None:
        rows = trainer.history
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                writer.writeheader()
                writer.writerows(rows)
        last = rows[-1]
        log.info("epoch %d: loss %.4f, lr %.2e, %.0fs", last["epoch"], last["loss"], last["lr"], last["elapsed_s"])


class Checkpoint(Hook):
    """last.pt after every epoch: model, loss, optimiser, scaler, epoch, elapsed time, config."""

    def __init__(self, path: Path):
        self.path = path

    def after_epoch(self, trainer) -> None:
        trainer.save(self.path)


class TimeBudget(Hook):
    """Asks the loop to stop once the wall-clock budget (minutes, counted across resumes) is spent.
    The loop finishes the current step, the epoch's hooks run, and training ends cleanly."""

    def __init__(self, minutes: float | None):
        self.seconds = None if minutes is None else float(minutes) * 60

    def after_step(self, trainer) -> None:
        # Rank 0's clock (every rank reads the same value, so every rank stops at the same step).
        if self.seconds is not None and trainer.shared_elapsed >= self.seconds:
            if not trainer.stop_requested:
                log.info("time budget of %.1f min reached at epoch %d", self.seconds / 60, trainer.epoch)
            trainer.stop_requested = True


class Snapshots(Hook):
    """Snapshot ensembling (Huang et al. 2017): the learning rate runs `cycles` cosine cycles
    (Trainer(cycles=...)), and at the end of each cycle but the last the weights are kept in
    trainer.snapshots, which the checkpoints carry; the final weights are the last snapshot."""

    def __init__(self, cycles: int):
        self.cycles = int(cycles)

    def after_step(self, trainer) -> None:
        done = len(trainer.snapshots)
        if done < self.cycles - 1 and trainer.progress() >= (done + 1) / self.cycles:
            trainer.snapshots.append({k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()})
            log.info("snapshot %d of %d kept at epoch %d", done + 1, self.cycles, trainer.epoch)


class Progress(Hook):
    """A bar on a terminal, a plain line now and then in a log file (pipeline/progress.py)."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def before_train(self, trainer) -> None:
        from pipeline.progress import Progress as Bar

        self.bar = Bar(trainer.epochs * trainer.steps_per_epoch, self.desc, unit="step", initial=trainer.step)

    def after_step(self, trainer) -> None:
        self.bar.update(1)
        self.bar.set_postfix(epoch=trainer.epoch, loss=f"{trainer.last_loss:.3f}")

    def after_train(self, trainer) -> None:
        self.bar.close()


class StepDelay(Hook):
    """Sleeps after every step. Only for fault-injection tests (WHALE_STEP_DELAY=seconds), which need
    a kill to land mid-epoch on a machine where an epoch of a tiny model takes milliseconds."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def after_step(self, trainer) -> None:
        time.sleep(self.seconds)
