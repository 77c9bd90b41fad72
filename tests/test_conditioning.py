"""The conditioning tensor E = [E_M, E_L, E_T] and the global conditioning (DESIGN.md, "Conditioning E")."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from triergon.triergon_core.conditioning import (
    MODALITIES,
    Conditioner,
    Conditions,
    NumberConditioner,
    normalize_lufs,
    task_ids,
)
from triergon.triergon_core.config import ConditioningConfig, SequenceConfig
from triergon.triergon_core.model import build_model

COMBINATIONS = list(itertools.product((False, True), repeat=3))  # (text, audio, video)


def make_conditioner(*, d: int = 64, m: int = 1, max_seconds: float = 60.0, seed: int = 0) -> Conditioner:
    torch.manual_seed(seed)
    return Conditioner(config=ConditioningConfig(embed_dim=d, tokens_per_embedding=m),
                       sequence=SequenceConfig(max_seconds=max_seconds)).eval()


def make_conditions(b: int, m: int, d: int, *, text: bool = True, audio: bool = True, video: bool = True,
                    lufs: torch.Tensor | None = None, seed: int = 1) -> Conditions:
    g = torch.Generator().manual_seed(seed)

    def emb(present: bool) -> torch.Tensor | None:
        return torch.randn(b, m, d, generator=g) if present else None

    return Conditions(seconds_start=torch.rand(b, generator=g) * 30, seconds_total=30 + torch.rand(b, generator=g) * 90,
                      text=emb(text), audio=emb(audio), video=emb(video), lufs=lufs)


def blocks(e: torch.Tensor, m: int) -> dict[str, torch.Tensor]:
    """Split E [B, 8M, D] into its named token blocks."""
    names = ("task", "text", "audio", "video", "lufs_left", "lufs_right", "seconds_start", "seconds_total")
    assert e.shape[1] == 8 * m
    return {name: e[:, i * m:(i + 1) * m] for i, name in enumerate(names)}


# ----------------------------------------------------------------------------------------------- task id, E_M


def test_task_id_all_combinations():
    expected = {(False, False, False): 0, (False, False, True): 1, (False, True, False): 2, (False, True, True): 3,
                (True, False, False): 4, (True, False, True): 5, (True, True, False): 6, (True, True, True): 7}
    for (text, audio, video), want in expected.items():
        assert task_ids({"text": text, "audio": audio, "video": video}) == want
    assert task_ids({"text": True, "audio": False, "video": True}) == 5  # the paper's <e_L, mask, e_V>
    assert sorted(task_ids({"text": t, "audio": a, "video": v}) for t, a, v in COMBINATIONS) == list(range(8))


@pytest.mark.parametrize("m", [1, 2])
def test_modality_tokens_for_every_combination(m):
    d, b = 16, 3
    cond_model = make_conditioner(d=d, m=m)
    assert cond_model.num_tokens == 8 * m
    for combo_index, (text, audio, video) in enumerate(COMBINATIONS):
        cond = make_conditions(b, m, d, text=text, audio=audio, video=video, seed=combo_index)
        with torch.no_grad():
            e, g, _ = cond_model(cond)
        assert e.shape == (b, 8 * m, d) and g.shape == (b, 2 * d)
        parts = blocks(e, m)
        tid = task_ids({"text": text, "audio": audio, "video": video})
        expected_task = cond_model.task_embedding.weight[tid].detach().expand(b, m, d)
        assert torch.equal(parts["task"], expected_task), (text, audio, video)
        assert parts["task"].abs().sum() > 0
        for name, present in zip(MODALITIES, (text, audio, video), strict=True):
            if present:
                assert torch.equal(parts[name], getattr(cond, name)), name
            else:
                assert torch.count_nonzero(parts[name]) == 0, name
        # No LUFS given: E_L is zeros.
        assert torch.count_nonzero(parts["lufs_left"]) == 0 and torch.count_nonzero(parts["lufs_right"]) == 0


def test_task_tokens_differ_between_tasks():
    cond_model = make_conditioner(d=16)
    rows = cond_model.task_embedding.weight.detach()
    assert rows.shape == (8, 16)
    assert len({tuple(r.tolist()) for r in rows}) == 8


def test_tiny_preset_conditioner():
    conditioner = build_model("tiny", seed=0).conditioner
    assert conditioner.max_lufs_frames == 360 and conditioner.config.embed_dim == 64
    cond = make_conditions(2, 1, 64, audio=False, lufs=torch.rand(2, 2, 360))
    with torch.no_grad():
        e, g, frames = conditioner(cond)
    assert e.shape == (2, 8, 64) and g.shape == (2, 128) and frames is None  # no frame-aligned path in the preset
    assert torch.equal(e[:, 0], conditioner.task_embedding.weight[5].detach().expand(2, 64))


# ------------------------------------------------------------------------------------------------------ E_L


def reference_lufs_tokens(curve: np.ndarray, max_frames: int, m: int, d: int) -> np.ndarray:
    """One normalised curve [frames] -> [M, D]: zero-pad to max_frames, linear interpolation (align_corners)."""
    padded = np.zeros(max_frames, dtype=np.float64)
    padded[: len(curve)] = curve
    positions = np.linspace(0, max_frames - 1, m * d)
    return np.interp(positions, np.arange(max_frames), padded).reshape(m, d)


def test_normalize_lufs():
    lufs = torch.tensor([-100.0, -70.0, -35.0, -14.0, 0.0, 3.0])
    expected = torch.tensor([0.0, 0.0, 0.5, 56 / 70, 1.0, 1.0])
    torch.testing.assert_close(normalize_lufs(lufs), expected)


@pytest.mark.parametrize("m", [1, 2])
def test_lufs_tokens_match_numpy_interpolation(m):
    d, max_seconds, seconds = 64, 60.0, 5.0
    cond_model = make_conditioner(d=d, m=m, max_seconds=max_seconds)
    assert cond_model.max_lufs_frames == 360
    frames = round(seconds * 6)
    left_lufs = torch.linspace(-60.0, -10.0, frames)  # a ramp in LUFS
    right_lufs = torch.full((frames,), -23.0)  # a constant
    lufs = normalize_lufs(torch.stack([left_lufs, right_lufs])[None])  # [1, 2, frames]
    expected_left = (np.clip(left_lufs.numpy(), -70, 0) + 70) / 70
    np.testing.assert_allclose(lufs[0, 0].numpy(), expected_left, atol=1e-6)
    np.testing.assert_allclose(lufs[0, 1].numpy(), np.full(frames, 47 / 70), atol=1e-6)

    cond = make_conditions(1, m, d, lufs=lufs)
    with torch.no_grad():
        e, _, _ = cond_model(cond)
    parts = blocks(e, m)
    want_left = reference_lufs_tokens(lufs[0, 0].double().numpy(), 360, m, d)
    want_right = reference_lufs_tokens(lufs[0, 1].double().numpy(), 360, m, d)
    np.testing.assert_allclose(parts["lufs_left"][0].double().numpy(), want_left, atol=1e-6)
    np.testing.assert_allclose(parts["lufs_right"][0].double().numpy(), want_right, atol=1e-6)
    # The padded tail is zero and the curve occupies the start (5 s of 60 s -> the first ~1/12 of values).
    flat_right = parts["lufs_right"][0].flatten()
    assert flat_right[0] == pytest.approx(47 / 70) and torch.count_nonzero(flat_right[m * d // 2:]) == 0
    # lufs_tokens agrees with the slice of E.
    torch.testing.assert_close(cond_model.lufs_tokens(lufs, 1), e[:, 4 * m:6 * m])


def test_lufs_left_and_right_blocks():
    m, d = 2, 16
    cond_model = make_conditioner(d=d, m=m, max_seconds=2.0)  # 12 frames
    assert cond_model.max_lufs_frames == 12
    lufs = torch.zeros(2, 2, 12)
    lufs[0, 0] = 1.0  # item 0: left only
    lufs[1, 1] = 0.5  # item 1: right only
    with torch.no_grad():
        e, _, _ = cond_model(make_conditions(2, m, d, lufs=lufs))
    parts = blocks(e, m)
    assert torch.allclose(parts["lufs_left"][0], torch.ones(m, d)) and torch.count_nonzero(parts["lufs_right"][0]) == 0
    assert torch.count_nonzero(parts["lufs_left"][1]) == 0 and torch.allclose(parts["lufs_right"][1],
                                                                            torch.full((m, d), 0.5))


def test_lufs_absent_is_zero_and_too_long_raises():
    m, d = 1, 16
    cond_model = make_conditioner(d=d, m=m, max_seconds=10.0)  # 60 frames
    assert torch.count_nonzero(cond_model.lufs_tokens(None, 3)) == 0
    assert cond_model.lufs_tokens(None, 3).shape == (3, 2 * m, d)
    # Exactly max frames is fine; one more is an error.
    assert cond_model.lufs_tokens(torch.rand(3, 2, 60), 3).shape == (3, 2 * m, d)
    with pytest.raises(ValueError, match="61 frames"):
        cond_model(make_conditions(3, m, d, lufs=torch.rand(3, 2, 61)))


# ------------------------------------------------------------------------------------------ E_T and global


def reference_number_embedding(nc: NumberConditioner, seconds: torch.Tensor) -> torch.Tensor:
    """SAO's number embedder written out: clamp to [0, 512], scale to [0, 1], Fourier features, linear."""
    fourier, linear = nc.embedder.embedding[0], nc.embedder.embedding[1]
    x = (seconds.double().clamp(0, 512) / 512)[:, None]
    freqs = x * fourier.weights.detach().double()[None] * 2 * math.pi
    feats = torch.cat([x, freqs.sin(), freqs.cos()], dim=-1)
    return feats @ linear.weight.detach().double().T + linear.bias.detach().double()


@pytest.mark.parametrize("m", [1, 2])
def test_timing_tokens_and_global_conditioning(m):
    d, b = 32, 4
    cond_model = make_conditioner(d=d, m=m)
    cond = make_conditions(b, m, d)
    with torch.no_grad():
        e, g, _ = cond_model(cond)
        start = cond_model.seconds_start(cond.seconds_start)
        total = cond_model.seconds_total(cond.seconds_total)
    assert start.shape == (b, 1, d) and total.shape == (b, 1, d)
    parts = blocks(e, m)
    assert torch.equal(parts["seconds_start"], start.expand(b, m, d))
    assert torch.equal(parts["seconds_total"], total.expand(b, m, d))
    assert g.shape == (b, 2 * d)
    assert torch.equal(g, torch.cat([start[:, 0], total[:, 0]], dim=-1))
    # float32 module vs float64 reference.
    for module, seconds, out in ((cond_model.seconds_start, cond.seconds_start, start),
                                 (cond_model.seconds_total, cond.seconds_total, total)):
        ref = reference_number_embedding(module, seconds)
        torch.testing.assert_close(out[:, 0].double(), ref, rtol=1e-5, atol=1e-5)
    # The two embedders are distinct modules with their own weights.
    ten = torch.tensor([10.0])
    assert not torch.equal(cond_model.seconds_start(ten), cond_model.seconds_total(ten))


def test_timing_values_differ_and_clamp():
    nc = make_conditioner(d=32).seconds_total
    with torch.no_grad():
        out = nc(torch.tensor([0.0, 1.0, 10.0, 47.0, 512.0, 600.0, 1e6, -5.0]))[:, 0]
    assert out.shape == (8, 32)
    distinct = out[:5]  # 0, 1, 10, 47, 512 s
    for i, j in itertools.combinations(range(5), 2):
        assert not torch.allclose(distinct[i], distinct[j]), (i, j)
    assert torch.equal(out[5], out[4]) and torch.equal(out[6], out[4])  # clamped to 512 s
    assert torch.equal(out[7], out[0])  # clamped to 0 s


# ---------------------------------------------------------------------------------------------------- dropout


def run_dropout(cond_model: Conditioner, cond: Conditions, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        e, g, _ = cond_model(cond, dropout=True, generator=torch.Generator().manual_seed(seed))
    return e, g


def test_dropout_statistics():
    m, d, b = 1, 8, 20000
    cond_model = make_conditioner(d=d, m=m)
    cond = make_conditions(b, m, d)
    e, g = run_dropout(cond_model, cond, seed=1234)
    with torch.no_grad():
        e_plain, g_ref, _ = cond_model(cond)
    assert e.shape == (b, 8 * m, d)

    # Global conditioning is never dropped.
    assert torch.equal(g, g_ref)

    # CFG: the whole E zeroed with p = 0.1.
    whole = (e.flatten(1) == 0).all(dim=1)
    cfg_rate = whole.float().mean().item()
    assert abs(cfg_rate - 0.1) < 0.01, cfg_rate

    kept = e[~whole]
    parts = blocks(kept, m)
    n_kept = kept.shape[0]
    dropped = {}
    for name in MODALITIES:
        zero = (parts[name].flatten(1) == 0).all(dim=1)
        given = getattr(cond, name)[~whole]
        # Each modality block is either the given embedding exactly or all zeros.
        assert torch.equal(parts[name][~zero], given[~zero]), name
        dropped[name] = zero
        rate = zero.float().mean().item()
        assert abs(rate - 0.3) < 0.02, (name, rate)
    for a, c in itertools.combinations(MODALITIES, 2):
        joint = (dropped[a] & dropped[c]).float().mean().item()
        assert abs(joint - 0.09) < 0.02, (a, c, joint)
    all_three = (dropped["text"] & dropped["audio"] & dropped["video"]).float().mean().item()
    assert abs(all_three - 0.027) < 0.01, all_three

    # The task token of every kept item follows its kept modalities.
    ids = 4 * (~dropped["text"]).long() + 2 * (~dropped["audio"]).long() + (~dropped["video"]).long()
    expected_task = cond_model.task_embedding.weight.detach()[ids][:, None]
    assert torch.equal(parts["task"], expected_task)
    assert set(ids.tolist()) == set(range(8))
    # Timing tokens of kept items are untouched.
    assert torch.equal(kept[:, 6 * m:], e_plain[~whole][:, 6 * m:])

    print(f"\nB={b}: cfg={cfg_rate:.4f} " + " ".join(f"{k}={v.float().mean().item():.4f}" for k, v in dropped.items())
          + " " + " ".join(f"{a}&{c}={(dropped[a] & dropped[c]).float().mean().item():.4f}"
                           for a, c in itertools.combinations(MODALITIES, 2))
          + f" all3={all_three:.4f} kept={n_kept}")


def test_dropout_is_seeded():
    m, d, b = 1, 8, 512
    cond_model = make_conditioner(d=d, m=m)
    cond = make_conditions(b, m, d)
    e1, g1 = run_dropout(cond_model, cond, seed=7)
    e2, g2 = run_dropout(cond_model, cond, seed=7)
    e3, _ = run_dropout(cond_model, cond, seed=8)
    assert torch.equal(e1, e2) and torch.equal(g1, g2)

    def pattern(e: torch.Tensor) -> torch.Tensor:
        return torch.stack([(e[:, i * m:(i + 1) * m].flatten(1) == 0).all(dim=1) for i in range(4)], dim=1)

    assert not torch.equal(pattern(e1), pattern(e3))
    assert not torch.equal(e1, e3)


def test_no_dropout_never_drops():
    m, d, b = 2, 8, 2000
    cond_model = make_conditioner(d=d, m=m)
    cond = make_conditions(b, m, d, lufs=torch.rand(b, 2, 30))
    with torch.no_grad():
        e, g, _ = cond_model(cond, dropout=False, generator=torch.Generator().manual_seed(0))
        e_default, g_default, _ = cond_model(cond)
    assert torch.equal(e, e_default) and torch.equal(g, g_default)
    parts = blocks(e, m)
    for name in MODALITIES:
        assert torch.equal(parts[name], getattr(cond, name))
    assert torch.equal(parts["task"], cond_model.task_embedding.weight[7].detach().expand(b, m, d))
    assert ((e.flatten(1) == 0).all(dim=1)).sum() == 0


def test_dropout_on_absent_modalities_keeps_them_absent():
    m, d, b = 1, 8, 4000
    cond_model = make_conditioner(d=d, m=m)
    cond = make_conditions(b, m, d, audio=False)  # text + video: task 5 when nothing is dropped
    e, _ = run_dropout(cond_model, cond, seed=3)
    whole = (e.flatten(1) == 0).all(dim=1)
    parts = blocks(e[~whole], m)
    assert torch.count_nonzero(parts["audio"]) == 0
    text_kept = ~(parts["text"].flatten(1) == 0).all(dim=1)
    video_kept = ~(parts["video"].flatten(1) == 0).all(dim=1)
    ids = 4 * text_kept.long() + video_kept.long()
    assert set(ids.tolist()) == {0, 1, 4, 5}
    assert torch.equal(parts["task"], cond_model.task_embedding.weight.detach()[ids][:, None])


# ------------------------------------------------------------------------------------------------ Conditions


def test_conditions_repeat_is_item_major():
    m, d, b, n = 1, 4, 3, 2
    cond = make_conditions(b, m, d, audio=False, lufs=torch.rand(b, 2, 5))
    rep = cond.repeat(n)
    assert rep.batch_size == b * n
    assert rep.audio is None
    for field in ("seconds_start", "seconds_total", "text", "video", "lufs"):
        src, out = getattr(cond, field), getattr(rep, field)
        assert out.shape[0] == b * n
        for i in range(b):
            for k in range(n):
                assert torch.equal(out[i * n + k], src[i]), (field, i, k)
    # Item-major: [a, a, b, b, c, c], not [a, b, c, a, b, c].
    assert torch.equal(rep.seconds_total[:2], cond.seconds_total[:1].expand(2))


def test_conditions_without_and_present():
    cond = make_conditions(2, 1, 4, lufs=torch.rand(2, 2, 5))
    assert all(cond.present(name) for name in (*MODALITIES, "lufs"))
    no_text_video = cond.without("text", "video")
    assert not no_text_video.present("text") and not no_text_video.present("video")
    assert no_text_video.audio is cond.audio and no_text_video.lufs is cond.lufs
    assert no_text_video.seconds_total is cond.seconds_total
    assert cond.present("text") and cond.present("video")  # the original is unchanged
    no_lufs = cond.without("lufs")
    assert no_lufs.lufs is None and no_lufs.text is cond.text
    cond_model = make_conditioner(d=4)
    with torch.no_grad():
        e, _, _ = cond_model(no_text_video)
    assert torch.equal(e[:, 0], cond_model.task_embedding.weight[2].detach().expand(2, 4))
