"""DiT and number conditioner against Stable Audio Open (stable-audio-tools 0.0.19) reference outputs."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import DATA, load_case, max_rel_err, split_case

from triergon.triergon_core.conditioning import NumberConditioner
from triergon.triergon_core.config import DiTConfig
from triergon.triergon_core.dit import DiT
from triergon.triergon_core.model import build_model

TOL = 1e-5


@pytest.fixture(scope="module")
def dit_case():
    tensors, desc = load_case("dit_tiny")
    state, io = split_case(tensors)
    c = desc["config"]
    config = DiTConfig(io_channels=c["io_channels"], embed_dim=c["embed_dim"], depth=c["depth"],
                       num_heads=c["num_heads"], cond_token_dim=c["cond_token_dim"],
                       global_cond_dim=c["global_cond_dim"], project_cond_tokens=c["project_cond_tokens"])
    dit = DiT(config=config).eval()
    dit.load_state_dict(state, strict=True)
    return dit, io


def test_dit_forward(dit_case):
    dit, io = dit_case
    args = (io["input.x"], io["input.t"], io["input.cross_attn_cond"], io["input.global_embed"])
    with torch.no_grad():
        out = dit(*args)
    err = max_rel_err(out, io["output.out"])
    print(f"DiT output max relative error: {err:.2e}")
    assert err <= TOL
    # SAO ignores cross-attention masks, so its masked and unmasked outputs are identical
    assert torch.equal(io["output.out"], io["output.out_partial_mask"])
    assert torch.equal(io["output.out"], io["output.out_no_mask"])


def test_dit_batched_cfg(dit_case):
    dit, io = dit_case
    x, t, cond, g = io["input.x"], io["input.t"], io["input.cross_attn_cond"], io["input.global_embed"]
    with torch.no_grad():
        both = dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]),
                   torch.cat([g, g]))
    c, u = both.chunk(2)
    errors = {"uncond": max_rel_err(u, io["output.out_cfg3_uncond"]),
              "cfg3": max_rel_err(u + (c - u) * 3.0, io["output.out_cfg3"])}
    print("DiT CFG max relative errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors


def test_dit_intermediates(dit_case):
    dit, io = dit_case
    t = io["input.t"]
    with torch.no_grad():
        feats = dit.timestep_features(t)
        assert max_rel_err(feats, io["debug.timestep_features"]) <= TOL
        assert max_rel_err(dit.to_timestep_embed(feats), io["debug.timestep_embed"]) <= TOL
        glob = dit.to_global_embed(io["input.global_embed"])
        assert max_rel_err(glob, io["debug.global_embed_projected"]) <= TOL
        assert max_rel_err(glob + dit.to_timestep_embed(feats), io["debug.prepend_token"]) <= TOL
        assert max_rel_err(dit.to_cond_embed(io["input.cross_attn_cond"]), io["debug.cond_embed"]) <= TOL
        freqs = dit.transformer.rotary_pos_emb(io["input.x"].shape[-1] + 1)
        assert max_rel_err(freqs, io["debug.rotary_freqs"]) <= TOL
        # hidden states after each block (prepended token at index 0)
        hidden = []
        handles = [layer.register_forward_hook(lambda m, a, out: hidden.append(out))
                   for layer in dit.transformer.layers]
        dit(io["input.x"], t, io["input.cross_attn_cond"], io["input.global_embed"])
        for h in handles:
            h.remove()
    for i, h in enumerate(hidden):
        assert max_rel_err(h, io[f"debug.hidden_state.{i}"]) <= TOL, f"block {i}"


def test_number_conditioner():
    tensors, desc = load_case("number_conditioner")
    state, io = split_case(tensors)
    cfg = desc["config"]
    cond = NumberConditioner(dim=cfg["output_dim"], min_val=cfg["min_val"], max_val=cfg["max_val"])
    cond.load_state_dict(state, strict=True)
    with torch.no_grad():
        errors = {"embeds": max_rel_err(cond(io["input.floats"]), io["output.embeds"]),
                  "embeds_clamp": max_rel_err(cond(io["input.floats_clamp"]), io["output.embeds_clamp"])}
    print("number conditioner max relative errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors


def test_sao_dit_matches_manifest():
    manifest = json.loads((DATA / "manifest_dit.json").read_text())
    dit = build_model("sao-1.0", device="meta").dit
    ours = {k: list(v.shape) for k, v in dit.state_dict().items()}
    theirs = {e["key"]: e["shape"] for e in manifest["state_dict"]}
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))[:10]
    assert ours == theirs
    buffers = {k for k, _ in dit.named_buffers()}
    assert buffers == {e["key"] for e in manifest["state_dict"] if e["kind"] == "buffer"}
    n = sum(p.numel() for p in dit.parameters())
    print(f"sao-1.0 DiT parameters: {n:,}")
    assert n == manifest["total_parameters"] == 1_056_828_544
    cross = manifest["modules"]["transformer.layers.0.cross_attn"]
    assert (dit.transformer.layers[0].cross_attn.heads, dit.transformer.layers[0].cross_attn.kv_heads) == (
        cross["num_heads"], cross["kv_heads"])
