"""DDP set-up for `torchrun`: NCCL on GPUs, gloo on the CPU. A single process needs none of it.

Every rank builds the same global P x K batch (the sampler is seeded by epoch) and takes its own
slice; the embeddings of all slices are gathered before the loss (pair and triplet losses need the
whole batch to find their positives and negatives), and DDP averages the gradients, so two ranks
with half a batch each take the same step as one process with the whole batch. On GPUs batch norm
becomes SyncBatchNorm; on the CPU its statistics are per rank (PyTorch's SyncBatchNorm is GPU-only).
Only rank 0 writes files.

Every collective goes through this module, with its tensors on `DistInfo.device`: the device the
backend requires (NCCL: the rank's GPU; gloo: the CPU). Results come back on the caller's device.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def backend_device(backend: str | None, local_rank: int) -> torch.device:
    """The device a backend's collectives take their tensors on."""
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


def _all_gather(tensor: torch.Tensor, world: int, device: torch.device) -> torch.Tensor:
    local = tensor.contiguous().to(device)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(tensor.device)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where this rank's collectives put their tensors."""
        return backend_device(self.backend, self.local_rank)

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor concatenated in rank order (same shape on every rank)."""
        return _all_gather(tensor, self.world, self.device) if self.enabled else tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's tensor on every rank (on the caller's device)."""
        if not self.enabled:
            return tensor
        local = tensor.contiguous().to(self.device)
        dist.broadcast(local, src=0)
        return local.to(tensor.device)

    def broadcast_float(self, value: float) -> float:
        """Rank 0's number on every rank (the training clock: ranks must agree on the budget's progress)."""
        if not self.enabled:
            return value
        return float(self.broadcast(torch.tensor([value], dtype=torch.float64)).item())

    def broadcast_array(self, array: np.ndarray) -> np.ndarray:
        """Rank 0's numpy array on every rank (e.g. divide and conquer's clusters)."""
        return self.broadcast(torch.from_numpy(np.ascontiguousarray(array))).numpy()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any: ranks must agree on when to stop."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own rows, summed over ranks
    (every rank computes the same loss from the gathered batch). With DDP's averaging this gives
    exactly the gradient of the whole batch's loss, for the network and the loss's own parameters."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, world: int, rank: int, device: torch.device) -> torch.Tensor:
        ctx.rank, ctx.rows, ctx.device = rank, tensor.shape[0], device
        return _all_gather(tensor, world, device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        local = grad.contiguous().to(ctx.device, copy=True)
        dist.all_reduce(local)
        return local[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows].to(grad.device), None, None, None


def gather_with_grad(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows, in rank order; gradients flow back to each rank's own rows."""
    if not info.enabled:
        return tensor
    return _GatherWithGrad.apply(tensor, info.world, info.rank, info.device)


def setup() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        # Torn down before the interpreter's own teardown: a group left to it can abort the process at
        # exit (gloo's threads still joinable: "terminate called without an active exception", SIGABRT)
        # after the training itself went well.
        atexit.register(_destroy_group)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                    backend=str(dist.get_backend()))


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(info: DistInfo) -> torch.device:
    """The device this rank trains on: its GPU under NCCL (or alone on a GPU machine), else the CPU."""
    if info.enabled:
        return info.device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def prepare_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """Batch norm shares its statistics across ranks where PyTorch can (SyncBatchNorm needs NCCL)."""
    if info.enabled and info.backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def cleanup(info: DistInfo) -> None:
    """Wait for every rank (rank 0 may still be writing); the group itself lives until the process
    exits, since the next fold reuses it."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
