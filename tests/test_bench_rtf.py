"""The real-time-factor benchmark: a smoke run on the tiny preset (asserts no time) and its FLOP count."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import triergon
from triergon.kernels.attention import attention_reference
from triergon.triergon_core import dit as dit_module
from triergon.triergon_core.cli import main
from triergon.triergon_core.config import DiTConfig
from triergon.triergon_core.dit import DiT
from triergon.triergon_core.rtf import dit_flops, time_generation


@pytest.mark.parametrize("config", [
    triergon.get_preset("tiny").dit,
    DiTConfig(io_channels=8, embed_dim=128, depth=3, num_heads=4, cond_token_dim=64, global_cond_dim=96,
              project_cond_tokens=True),
], ids=["tiny", "projected-tokens"])
def test_dit_flops_equal_the_counted_matmuls(config, monkeypatch):
    # attention through its einsum reference, so that the counter sees its two products as well
    monkeypatch.setattr(dit_module, "attention", lambda q, k, v, key_padding_mask=None: attention_reference(q, k, v))
    dit = DiT(config=config).eval()
    args = (torch.randn(2, config.io_channels, 37), torch.rand(2), torch.randn(2, 8, config.cond_token_dim),
            torch.randn(2, config.global_cond_dim))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        dit(*args)
    assert dit_flops(config, frames=37, tokens=8, batch=2) == counter.get_total_flops()


def test_dit_flops_of_the_large_preset_match_the_published_estimate():
    # ~2.95 TFLOP per row of a triergon-l forward at 60 s (1292 frames), as the speed target's arithmetic says
    flops = dit_flops(triergon.get_preset("triergon-l").dit, frames=1292, tokens=8, batch=1)
    assert 2.8e12 < flops < 3.0e12


@pytest.mark.parametrize("variant", ["reference", "cached"])
def test_time_generation_smoke(variant):
    model = triergon.build_model("tiny", seed=0)
    # the condition encoders (timed apart) only once: building the tiny towers imports transformers
    timing = time_generation(model, seconds=0.5, steps=2, variant=variant, text="rain" if variant == "cached" else None)
    assert timing.variant == variant and timing.steps == 2 and timing.dtype == "float32"
    assert min(timing.conditions_s, timing.sampling_s, timing.decode_s, timing.cpu_s) > 0
    assert (timing.encoders_s > 0) == (variant == "cached")
    assert timing.wall_s == pytest.approx(timing.conditions_s + timing.sampling_s + timing.decode_s)
    assert sum(timing.shares().values()) == pytest.approx(1.0)
    assert timing.rtf == pytest.approx(timing.wall_s / 0.5)
    frames = model.config.sequence.latent_frames(0.5)
    assert timing.dit_flops == 2 * dit_flops(model.config.dit, frames=frames, tokens=8, batch=2)
    assert timing.peak_memory_bytes > 0 and timing.dit_tflops > 0


def test_bench_cli(tmp_path, capsys):
    out = tmp_path / "rtf.json"
    assert main(["bench", "--seconds", "0.5", "--steps", "2", "--threads", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| tiny | 0.5 | 2 | dpmpp-2m | reference |" in table and "| cached |" in table
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["reference", "cached"] and all(r["rtf"] > 0 for r in rows)
    assert main(["bench", "--seconds", "99", "--steps", "1"]) == 2  # beyond the tiny preset's 60 s window
