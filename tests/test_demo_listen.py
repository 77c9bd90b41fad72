"""`triergon demo listen`: the per-scene-kind measurements of the demo model's sound (known answers for the measures,
and a short run of the command on the shipped weights)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from triergon.triergon_core.cli import main
from triergon.triergon_core.demo_listen import channel_balance, listening_table, spectral_centroid

RATE = 44100


def test_spectral_centroid_of_a_tone_is_its_frequency():
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * 1000 * t)
    assert spectral_centroid(np.stack([tone, 0.5 * tone]), RATE) == pytest.approx(1000, abs=1)
    # equal power at 1 and 3 kHz: the centroid lies between them
    two = np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 3000 * t)
    assert spectral_centroid(two, RATE) == pytest.approx(2000, abs=1)
    assert math.isnan(spectral_centroid(np.zeros((2, 100)), RATE))


def test_channel_balance_is_the_level_difference_in_db():
    x = np.random.default_rng(0).standard_normal(RATE)
    assert channel_balance(np.stack([x, 0.5 * x])) == pytest.approx(20 * math.log10(2), abs=1e-9)
    assert channel_balance(np.stack([0.1 * x, x])) == pytest.approx(-20, abs=1e-9)
    assert channel_balance(np.stack([x, 0 * x])) == math.inf


def test_listen_command_on_the_shipped_model(tmp_path, capsys, monkeypatch):
    """Two kinds, 1 s, 2 steps: a plot per kind, the JSON and the table, and the clip's own sound measured right
    (the rain is the brightest kind, the ball knocks)."""
    from triergon.triergon_core import demo_listen

    real_listen = demo_listen.listen
    monkeypatch.setattr(demo_listen, "listen", lambda *a, **k: real_listen(*a, **k, kinds=["ball", "rain"]))
    out = tmp_path / "listen"
    assert main(["demo", "listen", "-o", str(out), "--seconds", "1", "--steps", "2", "-q"]) == 0
    printed = capsys.readouterr().out
    for name in ("ball.png", "rain.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out / name}" in printed
    report = json.loads((out / "listening.json").read_text())
    assert report["steps"] == 2 and report["seconds"] == 1
    ball, rain = report["kinds"]
    assert (ball["kind"], ball["seed"], rain["kind"], rain["seed"]) == ("ball", 1000, "rain", 1001)
    assert rain["centroid_clip"] > 3 * ball["centroid_clip"] and ball["onsets_clip"] >= 1
    assert len(ball["lufs_mae"]) == 2 and all(m >= 0 for m in ball["lufs_mae"])
    table = (out / "listening.md").read_text().splitlines()
    assert len(table) == 10 and table[2].startswith("| [ball](ball.png) |") and table[4] == ""
    assert table[5].startswith("| condition | scene kind from the nearest kind mean (leave one out, 8 clips per kind; "
                               "chance 0.50) |")
    conditions = {c["modality"]: c for c in report["conditions"]}
    assert list(conditions) == ["text", "video", "audio"] and table[7].startswith("| e_L (caption) |")
    assert all(0 <= c["accuracy"] <= 1 and -1 <= c["mean_cosine"] <= 1 for c in conditions.values())
    assert conditions["audio"]["accuracy"] == 1.0  # rain's hiss and a ball's knocks: even random towers part them


def test_nearest_mean_accuracy_and_cosine_known_answers():
    from triergon.triergon_core.demo_listen import mean_cosine_between, nearest_mean_accuracy

    labels = np.array(["a"] * 4 + ["b"] * 4)
    g = np.random.default_rng(0)
    centres = np.repeat(np.array([[5.0, 0, 0], [0, 5.0, 0]]), 4, axis=0)
    apart = g.normal(0, 0.1, (8, 3)) + centres
    assert nearest_mean_accuracy(apart, labels) == 1.0
    assert mean_cosine_between(apart, labels) == pytest.approx(0.0, abs=0.05)
    same = g.normal(0, 1, (8, 3)) * 0.01 + np.ones(3)  # one direction, kinds differ only by noise
    assert mean_cosine_between(same, labels) == pytest.approx(1.0, abs=1e-3)
    # leave one out, a point of a kind is nearer the other kind's mean when the kinds do not differ: at most chance
    swapped = np.array([[0.0], [1.0], [0.0], [1.0], [0.0], [1.0], [0.0], [1.0]])
    assert nearest_mean_accuracy(swapped, labels) == 0.0


def test_listening_table_links_plots_with_a_prefix():
    from triergon.triergon_core.demo_listen import KindReport

    r = KindReport(kind="lamp", seed=1001, caption="", onsets_clip=3, onsets_generated=1, centroid_clip=1500.4,
                   centroid_generated=1700.6, balance_clip=-2.46, balance_generated=1.5, lufs_mae=(2.871, 3.97),
                   lufs_correlation=(-0.31, 0.2), placement=math.nan, placement_frames=0, plot="lamp.png")
    row = listening_table([r], link_prefix="../docs/").splitlines()[2]
    assert row == ("| [lamp](../docs/lamp.png) | 3 / 1 | 1500 / 1701 | -2.5 / 1.5 | 2.87 / 3.97 | -0.31 / 0.20 | "
                   "no clear side |")
