"""Map-style training data sets over shards and caches: random crops, padding masks, per-sample seeds.

Each data set takes a `SampleRef` (index, epoch, weight) and draws its crop from
`sample_seed(seed, epoch, index)`, so a sample looks the same on any rank, in any worker and after a resume.
A crop carries `seconds_start` (its offset in the clip) and `seconds_total` (the clip's duration), as the
paper and Stable Audio condition on them; clips shorter than the crop are zero-padded and `mask` marks the
real part.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from ...triergon_core.audio import load_audio
from ...triergon_core.config import LUFS_RATE, SAMPLE_RATE
from ..sampler import SampleRef, sample_seed
from .cache import CacheIndex
from .shards import ShardIndex

MODALITIES = ("text", "audio", "video")


def _generator(seed: int, ref: SampleRef) -> torch.Generator:
    return torch.Generator().manual_seed(sample_seed(seed, ref.epoch, ref.index))


def _crop_start(total: int, crop: int, g: torch.Generator) -> int:
    return int(torch.randint(0, total - crop + 1, (1,), generator=g)) if total > crop else 0


def _fit(x: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """x[..., start:start + length], zero-padded at the end to `length`."""
    part = x[..., start:start + length]
    return F.pad(part, (0, length - part.shape[-1]))


def _mask(valid: int, length: int) -> torch.Tensor:
    return torch.arange(length) < valid


class AudioCrops(Dataset):
    """Audio crops [2, crop samples] from packed shards (the VAE trainer's data); the crop is rounded up to a
    whole number of `multiple` samples (the VAE's downsampling ratio)."""

    def __init__(self, shards: str | Path, *, crop_seconds: float, seed: int, multiple: int = 1) -> None:
        self.index = ShardIndex(shards)
        self.metas = [self.index.meta(i) for i in self.index]
        self.crop = math.ceil(round(crop_seconds * SAMPLE_RATE) / multiple) * multiple
        self.seed = seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, ref: SampleRef) -> dict[str, torch.Tensor]:
        g = _generator(self.seed, ref)
        seconds = self.metas[ref.index]["seconds"]
        start = _crop_start(round(seconds * SAMPLE_RATE), self.crop, g)
        audio = load_audio(self.index.read(ref.index, "flac"), offset=start / SAMPLE_RATE,
                           duration=self.crop / SAMPLE_RATE)
        valid = min(audio.shape[-1], self.crop)
        return {"audio": _fit(audio, 0, self.crop), "mask": _mask(valid, self.crop),
                "seconds_start": torch.tensor(start / SAMPLE_RATE), "seconds_total": torch.tensor(seconds),
                "weight": torch.tensor(ref.weight)}


class LatentCrops(Dataset):
    """Latent crops with their conditions from a cache (the DiT trainer's data).

    The latent is drawn from the cached posterior (mean + std * noise) with the sample's seed, or is its mean,
    and is divided by the model's `latent_scale`. Crops start at the latent frame nearest a LUFS window's start
    (within half a latent frame, 23 ms), and the LUFS curve is cut from that window on, normalised to [0, 1].
    """

    def __init__(self, cache: str | Path, *, crop_seconds: float, seed: int, latent_rate: float,
                 split: str | None = "train", sample_latents: bool = True, latent_scale: float = 1.0) -> None:
        self.cache = CacheIndex(cache, split=split)
        self.sample_latents, self.latent_scale = sample_latents, latent_scale
        self.crop = math.ceil(round(crop_seconds * latent_rate, 6))
        self.lufs_frames = math.ceil(round(crop_seconds * LUFS_RATE, 6))
        self.latent_rate, self.seed = latent_rate, seed

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, ref: SampleRef) -> dict[str, torch.Tensor]:
        from ...triergon_core.conditioning import normalize_lufs

        g = _generator(self.seed, ref)
        item = self.cache.item(ref.index)
        mean, std = item["latent_mean"], item["latent_std"]
        lufs_start, start = self._crop_starts(mean.shape[-1], g)
        noise = torch.randn(mean[:, start:start + self.crop].shape, generator=g)
        latent = mean[:, start:start + self.crop]
        if self.sample_latents:
            latent = latent + std[:, start:start + self.crop] * noise
        if self.latent_scale != 1:
            latent = latent / self.latent_scale
        seconds_start = start / self.latent_rate
        # padding reads as silence (-70 LUFS -> 0), which is what the padded latent decodes to
        out = {"latents": _fit(latent, 0, self.crop), "mask": _mask(latent.shape[-1], self.crop),
               "lufs": _fit(normalize_lufs(item["lufs"]), lufs_start, self.lufs_frames),
               "seconds_start": torch.tensor(seconds_start),
               "seconds_total": torch.tensor(self.cache.rows[ref.index]["seconds"]),
               "weight": torch.tensor(ref.weight)}
        for name in MODALITIES:
            if name in item:
                out[name] = item[name]
        return out

    def _crop_starts(self, frames: int, g: torch.Generator) -> tuple[int, int]:
        """(LUFS window, latent frame) where a crop starts: a random LUFS window whose nearest latent frame
        leaves a whole crop (the start of a clip shorter than one crop: 0, 0)."""
        last = frames - self.crop  # the last latent start that leaves a whole crop
        if last <= 0:
            return 0, 0
        windows = math.floor((last + 0.5) * LUFS_RATE / self.latent_rate)  # round(k * rate / 6) <= last
        k = int(torch.randint(0, windows + 1, (1,), generator=g))
        return k, min(round(k * self.latent_rate / LUFS_RATE), last)


class FeatureCrops(Dataset):
    """DINOv2 features [crop frames, feature_dim] at 6 fps with the normalised L/R curve (T_LUFS's data)."""

    def __init__(self, cache: str | Path, *, crop_frames: int, seed: int, split: str | None = "train") -> None:
        self.cache = CacheIndex(cache, split=split)
        self.crop, self.seed = crop_frames, seed

    def __len__(self) -> int:
        return len(self.cache)

    def feature_dim(self) -> int:
        """The size of the cached frame features (of the first clip)."""
        return self._features(self.cache.item(0) if len(self.cache) else {}).shape[-1]

    def _features(self, item: dict[str, torch.Tensor]) -> torch.Tensor:
        if "dinov2" not in item:
            raise ValueError(f"{self.cache.folder} has no DINOv2 features: build it with `triergon data cache "
                             "--dinov2 DIR`")
        return item["dinov2"]

    def __getitem__(self, ref: SampleRef) -> dict[str, torch.Tensor]:
        from ...triergon_core.conditioning import normalize_lufs

        item = self.cache.item(ref.index)
        feats, lufs = self._features(item).T, normalize_lufs(item["lufs"])
        frames = min(feats.shape[-1], lufs.shape[-1])
        start = _crop_start(frames, self.crop, _generator(self.seed, ref))
        valid = min(frames - start, self.crop)
        return {"features": _fit(feats[:, :frames], start, self.crop).T,
                "lufs": _fit(lufs[:, :frames], start, self.crop), "mask": _mask(valid, self.crop),
                "weight": torch.tensor(ref.weight)}


class FrameCurves(Dataset):
    """Frames of packed clips at 6 fps as DINOv2's processor prepares them (`prepare`: uint8 [T, H, W, 3] ->
    [T, 3, S, S]) with the normalised L/R curve measured on the clip's sound (T_LUFS's data when its DINOv2 trains
    with it): `pixels` [crop frames, 3, S, S], `lufs` [2, crop frames], `mask`. Frames are read from the shards at
    every step; each clip's curve is measured once and kept."""

    def __init__(self, shards: str | Path, *, crop_frames: int, seed: int, prepare) -> None:
        self.index = ShardIndex(shards)
        self.crop, self.seed, self.prepare = crop_frames, seed, prepare
        self._curves: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.index)

    def curve(self, index: int) -> torch.Tensor:
        """The clip's measured loudness [2, T] in LUFS at 6 frames/s (as `triergon data cache` measures it)."""
        from ...triergon_core.lufs_curve import LufsCurve

        if index not in self._curves:
            self._curves[index] = LufsCurve.measure(load_audio(self.index.read(index, "flac"))).values
        return self._curves[index]

    def __getitem__(self, ref: SampleRef) -> dict[str, torch.Tensor]:
        from ...triergon_core.conditioning import normalize_lufs

        frames = torch.from_numpy(self.index.array(ref.index, "frames.npy"))
        lufs = normalize_lufs(self.curve(ref.index))
        total = min(frames.shape[0], lufs.shape[-1])
        start = _crop_start(total, self.crop, _generator(self.seed, ref))
        valid = min(total - start, self.crop)
        pixels = self.prepare(frames[start:start + valid])
        return {"pixels": F.pad(pixels, (0, 0, 0, 0, 0, 0, 0, self.crop - valid)),
                "lufs": _fit(lufs[:, :total], start, self.crop), "mask": _mask(valid, self.crop),
                "weight": torch.tensor(ref.weight)}


class EncoderInputs(Dataset):
    """The condition encoders' inputs of each packed clip (the encoder trainer's data), prepared as LanguageBind's
    processors do: `video` [3, frames, size, size] from the clip's 8 LanguageBind frames, `audio` [3, mel bins,
    frames] from its whole sound (the reference-audio path), `input_ids` / `attention_mask` [77] from its caption.
    Deterministic per clip; with `keep` each clip is prepared once and kept in memory (the small towers' inputs:
    about 150 KB a clip), so later epochs only read memory."""

    def __init__(self, shards: str | Path, *, tokenize, video_frames: int, video_size: int, audio: dict,
                 keep: bool = True) -> None:
        self.index = ShardIndex(shards)
        self.tokenize, self.video_frames, self.video_size, self.audio = tokenize, video_frames, video_size, audio
        self.keep = keep
        self._kept: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def inputs(self, index: int) -> dict[str, torch.Tensor]:
        from ...triergon_core.languagebind_preprocess import preprocess_audio, preprocess_video

        if index in self._kept:
            return self._kept[index]
        frames = torch.from_numpy(self.index.array(index, "vframes.npy"))
        tokens = self.tokenize([self.index.read(index, "txt").decode("utf-8")])
        item = {"video": preprocess_video(frames, num_frames=self.video_frames, size=self.video_size),
                "audio": preprocess_audio(load_audio(self.index.read(index, "flac")), SAMPLE_RATE, **self.audio),
                "input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}
        if self.keep:
            self._kept[index] = item
        return item

    def __getitem__(self, ref: SampleRef) -> dict[str, torch.Tensor]:
        return {**self.inputs(ref.index), "weight": torch.tensor(ref.weight)}


def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return default_collate(batch)
