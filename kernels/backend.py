"""The one switch between Triton kernels and their PyTorch references: `TRIERGON_KERNELS=auto|triton|torch`.

- `auto` (default): Triton where it can run (CUDA tensors with Triton importable, or any tensor under
  `TRITON_INTERPRET=1`), the PyTorch reference elsewhere, with one log line saying why.
- `triton`: always Triton; an op that cannot honour it raises.
- `torch`: always the PyTorch references (SDPA for attention, eager Snake).

Triton is imported lazily, the first time an op asks, never at package import.
"""

from __future__ import annotations

import functools
import logging
import os

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


@functools.cache
def _log_fallback(op: str, reason: str) -> None:
    logger.info("%s: using the PyTorch reference, not Triton: %s", op, reason)


def use_triton(op: str, x: torch.Tensor) -> bool:
    """Whether `op` on tensor `x` runs its Triton kernel, following TRIERGON_KERNELS.

    Args:
        op: the op's name, for messages.
        x: a representative input (its device decides).
    """
    backend = requested_backend()
    if backend == "torch":
        return False
    reason = triton_unavailable_reason(x)
    if reason is None:
        return True
    if backend == "triton":
        raise KernelBackendError(f"{ENV}=triton, but {op} cannot use Triton: {reason}")
    if not torch.compiler.is_compiling():  # Dynamo cannot trace logging under fullgraph=True
        _log_fallback(op, reason)
    return False
