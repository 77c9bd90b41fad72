"""What the demo model sounds like, per SynthFoley scene kind, measured: `triergon demo listen`.

For each scene kind, one clip showing only that kind is rendered and its sound generated from its video, its
caption and its own measured loudness curve as E_L (the ground-truth condition of Table 3); the clip's sound and the
generated one are then described by numbers a listener would notice: how many onsets (knocks, drops), where the
spectrum's centre of mass lies, which side is louder, and how closely the loudness follows the requested curve.
Each kind gets a plot of the requested curve against the generated audio's measured one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

LISTEN_SEED = 1000  # clip i of the listening set is rendered with seed LISTEN_SEED + i


@dataclass(frozen=True)
class KindReport:
    """One scene kind: the clip's sound against the generated sound (the `_clip` / `_generated` pairs).

    Attributes:
        onsets_*: how many onsets librosa's detector finds (`metrics.audio_onsets`).
        centroid_*: spectral centroid of the whole clip's power spectrum, the channels' powers summed (Hz).
        balance_*: L minus R level over the whole clip (dB of RMS).
        lufs_mae, lufs_correlation: per channel (L, R), the generated audio's loudness curve against the requested
            one (`metrics.lufs_tracking`, frames requested above -60 LUFS).
        placement, placement_frames: `metrics.stereo_placement` of the generated audio (NaN, 0: the request never
            has a clear side).
        plot: the PNG of the requested against the generated curve.
    """

    kind: str
    seed: int
    caption: str
    onsets_clip: int
    onsets_generated: int
    centroid_clip: float
    centroid_generated: float
    balance_clip: float
    balance_generated: float
    lufs_mae: tuple[float, ...]
    lufs_correlation: tuple[float, ...]
    placement: float
    placement_frames: int
    plot: str


def spectral_centroid(audio: np.ndarray, sample_rate: int) -> float:
    """The power-weighted mean frequency (Hz) of [C, N] audio's whole-clip spectrum, channels' powers summed
    (NaN for silence)."""
    x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    power = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).sum(0)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / sample_rate)
    total = power.sum()
    return float((freqs * power).sum() / total) if total > 0 else math.nan


def channel_balance(audio: np.ndarray) -> float:
    """L minus R level of stereo [2, N] audio, in dB of RMS (+inf / -inf when one side is silent)."""
    rms = np.sqrt((np.asarray(audio, dtype=np.float64) ** 2).mean(-1))
    with np.errstate(divide="ignore"):
        return float(20 * np.log10(rms[0]) - 20 * np.log10(rms[1]))


def listen(output: str | os.PathLike, *, files=None, seconds: float = 5.0, steps: int | None = None,
           cfg_scale: float | None = None,
           kinds: Sequence[str] | None = None, seed: int = LISTEN_SEED,
           progress: Callable[[str], None] | None = None) -> list[KindReport]:
    """Render one clip per scene kind, generate its sound with the demo model (video, caption and the clip's own
    curve as conditions; sampling seed = the clip's seed), measure both and write `<kind>.png`, `listening.json`
    and `listening.md` into `output`.

    Args:
        output: the folder to write into (created).
        files: the demo weights (`demo.DemoFiles`; default: the shipped ones).
        seconds, steps, cfg_scale: clip duration and sampling settings (DPM-Solver++(2M)); steps and cfg_scale left
            None are the demo model's recommended ones (`TriErgon.sampling`).
        kinds: the scene kinds (default: all of `SCENE_KINDS`, in order); kind i is rendered with seed `seed` + i.
        progress: called with each kind's name before it is generated.
    """
    from .checkpoint import load_checkpoint
    from .demo import DemoFiles
    from .generate import generate, sampling_settings
    from .languagebind import load_languagebind
    from .lufs_curve import LufsCurve
    from .lufs_plot import plot_curves
    from .metrics import audio_onsets, lufs_tracking, stereo_placement
    from .synthfoley import SCENE_KINDS, render_clip
    from .synthfoley.dataset import write_clip

    files = (files or DemoFiles()).check()
    kinds = list(SCENE_KINDS if kinds is None else kinds)
    folder = Path(output).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(files.model)
    settings = sampling_settings(model, steps=steps, cfg_scale=cfg_scale)
    steps, cfg_scale = settings.steps, settings.cfg_scale
    encoders = load_languagebind(files.languagebind)
    rate = model.config.sequence.sample_rate
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, kind in enumerate(kinds):
            if progress:
                progress(kind)
            clip = render_clip(seed=seed + i, seconds=seconds, kinds=[kind])
            video = Path(tmp) / f"{kind}.mp4"
            write_clip(clip, video)
            real = clip.audio
            requested = LufsCurve.measure(torch.from_numpy(real))
            audio = generate(model, video=video, text=clip.caption, lufs=requested, encoders=encoders,
                             seed=seed + i, steps=steps, cfg_scale=cfg_scale)[0]
            fake = audio.float().numpy()
            measured = LufsCurve.measure(audio)
            tracking = lufs_tracking(requested, measured)
            placement = stereo_placement(requested, measured)
            plot = folder / f"{kind}.png"
            plot_curves(requested, overlay=measured, path=plot, labels=("requested", "generated"),
                        title=f"{kind}: the clip's own curve (E_L) vs the generated sound")
            reports.append(KindReport(
                kind=kind, seed=seed + i, caption=clip.caption,
                onsets_clip=len(audio_onsets(real, rate)), onsets_generated=len(audio_onsets(fake, rate)),
                centroid_clip=spectral_centroid(real, rate), centroid_generated=spectral_centroid(fake, rate),
                balance_clip=channel_balance(real), balance_generated=channel_balance(fake),
                lufs_mae=tracking.mae, lufs_correlation=tracking.correlation,
                placement=placement.accuracy, placement_frames=placement.frames, plot=plot.name))
    (folder / "listening.json").write_text(json.dumps(
        {"seconds": seconds, "steps": steps, "cfg_scale": cfg_scale, "checkpoint": str(files.model),
         "kinds": [asdict(r) for r in reports]}, indent=1, allow_nan=True) + "\n")
    (folder / "listening.md").write_text(listening_table(reports) + "\n")
    return reports


def _pair(a: float, b: float, digits: int = 1) -> str:
    return f"{a:.{digits}f} / {b:.{digits}f}"


def listening_table(reports: Sequence[KindReport], *, link_prefix: str = "") -> str:
    """The reports as a Markdown table (plots linked as `link_prefix` + file name)."""
    rows = ["| kind | onsets (clip / generated) | spectral centroid, Hz (clip / generated) | L - R level, dB "
            "(clip / generated) | LUFS MAE L / R (LU) | correlation L / R | stereo placement |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        side = (f"{r.placement:.2f} of {r.placement_frames} frames" if r.placement_frames else "no clear side")
        rows.append(f"| [{r.kind}]({link_prefix}{r.plot}) | {r.onsets_clip} / {r.onsets_generated} | "
                    f"{_pair(r.centroid_clip, r.centroid_generated, 0)} | {_pair(r.balance_clip, r.balance_generated)}"
                    f" | {_pair(*r.lufs_mae, 2)} | {_pair(*r.lufs_correlation, 2)} | {side} |")
    return "\n".join(rows)
