"""The `tiny` preset's encoders: LanguageBind's own towers at tiny size, seeded random weights, built in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction

import av
import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_unit_embeddings, condition_clips
from _videos import write_video

import triergon
from triergon.triergon_core.cli import main
from triergon.triergon_core.encoders import build_encoders
from triergon.triergon_core.languagebind import TINY_CONFIGS, TINY_SEED, LanguageBindEncoders
from triergon.triergon_core.languagebind_preprocess import preprocess_audio, preprocess_video
from triergon.triergon_core.languagebind_towers import LanguageBindTower
from triergon.triergon_core.presets import get_preset
from triergon.triergon_core.video import probe_video

pytestmark = pytest.mark.encoders

D = get_preset("tiny").conditioning.embed_dim
PROMPTS = ["rain on a tin roof", "a dog barks twice far away", "on"]
# A fresh process builds the towers and prints e_L of PROMPTS[0] (its float32 bytes) and the identity.
_PROBE = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from triergon.triergon_core.languagebind import LanguageBindEncoders
enc = LanguageBindEncoders.tiny_random(embed_dim=int(sys.argv[2]))
e = enc.encode_text([sys.argv[3]])
print(json.dumps({"identity": enc.identity, "text": e.numpy().tobytes().hex()}))
"""


@pytest.fixture(scope="module")
def enc():
    return LanguageBindEncoders.tiny_random(embed_dim=D)


@pytest.fixture(scope="module")
def clips():
    return condition_clips()



def test_the_preset_carries_languagebinds_towers(enc):
    from transformers import CLIPTokenizer

    assert build_encoders(get_preset("tiny").conditioning) is enc  # built once per process, then shared
    video, audio = enc._towers["video"].model, enc._towers["audio"].model
    assert type(video) is LanguageBindTower and type(audio) is LanguageBindTower
    assert isinstance(enc._towers["video"].tokenizer, CLIPTokenizer)
    assert not audio.has_text  # e_L comes from the video checkpoint's text tower, as with real folders
    for kind, model in (("video", video), ("audio", audio)):
        vision = model.vision_config
        for key, value in TINY_CONFIGS[kind].items():
            assert getattr(vision, key) == value, (kind, key)
        assert model.projection_dim == enc.embed_dim == D
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert video.vision_config.add_time_attn and len(video.vision_model.encoder.layers[0].temporal_embedding[0]) == 8
    assert audio.vision_model.embeddings.position_embedding.num_embeddings == (32 // 8) * (128 // 8) + 1
    assert video.text_config.num_hidden_layers == TINY_CONFIGS["text"]["num_hidden_layers"]
    assert enc.identity.startswith(f"languagebind-tiny-random:seed={TINY_SEED}:embed_dim={D}:")
    assert "video=2x32:8x32/8" in enc.identity and "weights=" in enc.identity


def test_shapes_norms_and_distinct_inputs(enc, clips, tmp_path):
    for name, fn, x in (("text", enc.encode_text, PROMPTS), ("audio", enc.encode_audio, clips["audio"]),
                        ("video", enc.encode_video, clips["video"])):
        out = fn(x)
        assert_unit_embeddings(out, 3, D)
        assert not torch.allclose(out[0], out[1], atol=1e-3), name
        torch.testing.assert_close(torch.cat([fn(x[i:i + 1]) for i in range(3)]), out, atol=1e-5, rtol=0)
    assert_unit_embeddings(enc.encode_video_file(write_video(tmp_path / "clip.mp4", fps=25, num_frames=50)), 1, D)
    # a prompt is tokenized as <|startoftext|>, one token per character of each word, <|endoftext|> (padding)
    ids = enc.tokenize(["on"])["input_ids"]
    tokenizer = enc._towers["video"].tokenizer
    assert ids.shape == (1, 77)
    assert tokenizer.convert_ids_to_tokens(ids[0, :4].tolist()) == ["<|startoftext|>", "o", "n</w>", "<|endoftext|>"]


def test_preprocessing_is_languagebinds_at_tiny_size(enc, clips):
    """Embeddings = the towers on LanguageBind's preprocessing at the tiny configs' sizes."""
    video, audio = enc._towers["video"].model, enc._towers["audio"].model
    cfg = audio.vision_config
    with torch.no_grad():
        pix = torch.stack([preprocess_video(c, num_frames=8, size=32) for c in clips["video"]])
        mels = torch.stack([preprocess_audio(w, 44100, num_mel_bins=32, target_length=128, audio_mean=cfg.audio_mean,
                                             audio_std=cfg.audio_std) for w in clips["audio"]])
        assert pix.shape == (3, 3, 8, 32, 32) and mels.shape == (3, 3, 32, 128)
        want_v = F.normalize(video.get_image_features(pixel_values=pix), dim=-1)[:, None]
        want_a = F.normalize(audio.get_image_features(pixel_values=mels), dim=-1)[:, None]
    torch.testing.assert_close(enc.encode_video(clips["video"]), want_v, atol=1e-6, rtol=0)
    torch.testing.assert_close(enc.encode_audio(clips["audio"]), want_a, atol=1e-6, rtol=0)


def test_seeded_builds_are_identical(enc, clips):
    rng = torch.get_rng_state()
    with torch.inference_mode():  # prepare_conditions may build them in inference mode
        fresh = LanguageBindEncoders._build_tiny(D, TINY_SEED)
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is untouched
    assert fresh is not enc and fresh.identity == enc.identity
    for kind in ("video", "audio"):
        ours, theirs = enc._towers[kind].model.state_dict(), fresh._towers[kind].model.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) and not theirs[k].is_inference() for k in ours), kind
    assert torch.equal(fresh.encode_text(PROMPTS), enc.encode_text(PROMPTS))
    assert torch.equal(fresh.encode_audio(clips["audio"]), enc.encode_audio(clips["audio"]))
    other_seed, other_dim = LanguageBindEncoders._build_tiny(D, TINY_SEED + 1), LanguageBindEncoders._build_tiny(32, 1)
    assert len({enc.identity, other_seed.identity, other_dim.identity}) == 3
    assert not torch.allclose(other_seed.encode_text(PROMPTS), enc.encode_text(PROMPTS))
    assert other_dim.encode_text(PROMPTS).shape == (3, 1, 32)


def test_another_process_builds_the_same_towers_offline(enc, tmp_path):
    hf_home = tmp_path / "hf"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", _PROBE, str(torch.get_num_threads()), str(D), PROMPTS[0]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["identity"] == enc.identity
    assert out["text"] == enc.encode_text(PROMPTS[:1]).numpy().tobytes().hex()  # bit for bit
    assert not hf_home.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing fetched or written


def test_generate_with_every_condition(tmp_path):
    video = write_video(tmp_path / "clip.mp4", fps=25, num_frames=30)
    audio = torch.randn(2, 44100, generator=torch.Generator().manual_seed(1)) * 0.1
    model = triergon.build_model("tiny", seed=0)
    out = triergon.generate(model, video=video, text="rain on a tin roof", audio=audio, steps=2)
    assert out.shape == (1, 2, round(1.2 * 44100)) and torch.isfinite(out).all()


def test_cli_generate_video_tiny_preset_muxes(tmp_path):
    video = write_video(tmp_path / "in.mp4", fps=Fraction(30000, 1001), num_frames=45, audio=True)
    out = tmp_path / "out.mp4"
    assert main(["generate", str(video), "--preset", "tiny", "--text", "door", "--steps", "2", "-q",
                 "-o", str(out)]) == 0
    info = probe_video(out)
    with av.open(str(out)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        stream = container.streams.audio[0]
        ends = [(p.pts + p.duration) * p.time_base for p in container.demux(stream) if p.size]
    video_end = info.start_time + info.duration
    assert info.has_audio and info.duration == pytest.approx(45 * 1001 / 30000, abs=1e-3)
    assert float(max(ends)) == pytest.approx(video_end, abs=1 / 44100)  # the audio lasts exactly as the video
