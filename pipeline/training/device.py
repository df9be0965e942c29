"""CUDA when available, else CPU; AMP only on CUDA, in the precision the config asks for."""
from __future__ import annotations

import contextlib

import torch

from pipeline.errors import PipelineError

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(device: torch.device, enabled: bool, name: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `train.amp` / `train.amp_dtype` on `device`, or None (full precision).
    `auto` takes bfloat16 where the GPU supports it (float32's range: no loss scaling, no overflow),
    else float16 (with a GradScaler)."""
    if not enabled or device.type != "cuda":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in AMP_DTYPES:
        raise PipelineError(f"unknown amp_dtype {name!r}; use auto, {', '.join(AMP_DTYPES)}", "train.amp_dtype")
    if AMP_DTYPES[name] is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise PipelineError("this GPU has no bfloat16; use float16 or auto", "train.amp_dtype")
    return AMP_DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in `dtype` (from amp_dtype); None runs in full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """What a checkpoint records: float32, float16 or bfloat16."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")
