"""What the demo model sounds like, per SynthFoley scene kind, measured: `triergon demo listen`.

For each scene kind, one clip showing only that kind is rendered and its sound generated from its video, its
caption and its own measured loudness curve as E_L (the ground-truth condition of Table 3); the clip's sound and the
generated one are then described by numbers a listener would notice: how many onsets (knocks, drops), where the
spectrum's centre of mass lies, which side is louder, and how closely the loudness follows the requested curve.
Each kind gets a plot of the requested curve against the generated audio's measured one. A second measurement says
how well the condition embeddings (e_L, e_V, e_A) tell the kinds apart: what the DiT can know of a scene.
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
SEPARABILITY_SEED = 9000  # clip j of kind k of the separability set: seed SEPARABILITY_SEED + 100 k + j
SEPARABILITY_CLIPS = 8  # clips per kind
MODALITIES = {"text": "e_L (caption)", "video": "e_V (video)", "audio": "e_A (the clip's sound)"}


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


@dataclass(frozen=True)
class Separability:
    """How well one condition embedding tells the scene kinds apart, on clips that each show one kind.

    Attributes:
        modality: "text" (e_L of the caption), "video" (e_V) or "audio" (e_A of the clip's own sound).
        accuracy: leave-one-out nearest-kind-mean accuracy on standardised embeddings (chance: 1 / kinds).
        mean_cosine: the mean cosine between different kinds' mean embeddings (1: the same direction).
    """

    modality: str
    accuracy: float
    mean_cosine: float


def nearest_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of assigning each row of `features` [N, D] the label whose mean (of the other rows)
    is nearest, after standardising each dimension over all rows."""
    z = (features - features.mean(0)) / (features.std(0) + 1e-6)
    kinds, hits = np.unique(labels), 0
    for i in range(len(z)):
        others = np.arange(len(z)) != i
        means = np.stack([z[others & (labels == k)].mean(0) for k in kinds])
        hits += kinds[np.argmin(((means - z[i]) ** 2).sum(1))] == labels[i]
    return hits / len(z)


def mean_cosine_between(features: np.ndarray, labels: np.ndarray) -> float:
    """The mean cosine between the kinds' mean rows of `features` [N, D], over pairs of different kinds."""
    means = np.stack([features[labels == k].mean(0) for k in np.unique(labels)])
    means = means / np.linalg.norm(means, axis=1, keepdims=True)
    cos = means @ means.T
    return float(cos[~np.eye(len(means), dtype=bool)].mean())


def kind_separability(encoders, *, kinds: Sequence[str], seconds: float, clips: int = SEPARABILITY_CLIPS,
                      seed: int = SEPARABILITY_SEED) -> list[Separability]:
    """`Separability` of e_L, e_V and e_A from `encoders` on `clips` new SynthFoley clips per kind (kind k's clip j
    rendered with seed `seed` + 100 k + j, only that kind), embedded as generation embeds them."""
    from .synthfoley import render_clip
    from .synthfoley.dataset import write_clip

    rows: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    labels = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, kind in enumerate(kinds):
            for j in range(clips):
                clip = render_clip(seed=seed + 100 * k + j, seconds=seconds, kinds=[kind])
                video = Path(tmp) / "clip.mp4"
                write_clip(clip, video)
                embedded = {"text": encoders.encode_text([clip.caption]), "video": encoders.encode_video_file(video),
                            "audio": encoders.encode_audio(torch.from_numpy(clip.audio).float()[None])}
                for m, e in embedded.items():
                    rows[m].append(e.reshape(-1).float().numpy())
                labels.append(kind)
    labels = np.array(labels)
    return [Separability(m, nearest_mean_accuracy(np.stack(rows[m]), labels),
                         mean_cosine_between(np.stack(rows[m]), labels)) for m in MODALITIES]


def separability_table(reports: Sequence[Separability], *, kinds: int, clips: int) -> str:
    rows = [f"| condition | scene kind from the nearest kind mean (leave one out, {clips} clips per kind; chance "
            f"{1 / kinds:.2f}) | cosine between the kinds' mean embeddings |", "| --- | --- | --- |"]
    rows += [f"| {MODALITIES[r.modality]} | {r.accuracy:.2f} | {r.mean_cosine:.3f} |" for r in reports]
    return "\n".join(rows)


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
           kinds: Sequence[str] | None = None, seed: int = LISTEN_SEED, separability_clips: int = SEPARABILITY_CLIPS,
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
        separability_clips: clips per kind on which `kind_separability` measures how well the condition embeddings
            tell the kinds apart (a second table and `"conditions"` in the JSON); 0: not measured.
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
    conditions = []
    if separability_clips > 0 and len(kinds) > 1:
        if progress:
            progress("conditions")
        conditions = kind_separability(encoders, kinds=kinds, seconds=seconds, clips=separability_clips)
    (folder / "listening.json").write_text(json.dumps(
        {"seconds": seconds, "steps": steps, "cfg_scale": cfg_scale, "checkpoint": str(files.model),
         "kinds": [asdict(r) for r in reports], "conditions": [asdict(c) for c in conditions]},
        indent=1, allow_nan=True) + "\n")
    table = listening_table(reports)
    if conditions:
        table += "\n\n" + separability_table(conditions, kinds=len(kinds), clips=separability_clips)
    (folder / "listening.md").write_text(table + "\n")
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
