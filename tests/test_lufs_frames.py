"""T_LUFS runs that train their DINOv2 (`model.dinov2`): the frame data matches the cached-feature path, a CPU run
trains both (DINOv2 at its own learning rate) and resumes exactly, the export writes T_LUFS and a DINOv2 folder
that predict as the run's model, and validation reads shards."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from _helpers import train_on_cpu
from safetensors import safe_open

from triergon.train.data.cache import CacheIndex
from triergon.train.data.datasets import FrameCurves
from triergon.train.export import export_run, load_run
from triergon.train.sampler import SampleRef
from triergon.train.trainers.lufs import FramesToLufs, LufsTrainer
from triergon.train.validate import validate_run
from triergon.triergon_core.conditioning import normalize_lufs
from triergon.triergon_core.lufs_predictor import load_dinov2, load_predictor, preprocess_frames


def _frames_data(shards, features, crop_frames=30, seed=0) -> FrameCurves:
    return FrameCurves(shards, crop_frames=crop_frames, seed=seed,
                       prepare=lambda x: preprocess_frames(x, resize=features.resize, crop=features.crop,
                                                           mean=features.mean, std=features.std))


def test_frame_data_gives_the_cached_features_and_curves(train_data, dinov2_dir):
    """Through the run's (here still frozen) DINOv2, each clip's frames give the features and curve that `triergon
    data cache` stored for it; past the clip the frames are zero and masked."""
    features = load_dinov2(dinov2_dir)
    data, cache = _frames_data(train_data["shards"], features), CacheIndex(train_data["cache"])
    assert len(data) == len(cache) == 5
    for i in range(len(data)):
        item, cached = data[SampleRef(index=i, epoch=0, weight=1.0)], cache.item(i)
        valid = int(item["mask"].sum())
        assert valid == min(cached["dinov2"].shape[0], cached["lufs"].shape[-1]) and valid < 30
        with torch.inference_mode():
            got = features.pooled(item["pixels"][:valid], "cls")
        torch.testing.assert_close(got, cached["dinov2"][:valid], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(item["lufs"][:, :valid], normalize_lufs(cached["lufs"][:, :valid]))
        assert not item["pixels"][valid:].any() and not item["lufs"][:, valid:].any()


def test_a_run_trains_dinov2_with_tlufs_resumes_exports_and_validates(train_data, dinov2_dir, tmp_path,
                                                                      monkeypatch):
    common = [f"data.path={train_data['shards']}", f"model.dinov2={dinov2_dir}", "data.batch_size=5",
              "data.crop_seconds=2", "run.steps=8", "run.save_every=4", "run.sample_every=0",
              "model.dinov2_lr_scale=0.5"]
    trainer = train_on_cpu("cpu-smoke-lufs", tmp_path / "run", common)
    part = trainer.parts["lufs"]
    assert isinstance(part.module, FramesToLufs)
    lrs = sorted(g["lr"] for g in part.optimizer.param_groups)
    assert len(lrs) == 2 and lrs[0] == pytest.approx(lrs[1] * 0.5)  # DINOv2 at half of T_LUFS's rate
    start = load_dinov2(dinov2_dir).model.state_dict()
    moved = [k for k, v in part.module.features.model.state_dict().items() if not torch.equal(v, start[k])]
    assert len(moved) > len(start) // 2, moved  # DINOv2 trained, not only T_LUFS

    # stopped by SIGTERM at step 4 and resumed: the same weights as the uninterrupted run
    loss, fired = LufsTrainer.loss, []

    def stop_at_4(self, part, batch, step, micro):
        if step == 4 and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(self, part, batch, step, micro)

    monkeypatch.setattr(LufsTrainer, "loss", stop_at_4)
    assert train_on_cpu("cpu-smoke-lufs", tmp_path / "split", common).step == 5
    monkeypatch.setattr(LufsTrainer, "loss", loss)
    assert train_on_cpu("cpu-smoke-lufs", tmp_path / "split", common).step == 8
    whole, split = load_run(tmp_path / "run")[0], load_run(tmp_path / "split")[0]
    for (k, a), b in zip(whole.state_dict().items(), split.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)

    # the export: T_LUFS and its DINOv2 folder, which predict as the run's (EMA) model
    out, config = export_run(tmp_path / "run", tmp_path / "export" / "lufs.safetensors")
    assert config.trainer == "lufs" and (tmp_path / "export" / "dinov2" / "config.json").is_file()
    exported_config = (tmp_path / "export" / "dinov2" / "config.json").read_text()
    assert json.loads(exported_config) == json.loads((dinov2_dir / "config.json").read_text())  # the start's config
    with safe_open(str(tmp_path / "export" / "dinov2" / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["trained_by"] == "triergon train (cpu-smoke-lufs, step 8, EMA)"
    predictor, features = load_predictor(out), load_dinov2(tmp_path / "export" / "dinov2")
    item = _frames_data(train_data["shards"], features)[SampleRef(index=1, epoch=0, weight=1.0)]
    valid = int(item["mask"].sum())
    with torch.inference_mode():
        expected = whole(item["pixels"][None, :valid])
        exported = predictor(features.pooled(item["pixels"][:valid], "cls")[None])
    torch.testing.assert_close(exported, expected, rtol=1e-5, atol=1e-6)

    rows = validate_run(tmp_path / "run", train_data["shards"], limit=3)
    assert [r["step"] for r in rows] == [4, 8] and all(r["clips"] == 3 and r["mae"] > 0 for r in rows)


def test_frame_run_refuses_a_dinov2_of_the_wrong_width_and_shards_without_one(train_data, tmp_path):
    """The demo's DINOv2 (64 wide) cannot feed the tiny T_LUFS (32-d features): said before any step; so is a shard
    folder given to a run without a DINOv2 to train."""
    from triergon.triergon_core.demo import write_demo_encoders

    folder = write_demo_encoders(tmp_path / "demo", languagebind=False).dinov2
    with pytest.raises(ValueError, match="32-d features but this DINOv2 gives 64-d"):
        train_on_cpu("cpu-smoke-lufs", tmp_path / "run", [f"data.path={train_data['shards']}",
                                                          f"model.dinov2={folder}"])
    with pytest.raises(ValueError, match=r"is a shard folder.*model\.dinov2=DIR"):  # shards without a DINOv2 to train
        train_on_cpu("cpu-smoke-lufs", tmp_path / "run2", [f"data.path={train_data['shards']}"])
