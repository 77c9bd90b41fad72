"""`triergon demo bundle`: the shipped demo folder (`triergon_core/demo.py`) from its training runs.

The Tri-Ergon checkpoint takes its DiT and conditioner from the DiT run's EMA (with the run's model options: its
`latent_scale`, the frame-aligned LUFS path), its VAE from the VAE run's EMA, or without a VAE run from the DiT
run's `model.init` (the VAE its cached latents came from); T_LUFS comes from the T_LUFS run's EMA; the LanguageBind
towers from the encoder run's EMA, or without one the seeded random towers; DINOv2 from a T_LUFS run that trained
it (`model.dinov2`), or the folder beside a T_LUFS file given as it is, else it is rebuilt (seeded). A part
whose run is not given gets seeded random weights of its preset, and the file says so in its metadata (`"trained":
"false"`, `"trained_parts"`): the placeholders shipped until trained weights exist. Weights are stored in float16
(the LanguageBind towers in float32).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open

from ..triergon_core._fs import atomic_write_path
from ..triergon_core.checkpoint import save_checkpoint
from ..triergon_core.demo import DemoFiles, is_trained, write_demo_encoders
from ..triergon_core.lufs_predictor import (
    LUFS_PREDICTOR_PRESETS,
    LufsPredictor,
    load_predictor,
    save_dinov2,
    save_predictor,
)
from ..triergon_core.model import build_model
from ..triergon_core.presets import get_preset
from ..triergon_core.sampling import PAPER_SAMPLING, SamplingSettings
from .export import load_run, save_encoders
from .trainers.lufs import FramesToLufs

logger = logging.getLogger(__name__)

PLACEHOLDER_SEED = 0


def _run_model(run_dir: str | os.PathLike, trainer: str, what: str):
    model, config, source = load_run(run_dir)
    if config.trainer != trainer:
        raise ValueError(f"{what} {run_dir} is a {config.trainer} run; a {trainer} run is expected")
    if config.model.preset != "demo" or (trainer in ("dit", "vae") and
                                         _architecture(model.config) != get_preset("demo")):
        raise ValueError(f"{what} {run_dir} trained preset {config.model.preset!r}; the demo bundle takes 'demo' runs")
    return model, config, source


def _folder_bytes(folder: Path) -> dict[str, bytes] | None:
    """The files of a DINOv2 folder (config.json, model.safetensors, preprocessor_config.json), or None."""
    names = ("config.json", "model.safetensors", "preprocessor_config.json")
    if not all((folder / n).is_file() for n in names):
        return None
    return {n: (folder / n).read_bytes() for n in names}


def _vae_source(path: str | os.PathLike) -> str:
    """", <where its VAE came from>" when the checkpoint's `trained_by` names it (a bundle's: "vae: ..."), else ""."""
    with safe_open(str(path), framework="pt") as f:
        entries = ((f.metadata() or {}).get("trained_by") or "").split("; ")
    named = [e.removeprefix("vae: ") for e in entries if e.startswith("vae: ")]
    return f", its VAE from {named[0]}" if named else ""


def _architecture(config):
    """The preset a model config is, less the options a DiT run may add (latent scale, frame-aligned LUFS)."""
    return dataclasses.replace(config, latent_scale=1.0).with_lufs_frame_aligned(False)


def bundle_demo(output: str | os.PathLike, *, vae: str | os.PathLike | None = None,
                dit: str | os.PathLike | None = None, lufs: str | os.PathLike | None = None,
                encoders: str | os.PathLike | None = None, sampling: SamplingSettings | None = None) -> DemoFiles:
    """Write the demo weights folder `output` (model, T_LUFS, encoders; MODEL_CARD.md is left as it is).

    Args:
        output: the folder (the repository's `weights/demo` to ship them).
        vae: the `synthfoley-vae` run folder; None: the DiT run's VAE (`model.init_vae`, else `model.init`) when
            that file holds a trained VAE, else a placeholder VAE.
        dit: the `synthfoley-dit` run folder; None: placeholder DiT and conditioner.
        lufs: the `synthfoley-lufs` (or `synthfoley-lufs-frames`: its DINOv2 becomes `dinov2/`) run folder, or a
            T_LUFS weights file (e.g. the shipped one, to keep it; its `trained_by` is kept, and the `dinov2/` folder
            beside it when there is one); None: placeholder T_LUFS.
        encoders: the `synthfoley-encoders` run folder (its EMA towers become `languagebind/`); None: the seeded
            random towers (`tiny_random(embed_dim=128)`). The DiT must have trained on embeddings of these towers
            (the cache made with their export).
        sampling: the sampling settings the model's weights are tuned for, stored in its file (`TriErgon.sampling`:
            the defaults of `triergon demo`, `generate` and the nodes' loader); None: the paper's.
    """
    # a T_LUFS file keeps the DINOv2 beside it (read first: it may be the output's own)
    kept_dinov2 = _folder_bytes(Path(lufs).parent / "dinov2") if lufs is not None and os.path.isfile(lufs) else None
    files = write_demo_encoders(output, languagebind=encoders is None, dinov2=not kept_dinov2)
    if kept_dinov2:
        for name, data in kept_dinov2.items():
            with atomic_write_path(files.dinov2 / name) as tmp:
                tmp.write_bytes(data)
    if encoders is not None:
        towers, config, source = _run_model(encoders, "encoders", "--encoders")
        save_encoders(towers, files.languagebind, config=config, source=source)
    sources, parts, dit_vae = [], [], None
    if dit is not None:
        trained, config, source = _run_model(dit, "dit", "--dit")
        model = build_model(trained.config, seed=PLACEHOLDER_SEED)
        model.dit.load_state_dict(trained.dit.state_dict())
        model.conditioner.load_state_dict(trained.conditioner.state_dict())
        dit_vae = trained.vae.state_dict()
        sources.append(f"dit, conditioner: {source}")
        parts += ["dit", "conditioner"]
        init_vae, key = (config.model.init_vae, "init_vae") if config.model.init_vae else (config.model.init, "init")
        if vae is None and init_vae and is_trained(init_vae, "vae"):
            model.vae.load_state_dict(dit_vae)
            sources.append(f"vae: the DiT run's model.{key} ({os.path.basename(init_vae)}{_vae_source(init_vae)})")
            parts.append("vae")
    else:
        model = build_model("demo", seed=PLACEHOLDER_SEED)
    if vae is not None:
        trained, _, source = _run_model(vae, "vae", "--vae")
        model.vae.load_state_dict(trained.vae.state_dict())
        sources.append(f"vae: {source}")
        parts.append("vae")
        # the latents depend on the encoder only: a decoder-only run (vae_loss.train_encoder=false) keeps them
        if dit_vae is not None and not all(torch.allclose(dit_vae[k], v, rtol=1e-3, atol=1e-4)
                                           for k, v in model.vae.state_dict().items() if k.startswith("encoder.")):
            logger.warning("the DiT run started from another VAE encoder than the VAE run's EMA (model.init): its "
                           "latents may not be this VAE's; export the VAE run and cache with that file")
    placeholder = f"placeholder: seeded random weights (seed {PLACEHOLDER_SEED})"
    missing = [f"{part}: {placeholder}" for part in ("vae", "dit") if part not in parts]
    meta = {"trained": "false" if missing else "true", "trained_parts": ",".join(parts) or "none",
            "trained_by": "; ".join(sources + missing) if sources else placeholder}
    model.sampling = sampling or PAPER_SAMPLING
    save_checkpoint(model.to(torch.float16), files.model, metadata=meta)
    if lufs is not None and os.path.isfile(lufs):  # T_LUFS weights as they are (e.g. the shipped ones)
        if not is_trained(lufs):
            raise ValueError(f"--lufs {lufs} holds placeholder weights: give a trained T_LUFS or its run")
        predictor = load_predictor(lufs)
        if predictor.config != LUFS_PREDICTOR_PRESETS["demo"]:
            raise ValueError(f"--lufs {lufs} is not a T_LUFS of preset 'demo'")
        with safe_open(str(lufs), framework="pt") as f:
            lufs_meta = {"trained": "true", "trained_by": (f.metadata() or {}).get("trained_by", os.fspath(lufs))}
    elif lufs is not None:
        predictor, _, source = _run_model(lufs, "lufs", "--lufs")
        if isinstance(predictor, FramesToLufs):  # DINOv2 trained with it: T_LUFS reads that one
            save_dinov2(predictor.features, files.dinov2, metadata={"trained": "true", "trained_by": source})
            predictor = predictor.predictor
        lufs_meta = {"trained": "true", "trained_by": source}
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PLACEHOLDER_SEED)
            predictor = LufsPredictor(config=LUFS_PREDICTOR_PRESETS["demo"])
        lufs_meta = {"trained": "false", "trained_by": placeholder}
    save_predictor(predictor.to(torch.float16), files.predictor, metadata=lufs_meta)
    logger.info("wrote the demo weights to %s (model: %s; T_LUFS: %s)", files.root, meta["trained_by"],
                lufs_meta["trained_by"])
    return files
