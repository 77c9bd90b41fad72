"""`triergon eval`'s scoring: generated audio against the clips of a manifest (their reference audio and video).

Per clip: LUFS tracking (per-channel MAE in LU and Pearson correlation between the requested curve and the
generated audio's measured curve, over frames where the request is above -60 LUFS), stereo placement,
AV-Align (the clip's video against the generated audio) and KL between the embedder's class probabilities of
the reference and of the generated audio. Over the set: the Fréchet distance between the embeddings of all
generated and all reference clips (FD is a distance between two distributions, so it has no per-clip value).
The requested curve is the reference audio's measured one unless a caller gives another (Table 3 gives the
E_L each row was generated with).

As the paper does (supplementary "Evaluation Details"), the reference audio and the video are trimmed to the
generated audio's duration, so a model that makes shorter clips is compared with the same span.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._fs import atomic_write_path
from .audio import SAMPLE_RATE, load_audio
from .lufs_curve import LufsCurve
from .metrics import av_align, frechet_distance, kl_divergence, lufs_tracking, stereo_placement

if TYPE_CHECKING:
    from ..train.data.manifest import Clip

logger = logging.getLogger(__name__)

__all__ = ["METRICS", "ClipScore", "Scorer", "arrow", "find_generated", "format_cell", "format_markdown", "load_clips",
           "reference_audio", "score_folder", "write_report"]

GENERATED_FORMATS = (".wav", ".flac")
# name -> (column heading, whether higher is better: None for a baseline); the order of the Markdown columns
METRICS = {
    "fd": ("FD", False),
    "kl": ("KL", False),
    "av_align": ("AV-Align", True),
    "av_align_shuffled": ("AV-Align, shuffled video", None),
    "lufs_mae": ("LUFS MAE (LU)", False),
    "lufs_corr": ("LUFS corr.", True),
    "stereo_placement": ("stereo placement", True),
}


def load_clips(manifest: str | os.PathLike, *, split: str = "test", limit: int | None = None) -> list[Clip]:
    """The clips of one split of a manifest (the training format: id, video, audio, caption, split), in order.

    Args:
        manifest: a `manifest.jsonl` (e.g. written by `triergon synth`).
        split: the split to keep; one the manifest does not have is a ValueError naming those it has.
        limit: keep the first `limit` clips of the split.
    """
    from ..train.data.manifest import read_manifest

    clips = read_manifest(manifest)
    splits = sorted({c.split for c in clips})
    if split not in splits:
        raise ValueError(f"split {split!r} is not in {manifest}; it has: {', '.join(splits) or 'no clips'}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    return [c for c in clips if c.split == split][:limit]


def reference_audio(clip: Clip, num_samples: int | None = None) -> torch.Tensor:
    """A clip's reference audio [2, samples] at 44.1 kHz (its `audio` file, else the video's own track), cut to
    `num_samples` when longer."""
    audio = load_audio(clip.audio if clip.audio is not None else clip.video)
    return audio if num_samples is None else audio[:, :num_samples]


@dataclass(frozen=True)
class ClipScore:
    """One clip's metrics (NaN where undefined: e.g. no frame requested above -60 LUFS, no clear side for the
    stereo placement, no class probabilities from the embedder)."""

    id: str
    seconds: float
    lufs_mae: float  # mean of the two channels' MAE, LU
    lufs_mae_lr: tuple[float, float]
    lufs_corr: float  # mean of the two channels' Pearson correlation
    stereo_placement: float
    av_align: float
    av_align_shuffled: float  # the same audio against the clip's frames in a seeded random order (the baseline)
    kl: float


class Scorer:
    """Scores clip after clip and keeps the embeddings for the set's Fréchet distance.

    Args:
        embedder: an `audio_embedders.AudioEmbedder` (`embed(audio [B, C, N], rate) -> (embeddings, probs)`):
            its embeddings give FD, and its class probabilities KL unless `kl_embedder` is given.
        kl_embedder: another embedder for KL's class probabilities (the paper's FD_openl3 with KL_passt).
    """

    def __init__(self, embedder, kl_embedder=None) -> None:
        self.embedder, self.kl_embedder = embedder, kl_embedder
        self.clips: list[ClipScore] = []
        self._generated: list[torch.Tensor] = []
        self._reference: list[torch.Tensor] = []

    def add(self, clip_id: str, generated: torch.Tensor, reference: torch.Tensor, video: str | os.PathLike,
            requested: LufsCurve | None = None) -> ClipScore:
        """Score one clip.

        Args:
            clip_id: the clip's id (kept in the results).
            generated: generated audio [2, samples] at 44.1 kHz.
            reference: the clip's reference audio [2, samples] at 44.1 kHz (cut to the generated length here).
            video: the clip's video (AV-Align reads its first `generated` seconds).
            requested: the loudness curve the audio was asked to follow; default: the reference's measured one.
        """
        num = generated.shape[-1]
        reference = reference[:, :num]
        if reference.shape[-1] < num:  # a longer generation is compared over the reference's span
            generated, num = generated[:, :reference.shape[-1]], reference.shape[-1]
        if requested is None:
            requested = LufsCurve.measure(reference)
        measured = LufsCurve.measure(generated, rate=requested.rate)
        tracking = lufs_tracking(requested, measured)
        placement = stereo_placement(requested, measured)
        (gen_emb, ref_emb), probs = self._embed(generated, reference)
        self._generated.append(gen_emb)
        self._reference.append(ref_emb)
        kl = math.nan if probs is None else float(kl_divergence(probs[1:], probs[:1]))
        aligned, shuffled = _av_align(video, generated)
        score = ClipScore(id=clip_id, seconds=num / SAMPLE_RATE, lufs_mae=_nanmean(tracking.mae),
                          lufs_mae_lr=tuple(tracking.mae), lufs_corr=_nanmean(tracking.correlation),
                          stereo_placement=placement.accuracy, av_align=aligned, av_align_shuffled=shuffled,
                          kl=kl)
        self.clips.append(score)
        return score

    def _embed(self, generated: torch.Tensor, reference: torch.Tensor):
        pair = torch.stack([generated, reference])
        emb, probs = self.embedder.embed(pair, SAMPLE_RATE)
        if self.kl_embedder is not None:
            probs = self.kl_embedder.embed(pair, SAMPLE_RATE)[1]
        return (emb[0], emb[1]), probs

    def summary(self) -> dict[str, float]:
        """The mean of each per-clip metric over the clips where it is defined, and the set's FD."""
        if not self.clips:
            raise ValueError("no clip was scored")
        means = {name: _nanmean([getattr(c, name) for c in self.clips]) for name in METRICS if name != "fd"}
        if len(self.clips) < 2:
            logger.warning("FD needs at least 2 clips (a covariance); with 1 it is left out")
            fd = math.nan
        else:
            fd = float(frechet_distance(torch.stack(self._generated), torch.stack(self._reference)))
        return {"fd": fd, **means}


SHUFFLE_SEED = 0


def _av_align(video: str | os.PathLike, audio: torch.Tensor) -> tuple[float, float]:
    """AV-Align of `audio` with the video's first frames, and with the same frames in a random order (seeded by
    `SHUFFLE_SEED`): the baseline an audio track unrelated to the motion reaches."""
    from .video import probe_video, read_frames

    info = probe_video(video)
    end = min(info.duration, audio.shape[-1] / SAMPLE_RATE)
    frames = read_frames(video, fps=info.fps, end=end).frames
    shuffled = frames[np.random.default_rng(SHUFFLE_SEED).permutation(len(frames))]
    return (float(av_align(frames, info.fps, audio, SAMPLE_RATE)),
            float(av_align(shuffled, info.fps, audio, SAMPLE_RATE)))


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def find_generated(folder: str | os.PathLike, clips: Sequence[Clip]) -> tuple[dict[str, Path], list[str]]:
    """Match the audio files in `folder` to clips by name (`<id>.wav` or `<id>.flac`).

    Returns:
        ({clip id: file}, [ids of the clips without a file]).

    Raises:
        FileNotFoundError / ValueError: the folder does not exist or is a file; two files for one clip; no
            file for any clip.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"folder of generated audio not found: {str(folder)!r}")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file; give the folder holding <clip id>.wav / .flac files")
    ids = {c.id for c in clips}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in GENERATED_FORMATS and path.stem in ids:
            if path.stem in found:
                raise ValueError(f"two files for clip {path.stem!r} in {str(folder)!r}: {found[path.stem].name} "
                                 f"and {path.name}; keep one")
            found[path.stem] = path
    if not found:
        some = ", ".join(sorted(ids)[:3])
        raise ValueError(f"no file in {str(folder)!r} is named after a clip of the split (e.g. {some}.wav)")
    return found, [c.id for c in clips if c.id not in found]


def score_folder(folder: str | os.PathLike, clips: Sequence[Clip], *, embedder, kl_embedder=None,
                 requested: Callable[[str], LufsCurve | None] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Score the generated audio files in `folder` (named `<clip id>.wav` / `.flac`) against `clips`.

    Args:
        folder: the generated audio.
        clips: the manifest's clips (`load_clips`); those without a file are listed in the result as missing.
        embedder: an audio embedder (`audio_embedders.load_embedder`) for FD, and KL unless `kl_embedder`.
        kl_embedder: an embedder whose class probabilities give KL (default: `embedder`'s).
        requested: clip id -> the loudness curve the clip was generated with; default (or None): the
            reference audio's measured curve.
        progress: called with the number of clips scored so far.

    Returns:
        {"clips": [per-clip metrics], "mean": {metric: value, "fd": ...}, "num_clips", "missing": [ids]}.
    """
    files, missing = find_generated(folder, clips)
    if missing:
        logger.warning("%d of %d clips have no generated file in %s (e.g. %s); scoring the others",
                       len(missing), len(clips), folder, missing[0])
    scorer = Scorer(embedder, kl_embedder)
    for clip in clips:
        if clip.id not in files:
            continue
        generated = load_audio(files[clip.id])
        curve = requested(clip.id) if requested is not None else None
        scorer.add(clip.id, generated, reference_audio(clip, generated.shape[-1]), clip.video, curve)
        if progress:
            progress(len(scorer.clips))
    return {"num_clips": len(scorer.clips), "missing": missing, "mean": scorer.summary(),
            "clips": [asdict(c) for c in scorer.clips]}


def format_markdown(report: dict, *, title: str) -> str:
    """Scoring results as Markdown: the means, then one row per clip."""
    mean = report["mean"]
    missing = f"; {len(report['missing'])} without a generated file" if report["missing"] else ""
    embedder = f" FD and KL: {report['embedder']}." if "embedder" in report else ""
    lines = [f"# {title}", "", f"{report['num_clips']} clips{missing}.{embedder}", "",
             "| " + " | ".join(heading + arrow(up) for heading, up in METRICS.values()) + " |",
             "|" + " --- |" * len(METRICS),
             "| " + " | ".join(format_cell(mean[name]) for name in METRICS) + " |", "",
             "| clip | " + " | ".join(h for name, (h, _) in METRICS.items() if name != "fd") + " |",
             "| --- |" + " --- |" * (len(METRICS) - 1)]
    for clip in report["clips"]:
        lines.append(f"| {clip['id']} | " + " | ".join(format_cell(clip[name]) for name in METRICS if name != "fd")
                     + " |")
    return "\n".join(lines) + "\n"


def arrow(higher_is_better: bool | None) -> str:
    """The heading's mark: ↑ (higher is better), ↓ (lower is better), nothing for a baseline."""
    return "" if higher_is_better is None else " ↑" if higher_is_better else " ↓"


def format_cell(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def write_report(report: dict, output: str | os.PathLike, *, name: str, markdown: str) -> tuple[Path, Path]:
    """Write `report` as `<output>/<name>.json` and `markdown` as `<output>/<name>.md` (atomically); NaN is
    written as null so that any JSON reader takes the file."""
    output = Path(output).expanduser()
    paths = output / f"{name}.json", output / f"{name}.md"
    with atomic_write_path(paths[0]) as tmp:
        tmp.write_text(json.dumps(_nan_to_none(report), indent=1) + "\n", encoding="utf-8")
    with atomic_write_path(paths[1]) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return paths


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
