"""Process-group set-up: torchrun's environment or a single process, always through `torch.distributed`.

A single process (`triergon train`) runs as a world of one on an in-memory store, so the trainers have one
code path. On exit the group is destroyed in a `finally` and the process leaves with `os._exit`: without that
a gloo rank can die after finishing with "terminate called without an active exception".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(*, device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join torchrun's process group (or make a world of one) and pick this rank's device.

    Args:
        device: "auto" (this rank's GPU when CUDA is available, else the CPU), "cpu" or "cuda".
        timeout_s: collective timeout (checkpoints of large models take minutes to gather).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over ranks (flags such as "stop requested" or "loss not finite")."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def all_reduce_mean(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t.tolist()


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's `x` (all of one shape) concatenated along dim 0 in rank order, and where this rank's rows start
    in it. Gradients flow back to the rank whose rows they are (summed over the ranks that used them): a loss that
    uses other ranks' rows, such as a contrastive one, trains as if all ranks' batches were one. A world of one
    returns `x` itself."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x, 0
    if x.dtype == torch.bool:  # not every backend gathers bool
        out, start = gather_with_grad(x.to(torch.uint8))
        return out.bool(), start
    return _GatherRows.apply(x), dist.get_rank() * len(x)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows in rank order; backward sums each row's gradient over the ranks and hands every rank its own
    rows (an all-reduce of the whole gradient: these are small feature batches, and gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]
