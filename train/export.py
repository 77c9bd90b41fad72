"""`triergon train export RUN_DIR -o model.safetensors`: a run's EMA weights as a normal checkpoint.

DiT runs give a Tri-Ergon checkpoint (`generate` and the nodes load it) with the trained DiT and conditioner
and the VAE the run started from (`model.init`, or the seeded preset the cache was made with); VAE runs give a
Tri-Ergon checkpoint whose VAE is the trained one; T_LUFS runs give a T_LUFS checkpoint (`--lufs-predictor`),
and those that trained DINOv2 with it also that DINOv2's folder (`dinov2/` beside it); encoder runs give a
LanguageBind folder (`--languagebind`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..triergon_core.sampling import SamplingSettings
from .checkpointing import CheckpointManager, read_config
from .config import TrainConfig

logger = logging.getLogger(__name__)


def _weights(saved: dict, *, ema: bool) -> dict[str, torch.Tensor]:
    # the model state holds the buffers too (e.g. the DiT's LayerNorm beta); the EMA holds the parameters
    state = dict(saved["model"])
    if ema and saved.get("ema"):
        state.update(saved["ema"])
    return state


def load_run(run_dir: str | os.PathLike, *, ema: bool = True, checkpoint: str | os.PathLike | None = None):
    """The weights of a run's latest (or the given) checkpoint as a model, with the run's config and a line saying
    where they came from (for checkpoint metadata).

    DiT and VAE runs give a `TriErgon` (the trained parts, the rest as the run started: see the module doc),
    T_LUFS runs a `LufsPredictor` (a `FramesToLufs`, T_LUFS with its DINOv2, when the run trained DINOv2), encoder
    runs the `EncoderTowers` (the run's config in `run_config`); float32, eval.

    Args:
        run_dir: the run folder.
        ema: the EMA weights (default) rather than the raw ones.
        checkpoint: a checkpoint folder of the run (default: the latest).
    """
    path = Path(checkpoint) if checkpoint else CheckpointManager(run_dir, rank=0, world_size=1).latest()
    if path is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint to export")
    config = TrainConfig.from_dict(read_config(path))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    source = f"triergon train ({config.recipe}, step {state['step']}, {'EMA' if ema else 'raw'})"
    if config.trainer == "lufs":
        from dataclasses import replace

        from .trainers.lufs import initial_module

        # the architecture only (no model.init weights: the checkpoint holds them all)
        model = initial_module(replace(config, model=replace(config.model, init="")))
        model.load_state_dict({k: v.float() for k, v in _weights(state["parts"]["lufs"], ema=ema).items()})
        return model.float().eval().requires_grad_(False), config, source
    if config.trainer == "encoders":
        from .trainers.encoders import initial_towers

        model = initial_towers(config)
        model.load_state_dict({k: v.float() for k, v in _weights(state["parts"]["encoders"], ema=ema).items()})
        model.run_config = config
        return model.eval().requires_grad_(False), config, source
    from .trainers.dit import initial_model

    model = initial_model(config)
    if config.trainer == "dit":
        model.load_state_dict({**model.state_dict(), **_weights(state["parts"]["denoiser"], ema=ema)})
    else:
        model.vae.load_state_dict(_weights(state["parts"]["vae"], ema=ema))
    logger.info("read %s (step %d)", path, state["step"])
    return model.float().eval(), config, source


def save_encoders(towers, output: str | os.PathLike, *, config: TrainConfig, source: str) -> Path:
    """An encoder run's towers (`load_run`) as a LanguageBind folder (`load_languagebind` reads it; `trained_by`
    in each model.safetensors' metadata)."""
    from ..triergon_core.languagebind import save_towers

    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"an encoder run exports a LanguageBind folder: -o {output} is a file")
    parts = {"video": towers.video, "audio": towers.audio}
    return save_towers(out, {kind: (towers.configs[kind], parts[kind]) for kind in parts},
                       tokenizer_from=config.model.init or None, metadata={"trained": "true", "trained_by": source})


def save_lufs(model, output: str | os.PathLike, *, source: str) -> Path:
    """A T_LUFS run's model (`load_run`) as a T_LUFS file; a run that trained its DINOv2 (`model.dinov2`) also writes
    that DINOv2 as the folder `dinov2/` beside the file (the demo's layout; files already there are replaced), which
    is the DINOv2 to use with it. Returns the T_LUFS file."""
    from ..triergon_core.lufs_predictor import save_dinov2, save_predictor
    from .trainers.lufs import FramesToLufs

    output = Path(output).expanduser()
    if isinstance(model, FramesToLufs):
        folder = save_dinov2(model.features, output.parent / "dinov2", metadata={"trained": "true",
                                                                              "trained_by": source})
        logger.info("wrote its trained DINOv2 to %s", folder)
        model = model.predictor
    return save_predictor(model, output, metadata={"trained_by": source})


def export_run(run_dir: str | os.PathLike, output: str | os.PathLike, *, fp16: bool = False, ema: bool = True,
               checkpoint: str | os.PathLike | None = None,
               sampling: SamplingSettings | None = None) -> tuple[Path, TrainConfig]:
    """Write the weights of a run's latest (or the given) checkpoint to `output` (see `load_run`).

    Args:
        run_dir: the run folder.
        output: the `.safetensors` file to write (encoder runs: the LanguageBind folder).
        fp16: store floating-point weights in float16 (half the size).
        ema: export the EMA weights (default) rather than the raw ones.
        checkpoint: a checkpoint folder of the run (default: the latest).
        sampling: the sampling settings the weights are tuned for, stored in the file (`TriErgon.sampling`; a DiT
            or VAE run's model); None: the paper's.
    """
    model, config, source = load_run(run_dir, ema=ema, checkpoint=checkpoint)
    if sampling is not None:
        if config.trainer in ("lufs", "encoders"):
            raise ValueError(f"a {config.trainer} run has no sampling settings to store: leave out --cfg-scale")
        model.sampling = sampling
    if fp16:
        model = model.to(torch.float16)
    if config.trainer == "encoders":
        if fp16:
            raise ValueError("encoder towers are exported in float32 (they are small): leave out --fp16")
        save_encoders(model, output, config=config, source=source)
    elif config.trainer == "lufs":
        save_lufs(model, output, source=source)
    else:
        from ..triergon_core.checkpoint import save_checkpoint

        save_checkpoint(model, output, metadata={"trained_by": source})
    logger.info("exported %s to %s", source, output)
    return Path(output), config
