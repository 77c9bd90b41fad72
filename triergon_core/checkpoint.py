"""Checkpoints: safetensors with the model config in the metadata.

Loading checks every key and shape against the model the config (or the given preset) builds and refuses a
checkpoint that does not fit, listing what is missing, unexpected and mis-shaped. Pickled `.ckpt` / `.pt`
files are only ever read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Set
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._fs import atomic_write_path
from .config import ModelConfig
from .model import COMPONENTS, TriErgon, build_model, resolve_config

logger = logging.getLogger(__name__)

FORMAT = "triergon"
FORMAT_VERSION = "1"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_LIST_LIMIT = 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def save_checkpoint(model: TriErgon, path: str | os.PathLike, *,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's weights and config to a safetensors file (atomically: temp file, then rename).

    Args:
        model: the model to save.
        path: destination `.safetensors` file; parent folders are created.
        metadata: extra string metadata to store (e.g. where the weights came from).
    """
    meta = {**(metadata or {}), "format": FORMAT, "format_version": FORMAT_VERSION,
            "config": model.config.to_json()}
    return write_module(model, path, metadata=meta)


def write_module(module: torch.nn.Module, path: str | os.PathLike, *, metadata: Mapping[str, str]) -> Path:
    """A module's state dict as a safetensors file with string `metadata`, written atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_write_path(path) as tmp:
        save_file(state, tmp, metadata=dict(metadata))
    return Path(path)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and metadata from a safetensors file, or tensors from a pickled checkpoint.

    A pickled file is read with `weights_only=True` (no code runs); a `state_dict` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix in PICKLE_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path} could not be read as a weights-only torch checkpoint: {e}") from e
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} holds no state dict of tensors")
        return dict(obj), {}
    try:
        state = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    return state, metadata


def check_state_dict(expected: Mapping[str, torch.Size | tuple[int, ...]],
                     state: Mapping[str, torch.Tensor], *, what: str = "checkpoint",
                     may_miss: Set[str] = frozenset()) -> None:
    """Raise a CheckpointError listing missing (beyond `may_miss`), unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(state) - set(may_miss))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: {tuple(state[k].shape)} in the {what}, {tuple(expected[k])} expected"
        for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k])
    )
    if not (missing or unexpected or misshaped):
        return
    parts = [f"the {what} does not fit the model:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = "\n    ".join(items[:_LIST_LIMIT])
            more = f"\n    ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
            parts.append(f"  {len(items)} {title} key(s):\n    {shown}{more}")
    raise CheckpointError("\n".join(parts))


def checkpoint_config(metadata: Mapping[str, str]) -> ModelConfig | None:
    text = metadata.get("config")
    return ModelConfig.from_json(text) if text else None


def load_checkpoint(path: str | os.PathLike, *, preset: str | ModelConfig | None = None,
                    device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> TriErgon:
    """Load a Tri-Ergon checkpoint into a new model.

    Args:
        path: a `.safetensors` file written by `save_checkpoint` (or `triergon convert`), or a pickled
            state dict (`.ckpt`, read weights-only).
        preset: the preset (or config) the weights must fit; default: the config stored in the file.
        device: where the model goes.
        dtype: cast floating-point weights to this dtype (default: as stored).
    """
    state, metadata = read_state_dict(path)
    stored = checkpoint_config(metadata)
    if preset is None and stored is None:
        raise CheckpointError(f"{path} stores no model config; pass the preset it was made for")
    config = resolve_config(preset) if preset is not None else stored
    assert config is not None
    if stored is not None and preset is not None and stored != config:
        logger.info("checkpoint %s was saved as %r, loading it as %r", path, stored.name, config.name)
    model, _ = assemble_model(config, state, what=f"checkpoint {path}")
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def assemble_model(config: ModelConfig, state: Mapping[str, torch.Tensor], *, partial: bool = False,
                   allowed_missing: Set[str] = frozenset(), seed: int = 0,
                   what: str = "checkpoint") -> tuple[TriErgon, list[str]]:
    """Build a model of `config` holding the tensors of `state` (no second copy of the weights is made).

    Every key and shape must fit, except that with `partial` a component (vae / dit / conditioner) may be
    absent altogether, and keys in `allowed_missing` may be missing. What is missing is initialised fresh
    (seeded) and returned by name.
    """
    model = build_model(config, device="meta")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    present = {k.split(".")[0] for k in state}
    may_miss = set(allowed_missing) | {k for k in expected if partial and k.split(".")[0] not in present}
    check_state_dict(expected, state, what=what, may_miss=may_miss)
    new = sorted(set(expected) - set(state))
    for name, make in COMPONENTS.items():
        prefix = name + "."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if any(k.startswith(prefix) for k in new):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh = make(config)
            fresh.load_state_dict(part, strict=False)  # keys and shapes were checked above
            model.add_module(name, fresh)
        else:
            getattr(model, name).load_state_dict(part, strict=True, assign=True)
    return model.eval(), new
