"""OpenL3 and PaSST embedders built from weights files in the torchopenl3 / hear21passt layouts (random weights
here: the real ones are the user's), and the common loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from triergon.triergon_core.audio_embedders import load_embedder, mono_batch, peak_normalise
from triergon.triergon_core.checkpoint import CheckpointError
from triergon.triergon_core.languagebind_audio_features import mel_banks
from triergon.triergon_core.openl3 import OpenL3Config, OpenL3Embedder, load_openl3
from triergon.triergon_core.passt import PasstConfig, PasstEmbedder, load_passt


def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and batch-norm statistics, so that a load that dropped any of them would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point() and not name.startswith("speclayer."):
                t.copy_(torch.rand(t.shape, generator=gen) * 0.1 + (1.0 if "var" in name else 0.0))
    return module.eval()


def _torchopenl3_keys(mels: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchopenl3's PytorchOpenl3 state dict, written out independently of our module."""
    keys = {"speclayer.dft_real_kernels": (1025, 1, 2048), "speclayer.dft_imag_kernels": (1025, 1, 2048),
            "speclayer.mel_basis": (mels, 1025)}
    widths = [1, 64, 64, 128, 128, 256, 256, 512]
    for i, c in enumerate(widths, start=1):
        keys |= {f"batch_normalization_{i}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")}
        keys[f"batch_normalization_{i}.num_batches_tracked"] = ()
    for i in range(1, 8):
        keys[f"conv2d_{i}.weight"], keys[f"conv2d_{i}.bias"] = (widths[i], widths[i - 1], 3, 3), (widths[i],)
    keys["audio_embedding_layer.weight"], keys["audio_embedding_layer.bias"] = (512, 512, 3, 3), (512,)
    return keys


def test_openl3_has_torchopenl3_layout_and_loads_its_files(tmp_path):
    source = _randomised(OpenL3Embedder(config=OpenL3Config(input_repr="mel128")))
    assert {k: tuple(v.shape) for k, v in source.state_dict().items()} == _torchopenl3_keys(128)
    path = tmp_path / "torchopenl3_mel128_env_512.pth"
    torch.save(source.state_dict(), path)
    model = load_embedder("openl3", path)
    assert model.config == OpenL3Config(input_repr="mel128", embedding_size=512)
    audio = torch.randn(1, 2, 22050) * 0.1  # 0.5 s: one window
    emb, probs = model.embed(audio, 44100)
    assert emb.shape == (1, 512) and probs is None
    torch.testing.assert_close(source.embed(audio, 44100)[0], emb, rtol=0, atol=0)  # deterministic
    # the same weights with a 6144-wide pooling, stereo (L and R concatenated), from safetensors without the
    # front end's buffers (they are fixed functions of the config)
    bare = {k: v for k, v in source.state_dict().items() if not k.startswith("speclayer.")}
    save_file(bare, tmp_path / "l3.safetensors")
    wide = load_openl3(tmp_path / "l3.safetensors", input_repr="mel128", embedding_size=6144, channels=2)
    assert wide.embed(audio, 44100)[0].shape == (1, 2 * 6144)


def test_openl3_windows_and_front_end(monkeypatch):
    model = OpenL3Embedder(config=OpenL3Config(input_repr="mel128", hop=0.5))
    seen = []
    monkeypatch.setattr(model, "windows_forward", lambda w: seen.append(w) or torch.zeros(len(w), 512))
    # torchopenl3's framing: half a window of zeros first, then 1 s windows every hop, zero-padded at the end
    ramp = torch.arange(1, 96001, dtype=torch.float32)[None, None] / 96000
    assert model.frame_embeddings(ramp, 48000).shape == (1, 4, 512)
    windows = seen[-1] / 10 ** (-1 / 20)  # peak-normalised to -1 dBFS
    assert windows.shape == (4, 48000)
    torch.testing.assert_close(windows[0, 24000:], ramp[0, 0, :24000])
    torch.testing.assert_close(windows[3], ramp[0, 0, 48000:])
    assert windows[0, :24000].abs().max() == 0
    assert model.frame_embeddings(torch.ones(1, 1, 4800), 48000).shape == (1, 1, 512)
    short = seen[-1][0] / 10 ** (-1 / 20)
    torch.testing.assert_close(short[24000:28800], torch.ones(4800))
    assert short[:24000].abs().max() == 0 and short[28800:].abs().max() == 0
    # a 3 kHz tone lights the mel band whose centre is nearest 3 kHz, 0 dB there (dB re the window's maximum)
    t = torch.arange(48000) / 48000
    db = model.speclayer(torch.sin(2 * math.pi * 3000 * t)[None, None])[0, 0]
    assert db.shape == (128, 199) and db.max() == 0 and db.min() >= -80
    edges = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 24000 / 700), 130) / 2595) - 1)
    assert int(db[:, 100].argmax()) == int(np.abs(edges[1:-1] - 3000).argmin())


def _passt_wrapper_state(model: PasstEmbedder) -> dict[str, torch.Tensor]:
    """hear21passt's PasstBasicWrapper layout: the network under `net.`, plus `device_proxy`."""
    return {**{f"net.{k}": v for k, v in model.state_dict().items()}, "device_proxy": torch.zeros(1)}


def test_passt_loads_hear21passt_files_and_reads_its_shapes(tmp_path):
    tiny = PasstConfig(dim=32, depth=2, heads=2, classes=7)
    source = _randomised(PasstEmbedder(config=tiny))
    keys = set(source.state_dict())
    assert {"cls_token", "dist_token", "new_pos_embed", "freq_new_pos_embed", "time_new_pos_embed",
            "patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "norm.weight",
            "head.0.weight", "head.1.weight", "head_dist.weight"} <= keys
    assert tuple(source.state_dict()["time_new_pos_embed"].shape) == (1, 32, 1, 99)
    assert tuple(source.state_dict()["patch_embed.proj.weight"].shape) == (32, 1, 16, 16)
    torch.save(_passt_wrapper_state(source), tmp_path / "passt.pt")
    model = load_embedder("passt", tmp_path / "passt.pt", heads=2)
    assert model.config == tiny
    audio = torch.randn(2, 2, 44100 * 3) * 0.1
    emb, probs = model.embed(audio, 44100)
    assert emb.shape == (2, 32) and probs.shape == (2, 7)
    assert probs.min() > 0 and probs.max() < 1
    torch.testing.assert_close(emb, source.embed(audio, 44100)[0])
    torch.testing.assert_close(model.embed(audio, 44100)[1], probs, rtol=0, atol=0)
    # a bare network (PaSST's own checkpoints) as safetensors, softmax probabilities
    save_file(source.state_dict(), tmp_path / "passt.safetensors")
    soft = load_passt(tmp_path / "passt.safetensors", heads=2, activation="softmax")
    torch.testing.assert_close(soft.embed(audio, 44100)[1].sum(1), torch.ones(2))


def test_passt_front_end_and_windows():
    model = PasstEmbedder(config=PasstConfig(dim=16, depth=1, heads=2, classes=3))
    assert model.mel(torch.zeros(1, 320000)).shape == (1, 128, 1000)  # 10 s: 1000 frames, 99 time patches
    # windows every 5 s, each padded to 10 s: a 12 s clip is the mean over windows at 0 s and 5 s
    mono = peak_normalise(torch.randn(1, 32000 * 12))
    features, logits = model.network(model.mel(torch.cat([mono[:, :320000],
                                                           torch.nn.functional.pad(mono[:, 160000:], (0, 96000))])))
    torch.testing.assert_close(model(mono)[0], features.mean(0, keepdim=True))
    torch.testing.assert_close(model(mono)[1], logits.mean(0, keepdim=True).sigmoid())


def test_mel_banks_match_torchaudio_with_an_upper_edge():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    want, _ = kaldi.get_mel_banks(128, 1024, 32000.0, 0.0, 15000.0, 100.0, -500.0, 1.0)
    got = mel_banks(128, 1024, 32000, low_freq=0.0, high_freq=15000.0)
    torch.testing.assert_close(got[:, :-1], want.float(), atol=1e-6, rtol=0)
    assert got[:, -1].abs().max() == 0
    with pytest.raises(ValueError, match="high_freq"):
        mel_banks(64, 512, 16000, high_freq=9000.0)


def test_loaders_refuse_wrong_files_in_one_line(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    classifier = tmp_path / "c.safetensors"
    save_file({"x": torch.zeros(1)}, classifier)
    cases = [("openl3", tmp_path / "other.pth", {"input_repr": "mel256"}, "not an OpenL3 mel256 state dict"),
             ("openl3", tmp_path / "junk.safetensors", {"input_repr": "mel256"}, "not a readable safetensors"),
             ("passt", tmp_path / "other.pth", {}, "not a PaSST state dict"),
             ("synthfoley", classifier, {}, "not a SynthFoley classifier")]
    for kind, path, options, message in cases:
        with pytest.raises(CheckpointError, match=message) as err:
            load_embedder(kind, path, **options)
        assert "\n" not in str(err.value) and str(path) in str(err.value), str(err.value)
    with pytest.raises(ValueError, match="mel128 or mel256"):
        load_embedder("openl3", tmp_path / "other.pth")
    with pytest.raises(ValueError, match="needs your weights file"):
        load_embedder("passt")
    with pytest.raises(ValueError, match="unknown embedder 'vggish'"):
        load_embedder("vggish", tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"\[clips, channels, samples\]"):
        mono_batch(torch.zeros(2, 100), 16000, 16000)
