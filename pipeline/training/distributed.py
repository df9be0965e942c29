"""DDP set-up for `torchrun`: NCCL on GPUs, gloo on the CPU. A single process needs none of it.

Every rank builds the same global P x K batch (the sampler is seeded by epoch) and takes its own
slice; the embeddings of all slices are gathered before the loss (pair and triplet losses need the
whole batch to find their positives and negatives), and DDP averages the gradients, so two ranks
with half a batch each take the same step as one process with the whole batch (up to batch-norm
statistics, which are per rank on the CPU: PyTorch's SyncBatchNorm is GPU-only). Only rank 0
writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def _all_gather(tensor: torch.Tensor, world: int) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor concatenated in rank order (same shape on every rank)."""
        return _all_gather(tensor, self.world) if self.enabled else tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's tensor on every rank."""
        if self.enabled:
            dist.broadcast(tensor, src=0)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any: ranks must agree on when to stop."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own rows, summed over ranks
    (every rank computes the same loss from the gathered batch). With DDP's averaging this gives
    exactly the gradient of the whole batch's loss, for the network and the loss's own parameters."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, world: int, rank: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        return _all_gather(tensor, world)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def gather_with_grad(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows, in rank order; gradients flow back to each rank's own rows."""
    if not info.enabled:
        return tensor
    return _GatherWithGrad.apply(tensor, info.world, info.rank)


def setup() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)


def device_for(info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def cleanup(info: DistInfo) -> None:
    """Wait for every rank (rank 0 may still be writing); the group itself lives until the process
    exits, since the next fold reuses it."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
