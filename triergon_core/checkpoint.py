"""Checkpoints: safetensors with the model config in the metadata.

Loading checks every key and shape against the model the config (or the given preset) builds and refuses a
checkpoint that does not fit, listing what is missing, unexpected and mis-shaped. Pickled `.ckpt` / `.pt`
files are only ever read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter
from collections.abc import Mapping, Set
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._fs import atomic_write_path
from .checks import check_output_path
from .config import ModelConfig
from .model import COMPONENTS, TriErgon, build_model, resolve_config
from .sampling import PAPER_SAMPLING, SAMPLING_KEY, SamplingSettings

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
    if model.sampling != PAPER_SAMPLING:  # the weights' recommended sampling (see `TriErgon.sampling`)
        meta[SAMPLING_KEY] = model.sampling.to_metadata()
    return write_module(model, path, metadata=meta)


def write_module(module: torch.nn.Module, path: str | os.PathLike, *, metadata: Mapping[str, str]) -> Path:
    """A module's state dict as a safetensors file with string `metadata`, written atomically.

    The file is always safetensors, so `path` must end in `.safetensors` (a `.pt` name would promise a pickle).
    """
    check_output_path(path, formats=(".safetensors",), what="checkpoint")
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
        except pickle.UnpicklingError as e:
            # PyTorch's own message advises weights_only=False, i.e. running whatever code the file holds.
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors, which could run code when loaded, so it "
                "was not loaded (only weights-only pickles are read). If you trust its source, convert it once: "
                "load it in Python, keep its tensors and save them with safetensors.torch.save_file as a "
                ".safetensors file (for Stable Audio Open, `triergon convert --from-sao`)") from e
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path} could not be read as a weights-only torch checkpoint: {reason}") from e
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} holds no state dict of tensors")
        return dict(obj), {}
    try:
        state = load_tensors(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    return state, metadata


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, each in memory that starts on a 64-byte boundary.

    safetensors (0.8) hands out views into the file's buffer at offsets set by the header's length; BLAS kernels
    take other code paths (and round differently) on misaligned data, so without the copy of those tensors a
    model's outputs would depend on its file's metadata. Every weight file of the project is read through this."""
    return {k: v if v.data_ptr() % 64 == 0 else v.clone() for k, v in load_file(str(path)).items()}


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


def checkpoint_config_of(path: str | os.PathLike, *, preset: str | ModelConfig | None = None) -> ModelConfig:
    """The config `load_checkpoint(path, preset=preset)` builds, read without loading any tensor (a
    safetensors file's header); checks run before a model is built use it.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, or no config stored and no preset given.
    """
    path = _existing(path)
    if preset is not None:
        return resolve_config(preset)
    stored = checkpoint_config(_header_metadata(path))
    if stored is None:
        raise CheckpointError(f"{path} stores no model config; pass the preset it was made for")
    return stored


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _header_metadata(path: Path) -> Mapping[str, str]:
    """A safetensors file's metadata, read from its header (no tensor is loaded); a pickle has none."""
    if path.suffix in PICKLE_SUFFIXES:
        return {}
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def _sampling(metadata: Mapping[str, str], path) -> SamplingSettings:
    text = metadata.get(SAMPLING_KEY)
    if not text:
        return PAPER_SAMPLING
    try:
        return SamplingSettings.from_metadata(text)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its recommended sampling settings (metadata {SAMPLING_KEY!r}) are "
                              f"unusable: {e}") from e


def checkpoint_sampling_of(path: str | os.PathLike) -> SamplingSettings:
    """The sampling settings a checkpoint's weights are tuned for, read from its header (no tensor is loaded):
    those it stores (metadata `SAMPLING_KEY`), else the paper's. `load_checkpoint` puts them in `model.sampling`.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, or unusable settings stored.
    """
    path = _existing(path)
    return _sampling(_header_metadata(path), path)


def stored_dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating-point dtype most of `state`'s floating tensors have (float32 when there are none)."""
    counts = Counter(v.dtype for v in state.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def load_checkpoint(path: str | os.PathLike, *, preset: str | ModelConfig | None = None,
                    device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32) -> TriErgon:
    """Load a Tri-Ergon checkpoint into a new model.

    Args:
        path: a `.safetensors` file written by `save_checkpoint` (or `triergon convert`), or a pickled
            state dict (`.ckpt`, read weights-only).
        preset: the preset (or config) the weights must fit; default: the config stored in the file.
        device: where the model goes.
        dtype: the dtype of every floating-point weight (default float32, the dtype `generate` runs in); weights
            stored in another one (e.g. a float16 checkpoint) are cast, and a log line says so. None keeps the
            dtype most weights are stored in, for the whole model (a mixed file never gives a mixed model).
    """
    config = checkpoint_config_of(path, preset=preset)
    state, metadata = read_state_dict(path)
    stored = checkpoint_config(metadata)
    if stored is not None and stored != config:
        logger.info("checkpoint %s was saved as %r, loading it as %r", path, stored.name, config.name)
    model, _ = assemble_model(config, state, what=f"checkpoint {path}")
    model.sampling = _sampling(metadata, path)
    most = stored_dtype(state)
    mixed = {v.dtype for v in state.values() if v.is_floating_point()} - {most}
    target = most if dtype is None else dtype
    if target != most or mixed:
        logger.info("checkpoint %s stores %s weights%s: loaded as %s", path, _dtype_name(most),
                    f" (and some {', '.join(sorted(map(_dtype_name, mixed)))})" if mixed else "", _dtype_name(target))
    return model.to(device=device, dtype=target).eval()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
