"""Checkpoints hold only tensors and plain Python values, so they load with weights_only=True."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.io.atomic import torch_save


def save_checkpoint(path: Path, state: dict) -> None:
    torch_save(path, state)


def read_tensors(path: str | Path, missing: str = "checkpoint not found") -> object:
    """A torch file's contents, loaded with weights_only (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(missing, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a tampered or foreign file: never fall back to unpickling
        raise PipelineError(f"not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                            path) from None


def load_checkpoint(path: str | Path) -> dict:
    state = read_tensors(path)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise PipelineError("not a checkpoint of this pipeline (no 'model' and 'config' entries)", path)
    # Keys added to DEFAULTS after the checkpoint was written take their default values; keys since
    # removed are dropped.
    from pipeline.config import DEFAULTS, deep_merge, known_keys

    state["config"] = deep_merge(DEFAULTS, known_keys(state["config"], DEFAULTS), str(path))
    return state
