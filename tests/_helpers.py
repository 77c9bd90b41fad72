"""Shared test helpers (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import contextlib
import functools
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
    with _triton_interpret(not torch.cuda.is_available()), contextlib.suppress(ImportError):
        import triton.language  # noqa: F401


@contextlib.contextmanager
def _triton_interpret(on: bool = True):
    """TRITON_INTERPRET=1 inside (when `on`; Triton reads it when it builds its library, jits a function and
    launches one), as it was outside."""
    previous = os.environ.get("TRITON_INTERPRET")
    if on:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
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


@functools.cache
def interpreter_problem() -> str | None:
    """Why Triton's interpreter cannot run this project's kernels here, or None when it can: a kernel built as
    they are (Triton imported inside a function, a loop over a length given at run time) must run. Known cases:
    Triton 3.1's interpreter wants `triton.language` among the module's globals; Triton 3.6's turns a run-time
    length into a Python int with `int()` of a one-element array, which NumPy 2.4 and later refuse (2.3 warns;
    Triton 3.8 squeezes it first). Measured: Triton 3.6 with NumPy 2.3 passes every kernel test."""
    import numpy as np
    import triton
    import triton.language as tl

    try:
        with _triton_interpret():
            @triton.jit
            def count(out_ptr, n):
                total = 0.0
                for _ in range(0, n, 1):
                    total += 1.0
                tl.store(out_ptr, total)

            out = torch.zeros(1)
            count[(1,)](out, 3)
    except Exception as err:  # InterpreterError, whatever it wraps
        return (f"Triton {triton.__version__}'s interpreter cannot run these kernels with NumPy {np.__version__} "
                f"({err}); Triton 3.8's can (the compiled kernels are not affected)")
    return None if out.item() == 3 else "Triton's interpreter miscounts a loop over a run-time length"


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


def sao_layout(model) -> dict[str, torch.Tensor]:
    """A Tri-Ergon model's tensors under the keys of SAO's checkpoint (without what SAO lacks)."""
    out = {"pretransform.model." + k: v for k, v in model.vae.state_dict().items()}
    out |= {"model.model." + k: v for k, v in model.dit.state_dict().items()}
    for name in ("seconds_start", "seconds_total"):
        sub = getattr(model.conditioner, name).state_dict()
        out |= {f"conditioner.conditioners.{name}." + k: v for k, v in sub.items()}
    return out


class CountingEncoders:
    """The tiny preset's LanguageBind towers, counting how often each modality is really encoded."""

    def __init__(self, seed: int | None = None):
        from triergon.triergon_core.languagebind import TINY_SEED, LanguageBindEncoders
        from triergon.triergon_core.presets import get_preset

        dim = get_preset("tiny").conditioning.embed_dim
        self.inner = LanguageBindEncoders.tiny_random(embed_dim=dim, seed=TINY_SEED if seed is None else seed)
        self.identity, self.embed_dim = self.inner.identity, self.inner.embed_dim
        self.calls = {"text": 0, "audio": 0, "video": 0, "video-file": 0}
        self.moves: list[str] = []  # the devices `to` was given, in order

    def require(self, modalities):
        self.inner.require(modalities)

    def to(self, device):
        self.moves.append(str(device))
        self.inner.to(device)
        return self

    def encode_text(self, texts):
        self.calls["text"] += len(texts)
        return self.inner.encode_text(texts)

    def encode_audio(self, audio):
        self.calls["audio"] += len(audio)
        return self.inner.encode_audio(audio)

    def encode_video(self, frames):
        self.calls["video"] += len(frames)
        return self.inner.encode_video(frames)

    def encode_video_file(self, path, *, start=0.0, end=None):
        self.calls["video-file"] += 1
        return self.inner.encode_video_file(path, start=start, end=end)


def train_on_cpu(recipe: str, run_dir: Path, overrides: list[str]):
    """Fit `recipe` with `overrides` (`section.key=value`) in one CPU process into `run_dir`; the trainer."""
    from triergon.train.config import apply_overrides
    from triergon.train.distributed import init_distributed
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers import trainer_class

    config = apply_overrides(get_recipe(recipe), overrides)
    trainer = trainer_class(config.trainer)(config, init_distributed(device="cpu"), run_dir)
    trainer.fit()
    return trainer
