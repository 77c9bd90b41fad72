"""Shared test helpers (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"


def import_triton_for_kernel_tests() -> None:
    """Imports Triton so that its jitted library (`tl.max`, `tl.sum`, ...) is the interpreter's where there is no
    GPU: Triton builds that library once, at its first import, for the interpreter or for the GPU as
    TRITON_INTERPRET says then. tests/conftest.py calls this before any test module is imported, so the kernel
    tests run in-process whatever the order of the files. The variable is put back afterwards: left on, it
    would send every other test's kernels (auto backend, CPU tensors) through the interpreter; the kernel tests
    set it themselves."""
    previous = os.environ.get("TRITON_INTERPRET")
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    except ImportError:
        pass
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous


def triton_is_interpreted() -> bool:
    """Whether Triton's library was built for the interpreter (False without Triton)."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(tl.standard.max, InterpretedFunction)


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of the expected tensor."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = expected.abs().max().clamp_min(1e-30)
    return float((actual - expected).abs().max() / scale)


def load_case(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A Stable Audio Open parity case copied from shared/reference/sao: (tensors, description)."""
    return load_file(DATA / f"{name}.safetensors"), json.loads((DATA / f"{name}.json").read_text())


def split_case(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict, inputs/outputs/debug) of a parity case."""
    io_prefixes = ("input.", "output.", "debug.")
    state = {k: v for k, v in tensors.items() if not k.startswith(io_prefixes)}
    io = {k: v for k, v in tensors.items() if k.startswith(io_prefixes)}
    return state, io


def perturb_(module: torch.nn.Module, *, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add N(0, std^2) to every float parameter, in place (as SAO's reference cases do), so that
    zero-initialised branches (attention and feed-forward outputs) become active. Returns the module."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def assert_unit_embeddings(x: torch.Tensor, batch: int, dim: int) -> None:
    """Condition embeddings: float32 [batch, 1, dim], each of unit norm."""
    assert x.shape == (batch, 1, dim) and x.dtype == torch.float32, f"{x.shape=} {x.dtype=}"
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(batch, 1), atol=1e-6, rtol=0)


def condition_clips() -> dict[str, torch.Tensor]:
    """A seeded batch of 3 reference-audio clips (1 s) and 3 videos (11 frames of 24 x 40)."""
    g = torch.Generator().manual_seed(0)
    return {"audio": torch.randn(3, 2, 44100, generator=g) * 0.1, "video": torch.rand(3, 11, 24, 40, 3, generator=g)}
