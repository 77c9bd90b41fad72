"""Embedding cache: content-addressed, encoder-aware, bounded in memory, persistent on disk."""

from __future__ import annotations

import logging

import pytest
import torch
from _helpers import CountingEncoders
from _videos import write_video

import triergon
from triergon.triergon_core.cache import CachedEncoders, EmbeddingCache, tensor_digest
from triergon.triergon_core.presets import get_preset


def test_same_content_is_encoded_once():
    enc = CountingEncoders()
    cached = CachedEncoders(enc, identity=enc.identity)
    a = cached.encode_text(["rain", "wind"])
    b = cached.encode_text(["wind", "rain", "rain"])
    assert enc.calls["text"] == 2 and cached.cache.hits == 3
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0]) and b.shape == (3, 1, 64)
    audio = torch.randn(2, 2, 4096)
    cached.encode_audio(audio)
    cached.encode_audio(audio.clone())
    changed = audio.clone()
    changed[1, 0, 7] += 1e-3
    cached.encode_audio(changed)
    assert enc.calls["audio"] == 3  # two new items, then only the changed one


def test_other_encoders_do_not_share_entries():
    cache = EmbeddingCache()
    one, two = CountingEncoders(seed=1), CountingEncoders(seed=2)
    e1 = CachedEncoders(one, identity=one.identity, cache=cache).encode_text(["x"])
    e2 = CachedEncoders(two, identity=two.identity, cache=cache).encode_text(["x"])
    assert one.calls["text"] == two.calls["text"] == 1 and not torch.equal(e1, e2)


def test_disk_entries_survive_and_damaged_ones_are_recomputed(tmp_path, caplog):
    enc = CountingEncoders()
    first = CachedEncoders(enc, identity=enc.identity, cache=EmbeddingCache(tmp_path)).encode_text(["sea"])
    again = CachedEncoders(enc, identity=enc.identity, cache=EmbeddingCache(tmp_path)).encode_text(["sea"])
    assert enc.calls["text"] == 1 and torch.equal(first, again)
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        third = CachedEncoders(enc, identity=enc.identity, cache=EmbeddingCache(tmp_path)).encode_text(["sea"])
    assert enc.calls["text"] == 2 and torch.equal(first, third) and "unreadable cache entry" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))


def test_memory_is_bounded():
    cache = EmbeddingCache(max_items=3)
    for i in range(5):
        cache.put(str(i), torch.full((1,), float(i)))
    assert cache.get("0") is None and cache.get("1") is None and cache.get("4") is not None
    assert len(cache._memory) == 3


def test_digest_covers_dtype_and_shape():
    x = torch.zeros(4)
    assert tensor_digest(x) != tensor_digest(x.double())
    assert tensor_digest(x) != tensor_digest(x.reshape(2, 2))
    assert tensor_digest(x) == tensor_digest(torch.zeros(4))


def test_generate_reuses_embeddings_of_a_video_file(tmp_path):
    video = write_video(tmp_path / "clip.mp4", fps=25, num_frames=40)
    enc = CountingEncoders()
    cache = EmbeddingCache()
    model = triergon.build_model("tiny", seed=0)
    a = triergon.generate(model, video=video, text="steps", encoders=enc, cache=cache, steps=3)
    b = triergon.generate(model, video=video, text="steps", encoders=enc, cache=cache, steps=3)
    assert enc.calls["video-file"] == 1 and enc.calls["text"] == 1
    assert torch.equal(a, b) and a.shape == (1, 2, round(1.6 * 44100))


@pytest.mark.parametrize("fps", [25, 30000 / 1001])
def test_generate_takes_the_video_duration(tmp_path, fps):
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1001)
    video = write_video(tmp_path / "v.mp4", fps=rate, num_frames=50)
    audio = triergon.generate(triergon.build_model("tiny", seed=0), video=video, steps=2)
    assert audio.shape[-1] == round(50 / float(rate) * 44100)


def test_video_longer_than_the_window_is_refused(tmp_path):
    import dataclasses

    from triergon.triergon_core.config import SequenceConfig

    short_window = dataclasses.replace(get_preset("tiny"), sequence=SequenceConfig(max_seconds=1.0))
    video = write_video(tmp_path / "long.mp4", fps=10, num_frames=15)
    with pytest.raises(ValueError, match=r"1.50 s long, longer than the 1 s window of preset 'tiny'"):
        triergon.generate(triergon.build_model(short_window, seed=0), video=video, steps=2)


def test_folder_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = EmbeddingCache("~/embeddings")
    assert cache.folder == tmp_path / "embeddings" and cache.folder.is_dir()
