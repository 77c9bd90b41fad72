"""Reading LanguageBind checkpoint folders: file formats, the key mapping (LoRA merge), config defaults, errors."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
from _lb_oracle import oracle
from safetensors.torch import save_file

from triergon.triergon_core.languagebind_checkpoint import (
    load_tower,
    map_checkpoint_keys,
    read_tower_config,
    tower_from_config,
)
from triergon.triergon_core.languagebind_towers import TextConfig, VisionConfig

pytestmark = pytest.mark.encoders

TEXT = {"vocab_size": 60, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 12}
VISION = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 16, "patch_size": 8, "add_time_attn": True, "num_frames": 2, "lora_r": 0}
CONFIG = {"model_type": "LanguageBindVideo", "projection_dim": 8, "text_config": TEXT, "vision_config": VISION}


def _state() -> dict[str, torch.Tensor]:
    model = tower_from_config(CONFIG, "video", text=True).init_random_(torch.Generator().manual_seed(0))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _folder(tmp_path, state, fmt: str):
    folder = tmp_path / fmt
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    for name in ("vocab.json", "merges.txt"):  # the text tower's files (read by the tokenizer, not here)
        (folder / name).write_text("")
    keys = sorted(state)
    if fmt == "safetensors":
        save_file(state, folder / "model.safetensors")
    elif fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:  # two shards and their index, as transformers writes them
        ext = "safetensors" if fmt == "sharded-safetensors" else "bin"
        prefix = "model" if ext == "safetensors" else "pytorch_model"
        halves = {f"{prefix}-0000{i + 1}-of-00002.{ext}": keys[i::2] for i in range(2)}
        for name, part in halves.items():
            tensors = {k: state[k] for k in part}
            save_file(tensors, folder / name) if ext == "safetensors" else torch.save(tensors, folder / name)
        index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
        (folder / f"{prefix}.{ext}.index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "sharded-safetensors", "sharded-bin"])
def test_every_weight_format_loads_the_same_tower(tmp_path, fmt):
    state = _state()
    model = load_tower(_folder(tmp_path, state, fmt), "video", text=True, device=torch.device("cpu"),
                       dtype=torch.float32)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_without_the_text_tower_its_weights_are_skipped(tmp_path):
    model = load_tower(_folder(tmp_path, _state(), "safetensors"), "video", text=False,
                       device=torch.device("cpu"), dtype=torch.bfloat16)
    assert not model.has_text and not any(k.startswith("text_") for k in model.state_dict())
    assert next(model.parameters()).dtype == torch.bfloat16


def test_key_mapping_drops_buffers_and_merges_lora():
    g = torch.Generator().manual_seed(1)
    w, bias = torch.randn(16, 16, generator=g), torch.randn(16, generator=g)
    a, b = torch.randn(4, 16, generator=g), torch.randn(16, 4, generator=g)
    peft = "vision_model.encoder.base_model.model.layers.0.temporal_attn.q_proj"
    state = {"text_model.embeddings.position_ids": torch.arange(12)[None],
             f"{peft}.base_layer.weight": w, f"{peft}.base_layer.bias": bias,
             f"{peft}.lora_A.default.weight": a, f"{peft}.lora_B.default.weight": b}
    out = map_checkpoint_keys(state, lora_alpha=8.0)
    ours = "vision_model.encoder.layers.0.temporal_attn.q_proj"
    assert sorted(out) == [f"{ours}.bias", f"{ours}.weight"]
    torch.testing.assert_close(out[f"{ours}.weight"], w + 8.0 / 4 * b @ a)  # peft: W + alpha / r * B A
    assert torch.equal(out[f"{ours}.bias"], bias)
    with pytest.raises(ValueError, match="incomplete LoRA weights"):
        map_checkpoint_keys({f"{peft}.base_layer.weight": w, f"{peft}.lora_A.default.weight": a}, lora_alpha=8.0)


def test_config_defaults_are_the_packages():
    """config.json leaves out values equal to the package's defaults: ours must be the same defaults."""
    lb = oracle()
    package = lb.LanguageBindAudioConfig()
    text, vision, dim = read_tower_config({"model_type": "LanguageBindAudio"}, "audio")
    assert dim == package.projection_dim
    for ours, theirs in ((text, package.text_config), (vision, package.vision_config)):
        for field in dataclasses.fields(ours):
            if field.name not in ("temporal_mlp", "audio_grid"):
                assert getattr(ours, field.name) == getattr(theirs, field.name), field.name
    assert TextConfig().hidden_act == "quick_gelu" and VisionConfig().lora_r == 2


def test_bad_checkpoints_are_clear_errors(tmp_path):
    state = _state()
    missing = dict(state)
    missing.pop("visual_projection.weight")
    with pytest.raises(ValueError, match=r"does not fit its config.json's model: missing \(1\): visual_projection"):
        load_tower(_folder(tmp_path / "a", missing, "safetensors"), "video", text=True, device=torch.device("cpu"),
                   dtype=torch.float32)
    wrong = {**state, "visual_projection.weight": torch.zeros(3, 3), "extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected \(1\): extra.weight; wrong shape \(1\): visual_projection"):
        load_tower(_folder(tmp_path / "b", wrong, "safetensors"), "video", text=True, device=torch.device("cpu"),
                   dtype=torch.float32)
    evil = _folder(tmp_path / "c", state, "bin")

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled",))

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}, protocol=2))
    with pytest.raises(ValueError, match=r"cannot read LanguageBind weights .*pytorch_model\.bin"):
        load_tower(evil, "video", text=True, device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(ValueError, match="add_time_attn false"):
        read_tower_config({"vision_config": {"add_time_attn": False}}, "video")
