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
from triergon.triergon_core.rtf import dit_flops, format_summary, time_generation
from triergon.triergon_core.sampling import COMPILE_BACKEND_ENV


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


def test_compiled_and_offload_variants(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")  # Dynamo's capture without inductor's minutes on a CPU
    out = tmp_path / "rtf.json"
    assert main(["bench", "--seconds", "0.5", "--steps", "2", "--threads", "1", "--variants", "cached", "compiled",
                 "offload", "--compile", "default", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compiled (default) 0.5 s: first (2-step) generation" in text
    assert "| compiled:default@eager |" in text and "| offload |" in text
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["cached", "compiled:default@eager", "offload"]
    model = triergon.build_model("tiny", seed=0)
    time_generation(model, seconds=0.5, steps=1, variant="offload")
    assert next(model.vae.parameters()).device.type == "cpu"  # the offloaded VAE lives on the CPU
    with pytest.raises(ValueError, match="unknown compile mode"):
        time_generation(model, seconds=0.5, steps=1, variant="compiled", compile="fast")


def test_summary_table_names_the_fastest_optimised_variant():
    def row(variant, wall, peak_gib):
        return {"preset": "p", "seconds": 10.0, "steps": 100, "sampler": "dpmpp-2m", "dtype": "bfloat16",
                "variant": variant, "wall_s": wall, "rtf": wall / 10, "peak_memory_bytes": peak_gib * 2**30,
                "dit_tflops": 100.0 / wall, "ceiling_tflops": 400.0}

    rows = [row("reference", 4.0, 3), row("cached", 2.0, 3), row("compiled:reduce-overhead", 1.0, 3),
            row("offload", 2.5, 2)]
    table = format_summary(rows).splitlines()
    assert table[0].startswith("| preset | seconds | steps | sampler | dtype | eager s | optimised s | optimised by |")
    assert table[2] == ("| p | 10 | 100 | dpmpp-2m | bfloat16 | 4.000 | 1.000 | compiled:reduce-overhead | 4.00x "
                        "| 0.1000 | 3.00 GiB | 100 (25%) | 2.500 / 2.00 GiB |")
    eager_only = format_summary([row("reference", 4.0, 3)]).splitlines()[2]
    assert eager_only == "| p | 10 | 100 | dpmpp-2m | bfloat16 | 4.000 | - | - | - | 0.4000 | 3.00 GiB | 25 (6%) | - |"
