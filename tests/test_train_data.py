"""Training data: manifest checks, `data pack` shards (WebDataset format), `data cache`, crop data sets."""

from __future__ import annotations

import json

import pytest
import torch
from _train_data import CLIP_SECONDS

from triergon.train.data.cache import CacheIndex
from triergon.train.data.datasets import AudioCrops, FeatureCrops, LatentCrops
from triergon.train.data.manifest import ManifestError, read_manifest
from triergon.train.data.shards import ShardIndex
from triergon.train.sampler import SampleRef


def test_pack_writes_shards_and_reports_skipped_clips(train_data):
    report = train_data["report"]
    assert report.written == len(CLIP_SECONDS) and len(report.shards) == 2  # 3 clips per shard
    assert report.skipped == [("missing", f"video not found: {train_data['manifest'].parent / 'missing.mp4'}")]
    skipped = (train_data["shards"] / "skipped.jsonl").read_text().splitlines()
    assert [json.loads(s)["id"] for s in skipped] == ["missing"]
    index = ShardIndex(train_data["shards"])
    meta = index.meta(1)
    assert meta["seconds"] == pytest.approx(CLIP_SECONDS[1]) and meta["fps"] == 6.0
    frames = index.array(1, "frames.npy")
    assert frames.shape == (6 * CLIP_SECONDS[1], 32, 48, 3) and frames.dtype.name == "uint8"
    assert index.array(1, "vframes.npy").shape[0] == 8
    assert index.read(1, "txt").decode() == "tone number 1"


def test_shards_read_with_webdataset(train_data):
    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(sorted(str(p) for p in train_data["shards"].glob("*.tar")), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ShardIndex(train_data["shards"]).keys
    assert set(samples[0]) >= {"flac", "frames.npy", "vframes.npy", "txt", "json"}


def test_cache_holds_latents_embeddings_curves_and_features(train_data):
    cache = CacheIndex(train_data["cache"])
    assert len(cache) == len(CLIP_SECONDS)
    item = cache.item(1)
    frames = -(-CLIP_SECONDS[1] * 44100 // 2048)
    assert item["latent_mean"].shape == item["latent_std"].shape == (16, frames)
    assert item["lufs"].shape == (2, 6 * CLIP_SECONDS[1])
    assert {k: tuple(item[k].shape) for k in ("text", "audio", "video")} == dict.fromkeys(("text", "audio", "video"),
                                                                                           (1, 64))
    assert item["dinov2"].shape == (6 * CLIP_SECONDS[1], 32)
    # the right channel is a steady tone at 0.2 amplitude: about -17 LUFS in every window
    assert item["lufs"][1, 1:].sub(-17.0).abs().max() < 1.0


def test_latent_crops_are_seeded_per_sample_and_padded_with_masks(train_data):
    data = LatentCrops(train_data["cache"], crop_seconds=1.5, seed=0, latent_rate=44100 / 2048)
    long_clip, short_clip = data[SampleRef(1, 0, 1.0)], data[SampleRef(0, 0, 1.0)]
    assert long_clip["latents"].shape == (16, 33) and bool(long_clip["mask"].all())
    assert short_clip["mask"].sum() == 22 and short_clip["latents"][:, 22:].abs().sum() == 0
    assert short_clip["lufs"].shape == (2, 9) and float(short_clip["seconds_start"]) == 0.0
    assert float(long_clip["seconds_total"]) == pytest.approx(2.0)
    again = data[SampleRef(1, 0, 1.0)]
    assert torch.equal(again["latents"], long_clip["latents"])
    other_epoch = [data[SampleRef(1, e, 1.0)]["latents"] for e in range(1, 4)]
    assert any(not torch.equal(x, long_clip["latents"]) for x in other_epoch)


def test_audio_and_feature_crops(train_data):
    audio = AudioCrops(train_data["shards"], crop_seconds=0.5, seed=0, multiple=2048)
    item = audio[SampleRef(1, 0, 1.0)]
    assert item["audio"].shape == (2, 22528) and bool(item["mask"].all())
    start = round(float(item["seconds_start"]) * 44100)
    t = (start + torch.arange(22528)) / 44100
    assert torch.allclose(item["audio"][1], 0.2 * torch.sin(2 * torch.pi * 330 * t), atol=2e-3)
    feats = FeatureCrops(train_data["cache"], crop_frames=9, seed=0)[SampleRef(0, 0, 1.0)]
    assert feats["features"].shape == (9, 32) and int(feats["mask"].sum()) == 6


def test_manifest_errors_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: `caption` must be a non-empty string"):
        read_manifest(path)
    path.write_text('{"video": "a.mp4", "caption": "x", "fps": 3}\n')
    with pytest.raises(ManifestError, match=r"unknown field\(s\) \['fps'\]"):
        read_manifest(path)
    path.write_text('{"video": "a.mp4", "caption": "x", "split": "test"}\n\n{"video": "/v/b.mp4", "caption": "y"}\n')
    clips = read_manifest(path, split="train")
    assert [(c.id, str(c.video), c.split) for c in clips] == [("00000003", "/v/b.mp4", "train")]
