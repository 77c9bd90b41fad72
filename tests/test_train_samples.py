"""TensorBoard samples: each trainer writes, at `run.sample_every`, a LUFS-curve plot (and audio for the DiT
and the VAE) from its EMA copy on the fixed validation item, read back here from the event file; sampling
leaves the training itself unchanged."""

from __future__ import annotations

import pytest
import torch

from triergon.train.config import apply_overrides
from triergon.train.distributed import init_distributed
from triergon.train.recipes import get_recipe
from triergon.train.trainers import trainer_class


@pytest.fixture(scope="module")
def info():
    return init_distributed(device="cpu")


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _run(recipe: str, data, run_dir, info, *extra: str, steps: int = 2):
    config = apply_overrides(get_recipe(recipe), [f"data.path={data}", f"run.steps={steps}", "run.save_every=2",
                                                  "run.sample_every=1", "run.sample_steps=2", *extra])
    trainer = trainer_class(config.trainer)(config, info, run_dir)
    trainer.fit()
    return trainer


@pytest.mark.parametrize(("recipe", "data", "audio", "steps"), [("cpu-smoke", "cache", True, 2),
                                                                ("cpu-smoke-vae", "shards", True, 1),
                                                                ("cpu-smoke-lufs", "cache", False, 2)])
def test_samples_land_in_tensorboard(recipe, data, audio, steps, train_data, info, tmp_path):
    _run(recipe, train_data[data], tmp_path, info, steps=steps)
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert "sample/lufs" in tags["images"]
    assert [e.step for e in acc.Images("sample/lufs")] == list(range(1, steps + 1))
    png = acc.Images("sample/lufs")[-1]
    assert png.encoded_image_string[:4] == b"\x89PNG" and png.width > 200 and png.height > 100
    assert {"sample/lufs_mae_L", "sample/lufs_mae_R"} <= set(tags["scalars"])
    assert all(e.value >= 0 for e in acc.Scalars("sample/lufs_mae_L"))
    if audio:
        clip = acc.Audio("sample/audio")[-1]
        assert clip.content_type == "audio/wav" and clip.sample_rate == 44100
        assert clip.encoded_audio_string[:4] == b"RIFF" and clip.length_frames > 10000
        # stereo 16-bit PCM: the header's channel count
        assert int.from_bytes(clip.encoded_audio_string[22:24], "little") == 2
    else:
        assert "sample/audio" not in tags["audio"]


def test_sampling_leaves_training_unchanged(train_data, info, tmp_path):
    with_samples = _run("cpu-smoke", train_data["cache"], tmp_path / "a", info)
    without = _run("cpu-smoke", train_data["cache"], tmp_path / "b", info, "run.sample_every=0")
    a, b = with_samples.parts["denoiser"].module.state_dict(), without.parts["denoiser"].module.state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert not _events(tmp_path / "b").Tags()["images"]
