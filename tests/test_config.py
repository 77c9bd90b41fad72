"""Configs, presets and sequence arithmetic."""

from __future__ import annotations

import dataclasses

import pytest

from triergon.triergon_core.config import DiTConfig, ModelConfig, SequenceConfig, VAEConfig
from triergon.triergon_core.model import parameter_counts
from triergon.triergon_core.presets import PRESETS, get_preset


def test_preset_table():
    assert set(PRESETS) == {"tiny", "triergon-s", "triergon-l", "sao-1.0", "demo"}
    s, large, sao = get_preset("triergon-s"), get_preset("triergon-l"), get_preset("sao-1.0")
    assert (s.dit.depth, s.dit.num_heads, s.dit.embed_dim, s.sequence.max_seconds) == (20, 24, 1536, 10.0)
    assert (large.dit.depth, large.dit.num_heads, large.dit.embed_dim, large.sequence.max_seconds) == (
        24, 24, 1536, 60.0)
    assert large.dit.head_dim == 64 and sao.sequence.max_seconds == 47.0
    for config in (s, large, sao):
        assert config.vae == VAEConfig()  # SAO's Oobleck VAE everywhere
        assert config.vae.downsampling_ratio == 2048 and config.vae.latent_dim == 64
        assert config.conditioning.embed_dim == 768 and config.conditioning.num_tokens == 8


def test_demo_preset_keeps_every_lufs_frame():
    demo = get_preset("demo")
    assert demo.sequence.max_seconds == 10.0 and demo.vae.downsampling_ratio == 2048
    # DESIGN.md: 6 x max seconds <= tokens x embedding width, so no 1/6 s frame is averaged away
    c = demo.conditioning
    assert demo.sequence.max_lufs_frames == 60 <= c.tokens_per_embedding * c.embed_dim
    assert demo.dit.head_dim == 64 and demo.dit.project_cond_tokens


def test_paper_sample_sizes():
    # Supplementary table 2: sample sizes 442368 (S) and 2646016 (L) are whole latent windows.
    assert get_preset("triergon-s").sequence.max_latent_frames * 2048 == 442368
    assert get_preset("triergon-l").sequence.max_latent_frames * 2048 == 2646016


def test_sequence_arithmetic():
    seq = SequenceConfig(max_seconds=10.0)
    assert seq.num_samples(2.37) == 104517
    assert seq.latent_frames(2.37) == 52  # ceil(104517 / 2048)
    assert seq.latent_frames(1.0) == 22 and seq.latent_frames(10.0) == 216
    assert seq.lufs_frames(10.0) == 60 and seq.lufs_frames(2.37) == 15 and seq.max_lufs_frames == 60
    assert abs(seq.latent_rate - 21.533) < 1e-3
    seq.check_seconds(10.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            seq.check_seconds(bad)
    with pytest.raises(ValueError, match="window of 10 s"):
        seq.check_seconds(10.5)


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_json_round_trip(name):
    config = get_preset(name)
    assert ModelConfig.from_json(config.to_json()) == config


def test_config_rejects_unknown_and_inconsistent_fields():
    data = get_preset("tiny").to_dict()
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="unknown VAEConfig fields"):
        ModelConfig.from_dict({**data, "vae": {**data["vae"], "bogus": 3}})
    with pytest.raises(TypeError):
        VAEConfig(8)  # keyword-only
    with pytest.raises(ValueError, match="one entry per block"):
        VAEConfig(c_mults=(1, 2), strides=(2, 4, 8))
    with pytest.raises(ValueError, match="split into heads"):
        DiTConfig(embed_dim=100, num_heads=3)
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="io channels"):
        dataclasses.replace(tiny, dit=dataclasses.replace(tiny.dit, io_channels=8))
    with pytest.raises(ValueError, match="latent rate"):
        dataclasses.replace(tiny, sequence=SequenceConfig(max_seconds=5, downsampling_ratio=1024))
    with pytest.raises(KeyError, match="available: tiny"):
        get_preset("huge")


def test_parameter_counts_from_modules():
    counts = {name: parameter_counts(name) for name in PRESETS}
    print({name: f"{c['total']:,}" for name, c in counts.items()})
    assert counts["sao-1.0"]["vae"] == 156_112_514  # stable-audio-tools' count (paper: ~157 M)
    assert counts["triergon-s"]["vae"] == counts["triergon-l"]["vae"] == counts["sao-1.0"]["vae"]
    assert counts["tiny"]["total"] < 2_000_000
