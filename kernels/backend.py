"""The one switch between Triton kernels and their PyTorch references: `TRIERGON_KERNELS=auto|triton|torch`.

- `auto` (default): per op and shape, whichever path measured faster on a GPU. `TRITON_FASTER` below is the
  one table of those measurements (benchmarks/RESULTS.md); where it has no entry (today: every op and shape,
  as no GPU figure shows a Triton kernel ahead yet) auto takes the PyTorch path (SDPA for attention, eager
  Snake), with one log line per op saying why.
- `triton`: always Triton (CUDA, or the CPU under `TRITON_INTERPRET=1`); an op that cannot honour it raises.
- `torch`: always the PyTorch references.

Triton is imported lazily, the first time an op asks, never at package import.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "triton", "torch")
ENV = "TRIERGON_KERNELS"


class KernelBackendError(RuntimeError):
    """TRIERGON_KERNELS=triton was asked for but Triton cannot run here."""


def requested_backend() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV}={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_IMPORT_ERROR: list[str | None] = []  # filled on first use (a plain cache: Dynamo traces through it)


def _triton_import_error() -> str | None:
    if not _IMPORT_ERROR:
        try:
            import triton
            import triton.language  # noqa: F401
        except Exception as e:  # ImportError, or a broken install raising at import
            _IMPORT_ERROR.append(f"Triton does not import ({type(e).__name__}: {e})")
        else:
            _IMPORT_ERROR.append(None)
    return _IMPORT_ERROR[0]


def triton_unavailable_reason(x: torch.Tensor) -> str | None:
    """Why Triton cannot run an op on `x` (None when it can)."""
    error = _triton_import_error()
    if error is not None:
        return error
    if x.is_cuda or interpreting():
        return None
    return f"tensors are on {x.device.type}, and Triton runs on CUDA (or on the CPU under TRITON_INTERPRET=1)"


# op -> (tensor, shape) -> whether its Triton kernel measured faster than the PyTorch path there, on a GPU.
# Fill an entry only from a GPU figure in benchmarks/RESULTS.md (card, date, commit); `auto` follows it. No
# figure exists yet, so the table is empty and auto runs the PyTorch path everywhere.
TRITON_FASTER: dict[str, Callable[[torch.Tensor, dict[str, int]], bool]] = {}

_NOT_MEASURED = "no GPU measurement shows the Triton kernel ahead at this shape ({ENV}=triton forces it)"


@functools.cache
def _log_fallback(op: str, reason: str) -> None:
    logger.info("%s: using the PyTorch reference, not Triton: %s", op, reason)


def use_triton(op: str, x: torch.Tensor, shape: dict[str, int] | None = None) -> bool:
    """Whether `op` on tensor `x` runs its Triton kernel, following TRIERGON_KERNELS: the one place that
    decides, per op and shape.

    Args:
        op: the op's name (the key of `TRITON_FASTER`, and for messages).
        x: a representative input (its device decides whether Triton can run).
        shape: the sizes `TRITON_FASTER[op]` decides on (e.g. q_len, k_len, head_dim).
    """
    backend = requested_backend()
    if backend == "torch":
        return False
    reason = triton_unavailable_reason(x)
    if backend == "triton":
        if reason is not None:
            raise KernelBackendError(f"{ENV}=triton, but {op} cannot use Triton: {reason}")
        return True
    if reason is None:
        faster = TRITON_FASTER.get(op)
        if not interpreting() and faster is not None and faster(x, shape or {}):
            return True
        reason = _NOT_MEASURED.format(ENV=ENV)
    if not torch.compiler.is_compiling():  # Dynamo cannot trace logging under fullgraph=True
        _log_fallback(op, reason)
    return False
