"""`TRIERGON_MODEL`: the Tri-Ergon model with its encoders, as the loader node builds it, under model management.

The DiT (with the conditioner), the VAE, the LanguageBind towers, DINOv2 and T_LUFS are managed separately, so
each is on the GPU only while a node needs it (ComfyUI moves the others off when room is needed). Nothing is
downloaded: a checkpoint is a file in `models/triergon/`, encoders are folders under `models/triergon/languagebind/`
and `models/triergon/dinov2/`, T_LUFS weights files under `models/triergon/lufs_predictor/`; the demo model, its
encoders, DINOv2 and T_LUFS ship inside the pack (`weights/demo/`, the `SHIPPED` choices).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..triergon_core.checkpoint import load_checkpoint
from ..triergon_core.demo import DemoFiles, warn_if_untrained
from ..triergon_core.encoders import build_encoders
from ..triergon_core.model import TriErgon, build_model
from ..triergon_core.presets import PRESETS
from .host import Managed, auto_dtype, find_model, load, offload_device, plain_device

logger = logging.getLogger(__name__)

RANDOM = " (random weights)"
PRESET_CHOICES = [f"preset: {name}{RANDOM}" for name in PRESETS]
SHIPPED = "demo (shipped with the pack)"  # weights/demo/: the checkpoint, its towers, DINOv2 or T_LUFS
DEFAULT_CHECKPOINT = SHIPPED
NONE = "none"
TINY_RANDOM = "tiny" + RANDOM
PRECISIONS = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class TriErgonModel:
    """What flows along a `TRIERGON_MODEL` link. Nodes read it and never change it."""

    model: TriErgon
    name: str
    random_weights: bool
    encoders: Any = None  # ConditionEncoders or None (then the preset's own, if any)
    dinov2: Any = None  # FrameFeatures or None
    predictor: Any = None  # LufsPredictor or None
    managed: dict[str, Managed] = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    def use(self, *parts: str) -> torch.device:
        """Load `parts` ("dit", "vae", "encoders", "lufs") onto the compute device; returns the device."""
        chosen = [m for part in parts for key, m in self.managed.items() if key == part or key.startswith(part + ":")]
        return load(chosen)

    def manage_encoders(self) -> None:
        """Put the condition encoders' towers under management (towers load lazily, so this runs after use)."""
        for kind, tower in getattr(self.encoders, "_towers", {}).items():
            key = f"encoders:{kind}"
            if key not in self.managed:
                self.managed[key] = Managed(tower.model, name=f"LanguageBind {kind}")

    def __repr__(self) -> str:
        extra = ", random weights" if self.random_weights else ""
        return f"TriErgonModel({self.name}{extra})"


def load_model(checkpoint: str, precision: str = "auto", languagebind: str = NONE, dinov2: str = NONE,
               lufs_predictor: str = NONE) -> TriErgonModel:
    """Build a `TriErgonModel` from the loader node's choices (see the node's tooltips)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = offload_device()  # models wait off the GPU; `TriErgonModel.use` loads what a node needs
    if checkpoint.startswith("preset: "):
        preset = checkpoint.removeprefix("preset: ").removesuffix(RANDOM)
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        logger.warning("Tri-Ergon %r has random weights: the sound is noise-like until trained weights are loaded",
                       preset)
        model, name, random_weights = build_model(preset, seed=0), preset, True
    else:
        path = DemoFiles().check().model if checkpoint == SHIPPED else find_model(checkpoint)
        random_weights = warn_if_untrained(path)
        model, name = load_checkpoint(path, device="cpu"), "demo" if checkpoint == SHIPPED else path.name
        if checkpoint == SHIPPED and languagebind == NONE:
            languagebind = SHIPPED  # the towers the demo model was trained with
    dtype = PRECISIONS[precision] or auto_dtype(_compute_device())
    # The VAE stays in float32 under "auto": its decoder's large activations overflow in fp16.
    model.dit.to(dtype)
    model.conditioner.to(dtype)
    if PRECISIONS[precision] is not None:
        model.vae.to(dtype)
    bundle = TriErgonModel(model=model.to(device), name=name, random_weights=random_weights)
    bundle.encoders = _encoders(model, languagebind, device)
    bundle.dinov2, bundle.predictor = _lufs_models(dinov2, lufs_predictor, device)
    bundle.managed = {"dit": Managed(model.dit, name="Tri-Ergon DiT"),
                      "dit:conditioner": Managed(model.conditioner, name="Tri-Ergon conditioner"),
                      "vae": Managed(model.vae, name="Tri-Ergon VAE")}
    if bundle.dinov2 is not None:
        bundle.managed["lufs:dinov2"] = Managed(bundle.dinov2, name="DINOv2")
    if bundle.predictor is not None:
        bundle.managed["lufs:predictor"] = Managed(bundle.predictor, name="T_LUFS")
    bundle.manage_encoders()
    return bundle


def _compute_device() -> torch.device:
    from .host import comfy

    mm = comfy("comfy.model_management")
    return mm.get_torch_device() if mm is not None else plain_device()


def _encoders(model: TriErgon, languagebind: str, device: torch.device) -> Any:
    if languagebind == NONE:
        return build_encoders(model.config.conditioning)  # the tiny preset's own towers; None for others
    from ..triergon_core.languagebind import load_languagebind

    folder = DemoFiles().languagebind if languagebind == SHIPPED else find_model(languagebind, "languagebind",
                                                                                 folder=True)
    encoders = load_languagebind(folder, device=device)
    if encoders.embed_dim != model.config.conditioning.embed_dim:
        raise ValueError(f"the LanguageBind towers give {encoders.embed_dim}-d embeddings but {model.config.name!r} "
                         f"takes {model.config.conditioning.embed_dim}-d ones: choose the towers it was trained with")
    return encoders


def _lufs_models(dinov2: str, predictor: str, device: torch.device) -> tuple[Any, Any]:
    from ..triergon_core.lufs_predictor import (
        LUFS_PREDICTOR_PRESETS,
        TINY_DINOV2,
        LufsPredictor,
        load_dinov2,
        load_predictor,
        random_dinov2,
    )

    net = None
    if predictor == TINY_RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = LufsPredictor(config=LUFS_PREDICTOR_PRESETS["tiny"]).to(device).eval()
    elif predictor != NONE:
        path = DemoFiles().predictor if predictor == SHIPPED else find_model(predictor, "lufs_predictor")
        warn_if_untrained(path, "T_LUFS")
        net = load_predictor(path, device=device)
    pooling = net.config.frame_pooling if net is not None else "cls"  # the frame features T_LUFS reads
    features = None
    if dinov2 == TINY_RANDOM:
        features = random_dinov2(seed=0, pooling=pooling, **TINY_DINOV2).to(device)
    elif dinov2 != NONE:
        folder = DemoFiles().dinov2 if dinov2 == SHIPPED else find_model(dinov2, "dinov2", folder=True)
        features = load_dinov2(folder, device=device, pooling=pooling)
    return features, net
