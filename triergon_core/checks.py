"""Checks of arguments, input files and output paths, run before anything expensive (a model build, a step).

Every command (generate, convert, lufs ...) and the library entry points use these, so a mistake is one
message naming the option and what to change, before minutes of work rather than after.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import torch

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes [0, 2**64)


def check_output_path(path: str | os.PathLike, *, formats: Collection[str], what: str = "output",
                      inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Path:
    """Raise a ValueError unless a file can be written at `path`; return it as a Path (with ~ expanded).

    Checks, without writing anything: the extension is one of `formats`; `path` is not a folder; the
    nearest existing parent is a writable folder (missing folders are created on write); `path` is not one
    of `inputs` (the files the same command reads).

    Args:
        path: the file to be written.
        formats: accepted extensions, lower case with the dot (e.g. (".wav", ".flac")).
        what: how errors name the path (e.g. "-o", "--plot").
        inputs: the files this command reads, by description (e.g. {"the input video": path}); writing over
            one of them is refused.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in formats:
        named = f"{suffix} files" if suffix else "a file without extension"
        raise ValueError(f"{what} {str(path)!r}: cannot write {named}; use one of {', '.join(sorted(formats))}")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give a file path, e.g. "
                         f"{str(path / ('out' + suffix))!r}")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(path)!r}: {str(parent)!r} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r}: the folder {str(parent)!r} is not writable; choose another path")
    for name, source in (inputs or {}).items():
        if source is not None and _same_file(path, Path(source).expanduser()):
            raise ValueError(f"{what} {str(path)!r} is {name}; write to another file (it is read while this one "
                             "is written)")
    return path


def check_input_file(path: str | os.PathLike, *, what: str) -> Path:
    """Raise FileNotFoundError / ValueError unless `path` is a readable file; return it (with ~ expanded).

    Args:
        path: the file.
        what: how errors name it (e.g. "--audio").
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} {str(path)!r} is not readable (check its permissions)")
    return path


def check_device(device: str | torch.device) -> torch.device:
    """The torch device `device` names, if this machine has it; else a ValueError saying what exists.

    Args:
        device: e.g. "cpu", "cuda", "cuda:1", "mps".
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device {str(device)!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: this machine has no usable CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                             f"cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "meta"):
        raise ValueError(f"device {str(device)!r}: only cpu, cuda and mps devices are supported")
    return dev


def check_seed(seed: int, *, batch_size: int = 1) -> int:
    """Raise a ValueError unless items 0 .. batch_size - 1 can be seeded with seed + i.

    Args:
        seed: the seed of item 0.
        batch_size: number of items (item i uses seed + i).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    top = MAX_SEED - (batch_size - 1)
    if not 0 <= seed <= top:
        raise ValueError(f"seed must be from 0 to {top} (item i of the batch uses seed + i), got {seed}")
    return seed


def check_finite(value: float, *, what: str) -> float:
    """`value` as a float, or a ValueError naming `what` when it is NaN or infinite."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()
