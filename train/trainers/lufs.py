"""The T_LUFS trainer: MSE (or L1, `lufs_loss.kind`) between predicted and measured normalised L/R curves, from cached
DINOv2 features."""

from __future__ import annotations

from typing import Any

import torch

from ...triergon_core.lufs_curve import LufsCurve
from ...triergon_core.lufs_predictor import LUFS_PREDICTOR_PRESETS, LufsPredictor, load_predictor
from ..data.datasets import FeatureCrops
from ..samples import Sample
from ..trainer import Trainer


class LufsTrainer(Trainer):
    def build(self) -> None:
        name = self.config.model.preset
        if self.config.model.init:
            model = load_predictor(self.config.model.init)
        elif name in LUFS_PREDICTOR_PRESETS:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.run.seed)
                model = LufsPredictor(config=LUFS_PREDICTOR_PRESETS[name])
        else:
            raise ValueError(f"unknown T_LUFS preset {name!r}; available: {', '.join(LUFS_PREDICTOR_PRESETS)}")
        self.predictor_config = model.config
        self.add_part("lufs", model, lr=self.config.optim.lr)

    def dataset(self) -> FeatureCrops:
        frames = round(self.config.data.crop_seconds * self.predictor_config.rate)
        if frames > self.predictor_config.max_frames:
            raise ValueError(f"data.crop_seconds gives {frames} frames, more than T_LUFS's "
                             f"{self.predictor_config.max_frames}")
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

    def sample_module(self) -> LufsPredictor:
        return LufsPredictor(config=self.predictor_config)

    def sample(self, module: LufsPredictor, item: dict[str, Any]) -> Sample:
        """The EMA predictor's curve for the validation crop against the measured one."""
        valid = int(item["mask"][0].sum())
        pred = module(item["features"][:1, :valid])[0].float().clamp(0, 1)
        rate = self.predictor_config.rate
        return Sample(audio=None, target=LufsCurve.from_normalized(item["lufs"][0, :, :valid].float(), rate=rate),
                      measured=LufsCurve.from_normalized(pred, rate=rate), labels=("target", "predicted"))

    def loss(self, part: str, batch: dict[str, Any], step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["mask"]
        pred = self.parts[part].net(batch["features"], padding_mask=~mask)
        per_sample = curve_loss(pred, batch["lufs"], mask, kind=self.config.lufs_loss.kind)
        return self.weighted_mean(per_sample, batch), {}


def curve_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, kind: str = "mse") -> torch.Tensor:
    """Per-sample loss [B] of normalised L/R curves [B, 2, T] over the frames where `mask` [B, T] is True:
    the mean squared ("mse") or absolute ("l1") error."""
    err = pred.float() - target.float()
    err = err.abs() if kind == "l1" else err ** 2
    m = mask[:, None].to(err.dtype)
    return (err * m).sum((1, 2)) / (2 * m.sum((1, 2))).clamp(min=1)
