"""The T_LUFS trainer: MSE (or L1, `lufs_loss.kind`) between predicted and measured normalised L/R curves, from cached
DINOv2 features, or (`model.dinov2`, beyond the paper) from frames, with DINOv2 trained together with T_LUFS.

That is for a DINOv2 that has not learnt what in a scene makes sound, as the demo's random one: T_LUFS on its frozen
features predicted the test clips' curves to 3.46 LU, trained together with it to 3.12 (the demo model card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...triergon_core.lufs_curve import LufsCurve
from ...triergon_core.lufs_predictor import (
    LUFS_PREDICTOR_PRESETS,
    FrameFeatures,
    LufsPredictor,
    load_dinov2,
    load_predictor,
    preprocess_frames,
)
from ..data.datasets import FeatureCrops, FrameCurves
from ..samples import Sample
from ..trainer import Trainer


class FramesToLufs(nn.Module):
    """T_LUFS with the DINOv2 it reads, as one module (T_LUFS runs with `model.dinov2`): normalised frames
    [B, T, 3, S, S] -> normalised L/R curves [B, 2, T]."""

    def __init__(self, predictor: LufsPredictor, features: FrameFeatures) -> None:
        super().__init__()
        dim = features.feature_dim_for(predictor.config.frame_pooling)
        if dim != predictor.config.feature_dim:
            raise ValueError(f"T_LUFS reads {predictor.config.feature_dim}-d features but this DINOv2 gives {dim}-d "
                             f"ones ({predictor.config.frame_pooling!r} pooling)")
        self.predictor, self.features = predictor, features

    def forward(self, pixels: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t = pixels.shape[:2]
        feats = self.features.pooled(pixels.flatten(0, 1), self.predictor.config.frame_pooling)
        return self.predictor(feats.unflatten(0, (b, t)), padding_mask=padding_mask)


def initial_predictor(config) -> LufsPredictor:
    """The T_LUFS a run starts from: `model.init`'s weights, else the preset with seeded random weights."""
    name = config.model.preset
    if config.model.init:
        return load_predictor(config.model.init)
    if name not in LUFS_PREDICTOR_PRESETS:
        raise ValueError(f"unknown T_LUFS preset {name!r}; available: {', '.join(LUFS_PREDICTOR_PRESETS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        return LufsPredictor(config=LUFS_PREDICTOR_PRESETS[name])


def initial_module(config) -> LufsPredictor | FramesToLufs:
    """What a T_LUFS run trains: T_LUFS, or with `model.dinov2` T_LUFS and that DINOv2 (`FramesToLufs`)."""
    predictor = initial_predictor(config)
    if not config.model.dinov2:
        return predictor
    features = load_dinov2(config.model.dinov2, pooling=predictor.config.frame_pooling)
    features.model.requires_grad_(True)
    features.model.embeddings.mask_token.requires_grad_(False)  # only for masked-image training: never used here
    return FramesToLufs(predictor, features)


class LufsTrainer(Trainer):
    def build(self) -> None:
        model = initial_module(self.config)
        self.predictor_config = model.predictor.config if isinstance(model, FramesToLufs) else model.config
        self.add_part("lufs", model, lr=self.config.optim.lr,
                      lr_scales={"features.": self.config.model.dinov2_lr_scale})

    def dataset(self) -> FeatureCrops | FrameCurves:
        frames = round(self.config.data.crop_seconds * self.predictor_config.rate)
        if frames > self.predictor_config.max_frames:
            raise ValueError(f"data.crop_seconds gives {frames} frames, more than T_LUFS's "
                             f"{self.predictor_config.max_frames}")
        module = self.parts["lufs"].module
        if isinstance(module, FramesToLufs):
            f = module.features
            mean, std = f.mean.cpu(), f.std.cpu()
            return FrameCurves(self.config.data.path, crop_frames=frames, seed=self.config.run.seed,
                               prepare=lambda x: preprocess_frames(x, resize=f.resize, crop=f.crop, mean=mean, std=std))
        if any(Path(self.config.data.path).expanduser().glob("*.tar")):
            raise ValueError(f"{self.config.data.path} is a shard folder: T_LUFS alone reads a cache with DINOv2 "
                             "features (`triergon data cache --dinov2 DIR`); to train DINOv2 with it on the shards' "
                             "frames, give --set model.dinov2=DIR")
        data = FeatureCrops(self.config.data.path, crop_frames=frames, seed=self.config.run.seed,
                            split=self.config.data.split)
        pooling, dim = self.predictor_config.frame_pooling, self.predictor_config.feature_dim
        cached = data.cache.identity.get("frame_pooling", "cls")
        size = data.feature_dim()
        if cached != pooling or size != dim:
            raise ValueError(f"{self.config.data.path} holds {size}-d frame features ({cached!r} pooling) but this "
                             f"T_LUFS reads {dim}-d ones ({pooling!r}): cache them with `triergon data cache "
                             f"--dinov2 DIR --frame-pooling {pooling}` and the DINOv2 it was sized for")
        return data

    sample_part = "lufs"

    def sample_module(self) -> LufsPredictor | FramesToLufs:
        if self.config.model.dinov2:
            return FramesToLufs(LufsPredictor(config=self.predictor_config),
                                load_dinov2(self.config.model.dinov2, pooling=self.predictor_config.frame_pooling))
        return LufsPredictor(config=self.predictor_config)

    def sample(self, module: LufsPredictor | FramesToLufs, item: dict[str, Any]) -> Sample:
        """The EMA predictor's curve for the validation crop against the measured one."""
        valid = int(item["mask"][0].sum())
        inputs = item["pixels" if isinstance(module, FramesToLufs) else "features"][:1, :valid]
        pred = module(inputs)[0].float().clamp(0, 1)
        rate = self.predictor_config.rate
        return Sample(audio=None, target=LufsCurve.from_normalized(item["lufs"][0, :, :valid].float(), rate=rate),
                      measured=LufsCurve.from_normalized(pred, rate=rate), labels=("target", "predicted"))

    def loss(self, part: str, batch: dict[str, Any], step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["mask"]
        inputs = batch["pixels"] if "pixels" in batch else batch["features"]
        # T_LUFS's dropout draws from the global generator: seeded per (step, micro-batch), so a resumed run draws
        # what the uninterrupted one did
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.generator(step, micro, "dropout").initial_seed())
            pred = self.parts[part].net(inputs, padding_mask=~mask)
        per_sample = curve_loss(pred, batch["lufs"], mask, kind=self.config.lufs_loss.kind)
        return self.weighted_mean(per_sample, batch), {}


def curve_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, kind: str = "mse") -> torch.Tensor:
    """Per-sample loss [B] of normalised L/R curves [B, 2, T] over the frames where `mask` [B, T] is True:
    the mean squared ("mse") or absolute ("l1") error."""
    err = pred.float() - target.float()
    err = err.abs() if kind == "l1" else err ** 2
    m = mask[:, None].to(err.dtype)
    return (err * m).sum((1, 2)) / (2 * m.sum((1, 2))).clamp(min=1)
