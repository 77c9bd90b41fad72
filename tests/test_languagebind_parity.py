"""Our LanguageBind towers against the `languagebind` package's classes (the oracle, `tests/_lb_oracle.py`).

Both are built from the same configs (tiny sizes, and the released checkpoints' config.json shapes in
tests/data/), the package's random weights (perturbed so that LoRA's zero B matrices count) go into ours through
the checkpoint key names (`map_checkpoint_keys`, LoRA merged), and the text / video / audio features agree within
float32 rounding. The package runs with eager attention (transformers 4.5x needs one set), and its audio
embeddings run the package's own patch-embedding forward (transformers' current CLIPVisionEmbeddings rejects
the non-square filter-bank image that the audio model's resized position grid is made for).
"""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch
from _helpers import DATA, max_rel_err, perturb_
from _lb_oracle import eager_reference, oracle

from triergon.triergon_core.languagebind_checkpoint import load_state, map_checkpoint_keys, tower_from_config

pytestmark = pytest.mark.encoders

D = 16
TEXT = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "gelu"}
_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "image_size": 32, "patch_size": 8, "hidden_act": "gelu"}
TINY = {
    "video": {**_VISION, "add_time_attn": True, "num_frames": 4, "lora_r": 0},
    "video-lora": {**_VISION, "add_time_attn": True, "num_frames": 4, "lora_r": 2, "lora_alpha": 8},
    "audio": {**_VISION, "num_frames": 1, "num_mel_bins": 16, "target_length": 48, "lora_r": 0},
    "audio-lora": {**_VISION, "num_frames": 1, "num_mel_bins": 16, "target_length": 48, "lora_r": 3,
                   "hidden_act": "quick_gelu"},
    "audio-time": {**_VISION, "num_frames": 2, "add_time_attn": True, "num_mel_bins": 16, "target_length": 48,
                   "lora_r": 0},  # the audio code's temporal block (with its MLP) on 2 frames; unused by the release
}
# float32 errors, max |ours - package| / max |package| (each test prints its own)
TOL = {"tiny": 2e-6, "full": 5e-6}  # measured: tiny <= 6.3e-7, full size <= 9.5e-7 (sdpa; eager: 0)


def _real_config(kind: str) -> dict:
    return json.loads((DATA / f"languagebind_{kind}_ft_config.json").read_text())


def _package(kind: str, config: dict, *, seed: int):
    """The package's model from config.json's dict, with seeded weights (perturbed), ready to run."""
    lb = oracle()
    config_cls, model_cls = ((lb.LanguageBindVideoConfig, lb.LanguageBindVideo) if kind == "video"
                             else (lb.LanguageBindAudioConfig, lb.LanguageBindAudio))
    cfg = config_cls(text_config=copy.deepcopy(config["text_config"]),
                     vision_config=copy.deepcopy(config["vision_config"]), projection_dim=config["projection_dim"])
    torch.manual_seed(seed)
    model = perturb_(model_cls(cfg), std=0.02, seed=seed).eval()
    return eager_reference(model, kind)


def _ours(kind: str, config: dict, state: dict, attn: str = "eager"):
    model = tower_from_config(config, kind, text=True, device="meta")
    mapped = map_checkpoint_keys(state, lora_alpha=float(model.vision_config.lora_alpha))
    load_state(model, mapped, source="the package's state dict", kind=kind)
    model.set_attention(attn)
    return model.eval()


def _inputs(kind: str, config: dict, *, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    text, vision = config["text_config"], config["vision_config"]
    n = text.get("max_position_embeddings", 77)
    ids = torch.randint(0, text["vocab_size"] - 2, (batch, n), generator=g)
    mask = torch.zeros(batch, n, dtype=torch.long)
    for i, length in enumerate(torch.randint(3, n, (batch,), generator=g).tolist()):
        ids[i, 0], ids[i, length - 1], ids[i, length:] = text["vocab_size"] - 2, text["vocab_size"] - 1, 0
        mask[i, :length] = 1  # <|startoftext|> ... <|endoftext|> (the largest id), then padding
    if kind == "audio" and vision.get("num_mel_bins") and vision.get("target_length"):
        size = (vision["num_mel_bins"], vision["target_length"])
    else:
        size = (vision["image_size"], vision["image_size"])
    frames = (vision["num_frames"],) if vision.get("add_time_attn") else ()
    shape = (batch, 3, *frames, *size)
    return ids, mask, torch.randn(shape, generator=g)


def _compare(kind: str, config: dict, *, seed: int, batch: int = 2) -> dict[str, float]:
    theirs = _package(kind, config, seed=seed)
    ids, mask, pixels = _inputs(kind, config, batch=batch, seed=seed + 1)
    errors = {}
    with torch.no_grad():
        want_t = theirs.get_text_features(input_ids=ids, attention_mask=mask)
        want_v = theirs.get_image_features(pixel_values=pixels)
        state = theirs.state_dict()
        del theirs
        for attn in ("eager", "sdpa"):
            ours = _ours(kind, config, state, attn)
            errors[f"text/{attn}"] = max_rel_err(ours.get_text_features(ids, mask), want_t)
            errors[f"{kind}/{attn}"] = max_rel_err(ours.get_image_features(pixels), want_v)
    return errors


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_towers_match_the_package(name):
    kind = name.split("-")[0]
    config = {"text_config": TEXT, "vision_config": TINY[name], "projection_dim": D}
    errors = _compare(kind, config, seed=3)
    print(name, {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < TOL["tiny"], errors


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_a_full_size_state_dict_loads_without_missing_or_unexpected_keys(kind):
    """The package's model at the released config.json's shapes, built on the meta device (no memory, no
    init), gives a state dict that loads into ours exactly; the same with LoRA layers in it."""
    lb = oracle()
    for lora_r in (0, 16):
        config = _real_config(kind)
        config["vision_config"]["lora_r"] = lora_r
        config_cls, model_cls = ((lb.LanguageBindVideoConfig, lb.LanguageBindVideo) if kind == "video"
                                 else (lb.LanguageBindAudioConfig, lb.LanguageBindAudio))
        with torch.device("meta"):
            theirs = model_cls(config_cls(**copy.deepcopy(config)))
        state = theirs.state_dict()
        assert any("lora_A" in k for k in state) == bool(lora_r)
        ours = tower_from_config(config, kind, text=True, device="meta")
        mapped = map_checkpoint_keys(state, lora_alpha=16.0)
        load_state(ours, mapped, source="meta", kind=kind)  # raises on any missing / unexpected / misshapen key
        assert sum(p.numel() for p in ours.parameters()) == sum(
            v.numel() for k, v in state.items() if "lora_" not in k and not k.endswith("position_ids"))
    grid = ours.vision_model.embeddings.position_embedding.num_embeddings
    assert grid == (8 * 74 + 1 if kind == "audio" else 16 * 16 + 1)  # 112 x 1036 or 224 x 224 in 14 x 14 patches


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_full_size_towers_match_the_package(kind):
    """The released shapes end to end (ViT-L/14, 24 layers; ~430 M parameters each side): slow on a CPU."""
    t0 = time.perf_counter()
    errors = _compare(kind, _real_config(kind), seed=5, batch=1)
    print(kind, {k: f"{v:.1e}" for k, v in errors.items()}, f"{time.perf_counter() - t0:.0f} s")
    assert max(errors.values()) < TOL["full"], errors
