"""Training data: manifest checks, `data pack` shards (WebDataset format), `data cache`, crop data sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _train_data import CLIP_SECONDS

from triergon.train.data.cache import CacheIndex, build_cache
from triergon.train.data.datasets import AudioCrops, FeatureCrops, LatentCrops
from triergon.train.data.manifest import ManifestError, read_manifest
from triergon.train.data.shards import ShardIndex
from triergon.train.sampler import SampleRef
from triergon.triergon_core.audio import load_audio
from triergon.triergon_core.model import build_model


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


def _other_vae():
    """A VAE of other weights than the one the session's cache was made with."""
    return build_model("tiny", seed=1).vae


def test_cache_with_embeddings_from_reencodes_only_the_latents(train_data, tmp_path):
    """After a new VAE: the embeddings and features are the earlier cache's, the latents the new VAE's."""
    old = CacheIndex(train_data["cache"])
    vae = _other_vae()
    build_cache(train_data["shards"], tmp_path / "new", vae=vae, identity={"vae": "seed 1"},
                embeddings_from=train_data["cache"])
    new = CacheIndex(tmp_path / "new")
    assert [r["key"] for r in new.rows] == [r["key"] for r in old.rows]
    assert new.identity["vae"] == "seed 1" and new.identity["embeddings_from"] == str(old.folder.resolve())
    for i in range(len(new)):
        a, b = old.item(i), new.item(i)
        for k in ("text", "audio", "video", "dinov2"):
            assert torch.equal(a[k], b[k]), k
        assert torch.equal(a["lufs"], b["lufs"])
        audio = load_audio(ShardIndex(train_data["shards"]).read(i, "flac"))
        with torch.no_grad():
            direct = vae.encode_distribution(audio[None]).mean[0]
        torch.testing.assert_close(b["latent_mean"], direct, rtol=0, atol=1e-6)
        assert not torch.allclose(a["latent_mean"], b["latent_mean"])


def test_cache_embeddings_from_refuses_encoders_and_other_shards(train_data, tmp_path):
    vae = _other_vae()
    with pytest.raises(ValueError, match="give no encoders"):
        build_cache(train_data["shards"], tmp_path / "a", vae=vae, features=object(),
                    embeddings_from=train_data["cache"])
    with pytest.raises(ValueError, match="another cache"):
        build_cache(train_data["shards"], train_data["cache"], vae=vae, embeddings_from=train_data["cache"])
    partial = tmp_path / "partial"
    (partial / "items").mkdir(parents=True)
    index = json.loads((Path(train_data["cache"]) / "index.json").read_text())
    index["items"] = index["items"][1:]
    (partial / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a cache of these shards: it lacks 1"):
        build_cache(train_data["shards"], tmp_path / "b", vae=vae, embeddings_from=partial)


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


def test_cli_data_cache_embeddings_from(train_data, tmp_path):
    from triergon.triergon_core.cli import main

    with pytest.raises(SystemExit, match="give no --languagebind, --dinov2 or --no-embeddings"):
        main(["data", "cache", str(train_data["shards"]), "-o", str(tmp_path / "x"), "--preset", "tiny",
              "--embeddings-from", str(train_data["cache"]), "--no-embeddings"])
    assert main(["data", "cache", str(train_data["shards"]), "-o", str(tmp_path / "new"), "--preset", "tiny",
                 "--seed", "1", "--embeddings-from", str(train_data["cache"]), "-q"]) == 0
    item = CacheIndex(tmp_path / "new").item(0)
    assert torch.equal(item["video"], CacheIndex(train_data["cache"]).item(0)["video"])


def test_cli_data_cache_frame_pooling_and_the_lufs_trainers_check(train_data, dinov2_dir, tmp_path):
    """`--frame-pooling cls+grid` caches 5 x 32-d features and says so in the index; a T_LUFS whose features do
    not match the cache's stops before training, naming both and the command that makes the right cache."""
    from _helpers import train_on_cpu

    from triergon.triergon_core.cli import main

    out = tmp_path / "grid"
    assert main(["data", "cache", str(train_data["shards"]), "-o", str(out), "--preset", "tiny", "--no-embeddings",
                 "--dinov2", str(dinov2_dir), "--frame-pooling", "cls+grid", "-q"]) == 0
    cache, cls = CacheIndex(out), CacheIndex(train_data["cache"]).item(0)["dinov2"]
    assert cache.identity["frame_pooling"] == "cls+grid"
    grid = cache.item(0)["dinov2"]
    assert grid.shape == (cls.shape[0], 160) and torch.allclose(grid[:, :32], cls, atol=1e-5)
    with pytest.raises(ValueError, match=r"holds 160-d frame features \('cls\+grid' pooling\) but this T_LUFS reads "
                                         r"32-d ones \('cls'\).*--frame-pooling cls"):
        train_on_cpu("cpu-smoke-lufs", tmp_path / "run", [f"data.path={out}", "run.steps=1"])
    bare = tmp_path / "bare"  # a cache without --dinov2: T_LUFS has nothing to read, and says how to make it
    assert main(["data", "cache", str(train_data["shards"]), "-o", str(bare), "--preset", "tiny", "--no-embeddings",
                 "-q"]) == 0
    with pytest.raises(ValueError, match=r"has no DINOv2 features: build it with `triergon data cache --dinov2 DIR`"):
        train_on_cpu("cpu-smoke-lufs", tmp_path / "run2", [f"data.path={bare}", "run.steps=1"])
