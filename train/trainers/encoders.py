"""The condition-encoder trainer: LanguageBind's video tower (with its text tower) and audio tower trained together
on packed clips with CLIP's symmetric InfoNCE loss between a clip's caption, frames and sound.

Beyond the paper, which takes the released LanguageBind towers frozen (LanguageBind itself was trained this way,
binding each modality to language). It is for towers that start from random weights, as the demo's tiny ones do:
random towers give embeddings that barely tell one scene from another (on SynthFoley, e_V's five scene kinds have
mean embeddings with cosine 0.996-1.000), so a DiT conditioned on them cannot know what it should sound like.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...triergon_core.languagebind import (
    LanguageBindEncoders,
    load_languagebind,
    tiny_random_towers,
    towers_from_folder,
)
from ...triergon_core.languagebind_towers import LanguageBindTower
from ...triergon_core.presets import get_preset
from ..config import TrainConfig
from ..data.datasets import EncoderInputs
from ..distributed import gather_with_grad
from ..trainer import Trainer


class EncoderTowers(nn.Module):
    """The towers an encoder run trains: `video` (LanguageBind's video checkpoint: vision and text) and `audio`,
    with the config.json dict of each (`configs`, by kind: what an export writes beside the weights)."""

    def __init__(self, video: LanguageBindTower, audio: LanguageBindTower, *, configs: dict[str, dict]) -> None:
        super().__init__()
        if not video.has_text:
            raise ValueError("the video tower must carry the text tower (e_L comes from the video checkpoint)")
        self.video, self.audio, self.configs = video, audio, configs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video: torch.Tensor,
                audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unnormalised projected features of each modality [B, D]."""
        return {"text": self.video.get_text_features(input_ids, attention_mask),
                "video": self.video.get_image_features(video), "audio": self.audio.get_image_features(audio)}


def initial_towers(config: TrainConfig) -> EncoderTowers:
    """The trainable towers an encoder run starts from: the LanguageBind folder `model.init`, else the tiny random
    towers of the preset's embedding width (`LanguageBindEncoders.tiny_random`)."""
    if config.model.init:
        towers = towers_from_folder(config.model.init)
    else:
        towers = tiny_random_towers(get_preset(config.model.preset).conditioning.embed_dim)
    module = EncoderTowers(towers["video"][1], towers["audio"][1],
                           configs={kind: cfg for kind, (cfg, _) in towers.items()}).float().requires_grad_(True)
    for tower in (module.video, module.audio):
        tower.logit_scale.requires_grad_(False)  # the loss's temperature is `encoder_loss.temperature`
    return module


def tokenizer_of(config: TrainConfig):
    """The tokenizer the towers read (the init folder's, else the tiny byte-level one)."""
    if config.model.init:
        return load_languagebind(config.model.init).tokenize
    return LanguageBindEncoders.tiny_random(embed_dim=get_preset(config.model.preset).conditioning.embed_dim).tokenize


def audio_settings(config) -> dict:
    """`preprocess_audio`'s settings of an audio tower's vision config (LanguageBind's processor's)."""
    return {"target_rate": int(config.audio_sample_rate), "num_mel_bins": int(config.num_mel_bins),
            "target_length": int(config.target_length), "audio_mean": float(config.audio_mean),
            "audio_std": float(config.audio_std)}


def encoder_inputs(shards, towers: EncoderTowers, config: TrainConfig, *, keep: bool = True) -> EncoderInputs:
    """The clips of a shard folder as `towers` read them (the run's tokenizer, its towers' frame and filter-bank
    sizes): the trainer's data, and validation's."""
    return EncoderInputs(shards, tokenize=tokenizer_of(config), video_frames=int(towers.video.vision_config.num_frames),
                         video_size=int(towers.video.vision_config.image_size),
                         audio=audio_settings(towers.audio.vision_config), keep=keep)


def pair_loss(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, real: torch.Tensor, *,
              gather: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE per sample [B] between features x and y [B, D] (sample i's pair is i; padding
    samples, `real` False, are no one's negatives), and whether each x retrieves its own y first [B].

    With `gather`, the negatives are every rank's samples (`gather_with_grad`): each rank scores its own rows
    against all ranks' columns, so the ranks' per-sample losses together are one process's over the global batch."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    if gather:
        (x_all, start), (y_all, _), (real_all, _) = (gather_with_grad(t) for t in (x, y, real))
    else:
        x_all, y_all, real_all, start = x, y, real, 0
    target = start + torch.arange(len(x), device=x.device)
    x_to_y = (scale * x @ y_all.T).masked_fill(~real_all[None, :], float("-inf"))
    y_to_x = (scale * y @ x_all.T).masked_fill(~real_all[None, :], float("-inf"))
    per_sample = (F.cross_entropy(x_to_y, target, reduction="none") +
                  F.cross_entropy(y_to_x, target, reduction="none")) / 2
    return per_sample.masked_fill(~real, 0.0), x_to_y.argmax(-1) == target


class EncoderTrainer(Trainer):
    PAIRS = (("text_video", "text", "video"), ("text_audio", "text", "audio"), ("video_audio", "video", "audio"))

    def build(self) -> None:
        self.add_part("encoders", initial_towers(self.config), lr=self.config.optim.lr)

    def dataset(self) -> EncoderInputs:
        return encoder_inputs(self.config.data.path, self.parts["encoders"].module, self.config)

    def loss(self, part: str, batch: dict[str, Any], step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.parts[part].net(batch["input_ids"], batch["attention_mask"], batch["video"], batch["audio"])
        real = batch["weight"] > 0
        settings = self.config.encoder_loss
        scale = torch.tensor(1 / settings.temperature, device=real.device)
        total = torch.zeros(len(real), device=real.device)
        logs = {}
        for name, a, b in self.PAIRS:
            weight = getattr(settings, name)
            if weight == 0:
                continue
            per_sample, hit = pair_loss(out[a], out[b], scale, real, gather=settings.gather_negatives)
            total = total + weight * per_sample
            logs[f"encoders/retrieval_{name}"] = float(hit[real].float().mean())  # top-1 among the negatives
        return self.weighted_mean(total, batch), logs
