"""Stable Audio Open checkpoints -> Tri-Ergon: `sao_to_triergon` and `triergon convert --from-sao`."""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
import torch
from _helpers import load_case, max_rel_err, sao_layout, split_case
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from triergon.triergon_core.checkpoint import load_checkpoint
from triergon.triergon_core.cli import main
from triergon.triergon_core.config import VAEConfig
from triergon.triergon_core.model import build_model
from triergon.triergon_core.presets import get_preset
from triergon.triergon_core.sao import config_for_checkpoint, infer_dit_config, sao_to_triergon

TOL = 1e-5
PARITY_VAE = VAEConfig(audio_channels=2, channels=8, c_mults=(1, 2, 4), strides=(2, 4, 2), latent_dim=8)
NEW_FORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def to_new_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as `torch.nn.utils.parametrizations.weight_norm` saves them."""
    out = {}
    for key, value in state.items():
        for old, new in NEW_FORM.items():
            if key.endswith("." + old):
                key = key[: -len(old)] + new
        out[key] = value
    return out


@pytest.fixture(scope="module")
def parity():
    tensors, _ = load_case("vae_tiny")
    vae_state, io = split_case(tensors)
    return vae_state, io


@pytest.fixture(scope="module")
def sao_state(parity):
    """SAO's layout holding only the tiny parity VAE (a VAE-only checkpoint)."""
    vae_state, _ = parity
    return {"pretransform.model." + k: v for k, v in vae_state.items()}


@pytest.fixture
def cli():
    """Run `main(argv)`; check it leaves the caller's grad mode alone, remove the root log handler it adds."""
    root = logging.getLogger()

    def run(*argv) -> int:
        handlers, level, grad = list(root.handlers), root.level, torch.is_grad_enabled()
        try:
            code = main([str(a) for a in argv])
            assert torch.is_grad_enabled() == grad, "main() changed the process-wide grad mode"
            return code
        finally:
            for handler in [h for h in root.handlers if h not in handlers]:
                root.removeHandler(handler)
            root.setLevel(level)
            torch.set_grad_enabled(grad)

    return run


def write_sao(state: dict[str, torch.Tensor], path) -> None:
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)


def parity_errors(model, io) -> dict[str, float]:
    with torch.no_grad():
        return {
            "decoder_out": max_rel_err(model.vae.decode(io["input.latent"], chunk_frames=None),
                                       io["output.decoder_out"]),
            "bottleneck_mean": max_rel_err(model.vae.encode(io["input.audio"], sample=False, chunk_frames=None),
                                           io["output.bottleneck_mean"]),
        }


@pytest.mark.parametrize("source_name", ["model.safetensors", "model.ckpt"])
def test_convert_cli_reproduces_parity_outputs(sao_state, parity, tmp_path, capsys, cli, source_name):
    vae_state, io = parity
    source, out = tmp_path / source_name, tmp_path / "converted" / "triergon.safetensors"
    write_sao(sao_state, source)

    assert cli("convert", "--from-sao", source, out) == 0
    printed = capsys.readouterr().out
    assert f"converted {len(vae_state)} tensors (vae {len(vae_state)})" in printed
    # a VAE-only file: the DiT and conditioner are new, reported as whole components
    assert re.search(r"newly initialised .*dit\.\* \(\d+ tensors\), conditioner\.\* \(\d+ tensors\)", printed)
    assert "ignored" not in printed
    assert f"wrote {out}" in printed

    model = load_checkpoint(out)
    assert model.config.vae == PARITY_VAE
    assert model.config.name == "sao-custom"
    assert model.config.dit.io_channels == 8 and model.config.sequence.downsampling_ratio == 16
    assert model.config.dit.embed_dim == get_preset("tiny").dit.embed_dim  # small DiT for a custom VAE
    with safe_open(out, framework="pt") as f:
        meta = f.metadata()
    assert meta["converted_from"] == "stable-audio-open" and meta["source"] == source_name
    assert "dit.transformer.project_in.weight" in meta["newly_initialised"].split(",")

    errors = parity_errors(model, io)
    print(f"converted {source_name} parity max relative errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors


def test_full_checkpoint_converts_every_tensor_and_names_the_new_ones(tmp_path, capsys, cli):
    tiny = get_preset("tiny")
    original = build_model(tiny, seed=3)
    sao = sao_layout(original) | {"conditioner.conditioners.prompt.proj_out.weight": torch.zeros(2)}
    source = tmp_path / "model.safetensors"
    save_file(sao, source)

    assert cli("convert", "--from-sao", source, tmp_path / "a.safetensors") == 0
    printed = capsys.readouterr().out
    assert "newly initialised (not in the SAO checkpoint): conditioner.task_embedding.weight" in printed
    assert "ignored 1 keys" in printed
    converted = load_checkpoint(tmp_path / "a.safetensors")
    # sizes read off the shapes: the tiny model (SAO's window length, as for any SAO checkpoint)
    assert dataclasses.replace(converted.config, name="tiny", sequence=tiny.sequence) == tiny
    ours, theirs = original.state_dict(), converted.state_dict()
    assert set(ours) == set(theirs)
    for key in ours:
        if key != "conditioner.task_embedding.weight":
            assert torch.equal(ours[key], theirs[key]), key

    assert cli("convert", "--from-sao", source, tmp_path / "b.safetensors", "--preset", "tiny") == 0
    assert load_checkpoint(tmp_path / "b.safetensors").config == tiny


def test_dit_with_missing_tensors_is_refused(tmp_path, cli, caplog):
    sao = sao_layout(build_model("tiny", seed=0))
    del sao["model.model.transformer.layers.1.ff.ff.2.bias"]
    save_file(sao, tmp_path / "model.safetensors")
    assert cli("convert", "--from-sao", tmp_path / "model.safetensors", tmp_path / "out.safetensors") == 2
    assert "1 missing key(s):\n    dit.transformer.layers.1.ff.ff.2.bias" in caplog.text
    assert not (tmp_path / "out.safetensors").exists()


def test_dit_whose_global_conditioning_does_not_fit_is_refused(parity):
    tensors, _ = load_case("dit_tiny")
    dit_state, _ = split_case(tensors)  # SAO's tiny parity DiT: global 64 = one 64-wide timing embedding
    vae_state, _ = parity
    converted, _ = sao_to_triergon({"pretransform.model." + k: v for k, v in vae_state.items()}
                                   | {"model.model." + k: v for k, v in dit_state.items()})
    assert infer_dit_config(converted).global_cond_dim == 64
    with pytest.raises(ValueError, match="two timing embeddings"):
        config_for_checkpoint(converted)


def test_new_weight_norm_keys_convert_to_the_same_result(sao_state, parity, tmp_path, cli):
    _, io = parity
    new_state = to_new_weight_norm(sao_state)
    assert sum("parametrizations.weight.original0" in k for k in new_state) > 10
    assert not any(k.endswith((".weight_g", ".weight_v")) for k in new_state)

    old_converted, old_report = sao_to_triergon(sao_state)
    new_converted, new_report = sao_to_triergon(new_state)
    assert set(new_converted) == set(old_converted)
    assert all(new_converted[k] is old_converted[k] for k in old_converted)
    assert new_report.converted == old_report.converted

    outputs = {}
    for form, state in (("old", sao_state), ("new", new_state)):
        write_sao(state, tmp_path / f"{form}.safetensors")
        assert cli("convert", "--from-sao", tmp_path / f"{form}.safetensors", tmp_path / f"{form}-out.safetensors") == 0
        outputs[form] = tmp_path / f"{form}-out.safetensors"
    old, new = load_file(outputs["old"]), load_file(outputs["new"])
    assert set(old) == set(new) and all(torch.equal(old[k], new[k]) for k in old)
    model = load_checkpoint(outputs["new"])
    assert model.config.vae == PARITY_VAE
    errors = parity_errors(model, io)
    assert all(e <= TOL for e in errors.values()), errors


def test_state_dict_without_vae_is_refused(tmp_path, cli, caplog):
    no_vae = {k: v for k, v in sao_layout(build_model("tiny", seed=0)).items()
              if not k.startswith("pretransform.model.")}
    with pytest.raises(ValueError, match=r"prefix 'pretransform\.model\.'"):
        sao_to_triergon(no_vae)
    with pytest.raises(ValueError, match=r"prefix 'pretransform\.model\.'"):
        sao_to_triergon({})

    source = tmp_path / "dit_only.safetensors"
    save_file(no_vae, source)
    assert cli("convert", "--from-sao", source, tmp_path / "out.safetensors") == 2
    assert any(r.levelno == logging.ERROR and "no Stable Audio Open VAE tensors" in r.getMessage()
               for r in caplog.records)
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_with_a_preset_that_does_not_fit(sao_state, tmp_path, cli, caplog, capsys):
    source, out = tmp_path / "model.safetensors", tmp_path / "out.safetensors"
    save_file(sao_state, source)
    assert cli("convert", "--from-sao", source, out, "--preset", "tiny") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "mis-shaped" in errors[0] and "does not fit the model" in errors[0]
    assert not out.exists()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("form", ["weight_g/v", "parametrizations"])
def test_full_size_sao_keys_convert_to_the_model_keys(form):
    model = build_model("sao-1.0", device="meta")
    sao = sao_layout(model)
    assert len(sao) == 745  # SAO's checkpoint: 745 keys (manifest_dit.json, sao_checkpoint_wrapping)
    if form == "parametrizations":
        sao = to_new_weight_norm(sao)
    converted, report = sao_to_triergon(sao)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert set(expected) - set(converted) == {"conditioner.task_embedding.weight"}
    assert {k: v.shape for k, v in converted.items()} == {k: expected[k] for k in converted}
    assert report.converted == {"vae": 365, "dit": 374, "conditioner": 6} and not report.ignored
    assert config_for_checkpoint(converted) == get_preset("sao-1.0")
