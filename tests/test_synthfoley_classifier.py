"""The SynthFoley scene classifier: training separates kinds, runs are reproducible, the shipped weights name the
scenes of freshly rendered clips, and FD / KL on its outputs order matching and mismatching sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triergon.triergon_core.audio_embedders import load_embedder
from triergon.triergon_core.checkpoint import CheckpointError
from triergon.triergon_core.metrics import frechet_distance, kl_divergence
from triergon.triergon_core.synthfoley import SCENE_KINDS, render_clip
from triergon.triergon_core.synthfoley.classifier import (
    SHIPPED_WEIGHTS,
    ClassifierConfig,
    LabelledAudio,
    kind_accuracy,
    load_classifier,
    read_split,
    train_classifier,
)
from triergon.triergon_core.synthfoley.dataset import write_dataset

TINY = ClassifierConfig(kinds=("ball", "rain"), channels=(8, 16))


def _clips(kinds, seeds, seconds: float = 1.0) -> list[LabelledAudio]:
    out = []
    for seed in seeds:
        for kind in kinds:
            clip = render_clip(seed=seed, seconds=seconds, width=32, height=32, kinds=[kind])
            out.append(LabelledAudio(torch.from_numpy(clip.audio), clip.sample_rate, (kind,)))
    return out


def test_tiny_training_separates_two_kinds(tmp_path):
    model = train_classifier(_clips(TINY.kinds, range(12)), tmp_path / "c.safetensors", config=TINY, steps=40,
                             batch_size=8)
    held_out = _clips(TINY.kinds, range(100, 105))
    assert kind_accuracy(model, held_out) == {"ball": 1.0, "rain": 1.0}
    loaded = load_classifier(tmp_path / "c.safetensors")
    assert loaded.config == TINY
    audio = torch.stack([c.audio for c in held_out])
    emb, probs = model.embed(audio, 44100)
    _, probs2 = loaded.embed(audio, 44100)
    assert emb.shape == (10, TINY.dim) and probs.shape == (10, 2)
    torch.testing.assert_close(probs2, probs)


def test_training_is_deterministic_from_the_seed():
    clips = _clips(TINY.kinds, range(3))
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    a, b, c = (train_classifier(clips, config=TINY, steps=5, batch_size=4, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads  # the caller's, kept
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.head.weight, c.head.weight)


def test_shipped_classifier_names_fresh_clips():
    model = load_embedder("synthfoley")  # the shipped weights
    assert SHIPPED_WEIGHTS.stat().st_size < 1_000_000
    assert model.labels == SCENE_KINDS
    clips = [render_clip(seed=10_000 + i, seconds=5, width=32, height=40, kinds=[k]) for i, k in enumerate(SCENE_KINDS)]
    both = render_clip(seed=20_000, seconds=5, width=32, height=40, kinds=["ball", "rain"])
    _, probs = model.embed(np.stack([c.audio for c in [*clips, both]]), 44100)
    assert (probs[:5] > 0.5).tolist() == np.eye(5, dtype=bool).tolist()
    assert (probs[5] > 0.5).tolist() == [k in ("ball", "rain") for k in SCENE_KINDS]


def test_fd_and_kl_on_classifier_outputs_rank_sets():
    model = load_classifier()
    balls = [render_clip(seed=s, seconds=2, width=32, height=32, kinds=["ball"]).audio for s in range(8)]
    others = [render_clip(seed=s + 50, seconds=2, width=32, height=32, kinds=["ball"]).audio for s in range(8)]
    rains = [render_clip(seed=s, seconds=2, width=32, height=32, kinds=["rain"]).audio for s in range(8)]
    (eb, pb), (eo, po), (er, pr) = (model.embed(np.stack(x), 44100) for x in (balls, others, rains))
    # measured: FD 16.6 between two sets of ball clips, 786 between ball and rain clips; KL 0.001 and 19.4
    assert frechet_distance(eb, eo) < 0.05 * frechet_distance(eb, er)
    assert kl_divergence(pb, pb) == pytest.approx(0.0, abs=1e-9)
    assert kl_divergence(pb, po) < 0.01
    assert kl_divergence(pb, pr) > 10


def test_read_split_and_bad_files(tmp_path):
    write_dataset(tmp_path / "set", clips=3, seconds=0.5, width=32, height=32, seed=1)
    test_clips = read_split(tmp_path / "set", "test")  # clip 0 is the test split
    assert len(test_clips) == 1 and test_clips[0].sample_rate == 44100 and test_clips[0].kinds
    with pytest.raises(ValueError, match="no clip in split"):
        read_split(tmp_path / "set", "validation-x")
    with pytest.raises(FileNotFoundError, match=r"manifest\.jsonl"):
        read_split(tmp_path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a SynthFoley classifier") as err:
        load_classifier(tmp_path / "other.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="kinds"):
        train_classifier(_clips(["lamp"], [0]), config=TINY, steps=1)
