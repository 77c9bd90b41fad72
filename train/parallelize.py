"""The one place where models meet distribution: activation checkpointing, compile, FSDP2 or DDP.

Order as torchtitan's `parallelize.py`: activation checkpointing per block, then `torch.compile` per block,
then `fully_shard` per block and on the root (FSDP2), or one DDP wrapper. Everything is applied in place
so parameter names (and so checkpoint keys) stay those of the plain model.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

MODES = ("auto", "none", "ddp", "fsdp")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """How a trainer's model is spread over ranks.

    Args:
        mode: "ddp" (replicated), "fsdp" (FSDP2: parameters sharded per block), "none" (one rank only), or
            "auto" (ddp when the world has more than one rank, else none).
        param_dtype: FSDP2's compute dtype for parameters ("fp32" or "bf16"; gradients are reduced in fp32).
        activation_checkpointing: recompute each block's activations in the backward pass.
        compile: `torch.compile` each block.
    """

    mode: str = "auto"
    param_dtype: str = "fp32"
    activation_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"parallel mode must be one of {MODES}, got {self.mode!r}")
        if self.param_dtype not in ("fp32", "bf16"):
            raise ValueError(f"param_dtype must be fp32 or bf16, got {self.param_dtype!r}")


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a model: DiT transformer blocks, or the LUFS predictor's encoder layers."""
    from ..triergon_core.dit import TransformerBlock

    return [m for m in model.modules() if isinstance(m, (TransformerBlock, nn.TransformerEncoderLayer))]


def _checkpointed(forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def parallelize(model: nn.Module, config: ParallelConfig, *, device: torch.device,
                blocks: Sequence[nn.Module] | None = None) -> nn.Module:
    """Apply `config` to `model` (already on `device`) and return the module to call in training.

    Args:
        model: the plain model; it stays usable under its own names (FSDP2 shards it in place; DDP returns a
            wrapper around it).
        config: the parallel settings.
        device: this rank's device.
        blocks: the modules to checkpoint / compile / shard one by one (default: `block_modules(model)`).
    """
    blocks = list(block_modules(model) if blocks is None else blocks)
    world = dist.get_world_size() if dist.is_initialized() else 1
    mode = config.mode if config.mode != "auto" else ("ddp" if world > 1 else "none")
    if mode == "none" and world > 1:
        raise ValueError(f"parallel mode 'none' runs on one rank only, but the world has {world}: use ddp or fsdp")
    if config.activation_checkpointing:
        for block in blocks:
            block.forward = functools.partial(_checkpointed, block.forward)
    if config.compile:
        for block in blocks:
            block.compile()
    if mode == "fsdp":
        try:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        except ImportError as err:  # 2.4 and 2.5 have it under torch.distributed._composable, CUDA only: untested
            raise RuntimeError(f"parallel mode fsdp (FSDP2's fully_shard) needs PyTorch >= 2.6, not "
                               f"{torch.__version__}: use ddp") from err

        policy = MixedPrecisionPolicy(param_dtype=DTYPES[config.param_dtype], reduce_dtype=torch.float32)
        for block in blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        logger.info("FSDP2 over %d ranks, %d blocks sharded, params in %s", world, len(blocks), config.param_dtype)
        return model
    if config.param_dtype != "fp32":
        raise ValueError("param_dtype bf16 needs parallel mode fsdp (use autocast for bf16 under ddp)")
    if mode == "ddp" and any(p.requires_grad for p in model.parameters()):
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())
