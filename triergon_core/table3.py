"""The paper's Table 3 in miniature: the eight condition sets on a test split, each scored with FD, KL,
AV-Align and LUFS tracking (`triergon eval --table3`).

Rows: e_V alone, + text (the clip's caption), + reference audio, + both; each once with E_L predicted by
T_LUFS from the video and once with the ground-truth E_L measured from the clip's own audio. The reference
audio is, as in the paper ("ground truth e_A"), the test clip's own audio: it shows what a one-shot example
adds, and it is an upper bound, since the example is the very sound being scored against. Every row of a
clip uses the same seed (seed + the clip's index in the split), so rows differ only by their conditions.

Nothing is lost on interruption: each generated clip is written (atomically) to `audio/<row>/<id>.wav`, and
the two curves of each clip to `curves/`, as soon as they exist; a second run with the same output folder
and settings skips them (a larger --limit adds clips: clip i's seed does not depend on the count). The scores
are computed from those files at the end, so a run can also be scored again with other embedders.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._fs import atomic_write_path
from .audio import write_audio
from .evaluation import METRICS, arrow, format_cell, reference_audio, score_folder
from .generate import fit_lufs, generate, prepare_conditions, resolve_seconds
from .lufs_curve import LufsCurve
from .model import TriErgon
from .video import probe_video

if TYPE_CHECKING:
    from ..train.data.manifest import Clip

logger = logging.getLogger(__name__)

__all__ = ["ROWS", "Table3Row", "format_table3", "run_table3"]

LUFS_SOURCES = {"predicted": "T_LUFS on the video", "measured": "measured from the clip's own audio"}


@dataclass(frozen=True)
class Table3Row:
    """One condition set: the video always, text and reference audio optionally, E_L predicted or measured."""

    text: bool
    audio: bool
    lufs: str  # "predicted" or "measured"

    @property
    def key(self) -> str:
        """A short name for folders and JSON: v, vt, va, vta, then -pred / -gt."""
        return "v" + "t" * self.text + "a" * self.audio + ("-pred" if self.lufs == "predicted" else "-gt")


# The paper's order: the four condition sets with predicted E_L, then the same four with ground-truth E_L.
ROWS = tuple(Table3Row(text=text, audio=audio, lufs=lufs) for lufs in LUFS_SOURCES
             for text, audio in ((False, False), (True, False), (False, True), (True, True)))


def run_table3(model: TriErgon, clips: Sequence[Clip], *, output: str | os.PathLike, features, predictor, embedder,
               kl_embedder=None, encoders=None, steps: int, cfg_scale: float, sampler: str,
               seconds: float | None = None, seed: int = 0, dtype: str | None = None, settings: dict | None = None,
               progress: Callable[[], None] | None = None) -> dict:
    """Generate the eight rows for every clip (or reuse what an earlier run left) and score them.

    Args:
        model: the Tri-Ergon model.
        clips: the test clips (`evaluation.load_clips`).
        output: folder for `audio/`, `curves/`, `run.json`; the caller writes the tables there.
        features, predictor: DINOv2 frame features and T_LUFS (`lufs_predictor.load_dinov2`, `load_predictor`).
        embedder, kl_embedder: the audio embedders for FD and KL (see `evaluation.score_folder`).
        encoders: condition encoders (default: the preset's own).
        steps, cfg_scale, sampler, dtype: sampling settings (see `generate`).
        seconds: generate the first `seconds` of each clip (its video's and audio's start; a shorter clip whole);
            None: each whole clip.
        seed: clip i of the split is generated with seed + i in every row.
        settings: what else identifies the generated audio (e.g. the checkpoint); stored with the sampling
            settings in `run.json`, and a later run in the same folder must have the same ones.
        progress: called once per (clip, row) done or skipped.

    Returns:
        {"settings": ..., "rows": [{"key", "text", "audio", "lufs", "mean": {...}, "clips": [...]}]}.
    """
    output = Path(output).expanduser()
    settings = {"steps": steps, "cfg_scale": cfg_scale, "sampler": sampler, "seconds": seconds, "seed": seed,
                "dtype": dtype, **(settings or {})}
    _claim(output, settings)
    rate = model.config.sequence.sample_rate
    for index, clip in enumerate(clips):
        todo = [row for row in ROWS if not _audio_path(output, row, clip.id).is_file()]
        if todo:  # every input is encoded once per clip; each row leaves some of them out
            shorter = None if seconds is None else min(seconds, probe_video(clip.video).duration)  # a short clip whole
            length = resolve_seconds(model.config, shorter, clip.video)
            curves = _curves(output, clip, length, features=features, predictor=predictor)
            reference = reference_audio(clip, round(length * rate)) if any(r.audio for r in todo) else None
            full = prepare_conditions(model, seconds=length, text=clip.caption, audio=reference, video=clip.video,
                                      encoders=encoders)
        for row in ROWS:
            if row in todo:
                lufs = fit_lufs(model.config, curves[row.lufs], length, "pad_or_trim").to(full.seconds_total.device)
                dropped = [name for name, keep in (("text", row.text), ("audio", row.audio)) if not keep]
                conditions = replace(full.without(*dropped), lufs=lufs)
                audio = generate(model, conditions=conditions, seed=seed + index, steps=steps, cfg_scale=cfg_scale,
                                 sampler=sampler, dtype=dtype)
                write_audio(_audio_path(output, row, clip.id), audio[0].cpu(), sample_rate=rate, bits=32)
            if progress:
                progress()
    rows = []
    for row in ROWS:
        report = score_folder(output / "audio" / row.key, clips, embedder=embedder, kl_embedder=kl_embedder,
                              requested=lambda clip_id, row=row: LufsCurve.load(_curve_path(output, clip_id,
                                                                                            row.lufs)))
        rows.append({"key": row.key, "text": row.text, "audio": row.audio, "lufs": row.lufs, **report})
    return {"settings": {"num_clips": len(clips), **settings}, "rows": rows}


def _audio_path(output: Path, row: Table3Row, clip_id: str) -> Path:
    return output / "audio" / row.key / f"{clip_id}.wav"


def _curve_path(output: Path, clip_id: str, source: str) -> Path:
    return output / "curves" / f"{clip_id}.{source}.json"


def _curves(output: Path, clip: Clip, seconds: float, *, features, predictor) -> dict[str, LufsCurve]:
    """The clip's predicted and measured curves, from `curves/` when an earlier run wrote them."""
    from .lufs_predictor import predict_lufs

    curves = {}
    for source in LUFS_SOURCES:
        path = _curve_path(output, clip.id, source)
        if path.is_file():
            curves[source] = LufsCurve.load(path)
            continue
        if source == "predicted":
            curve = predict_lufs(clip.video, features=features, predictor=predictor)
        else:
            curve = LufsCurve.measure(reference_audio(clip))
        # the curve the rows are generated with: the first `seconds` of the clip
        curves[source] = curve.fit_duration(seconds, policy="pad_or_trim")
        curves[source].save(path)
    return curves


def _claim(output: Path, settings: dict) -> None:
    """Record the run's settings in `run.json`, or check them against an earlier run's in the same folder."""
    path = output / "run.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
        if changed:
            raise ValueError(f"{str(output)!r} holds a Table 3 run with other settings ({', '.join(changed)}); "
                             "give another -o folder, or delete it to start again")
        logger.info("resuming the run in %s", output)
        return
    with atomic_write_path(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def format_table3(result: dict) -> str:
    """The table as Markdown: one row per condition set, with what produced it underneath."""
    s = result["settings"]
    columns = [name for name in METRICS if name in ("fd", "kl", "av_align", "av_align_shuffled", "lufs_mae")]
    yes, no = "✓", "✗"
    lines = ["# Table 3 (in miniature): combinations of conditions", "",
             "| e_V | e_L (text) | e_A (reference audio) | E_L | "
             + " | ".join(METRICS[c][0] + arrow(METRICS[c][1]) for c in columns) + " |",
             "| --- | --- | --- | --- |" + " --- |" * len(columns)]
    for row in result["rows"]:
        lines.append(f"| {yes} | {yes if row['text'] else no} | {yes if row['audio'] else no} | "
                     f"{'T_LUFS' if row['lufs'] == 'predicted' else 'ground truth'} | "
                     + " | ".join(format_cell(row["mean"][c]) for c in columns) + " |")
    length = "each whole clip" if s["seconds"] is None else f"the first {s['seconds']:g} s of each clip"
    lines += ["", f"{s['num_clips']} test clips ({length}), {s['steps']} {s['sampler']} steps, CFG scale "
              f"{s['cfg_scale']:g}, seed {s['seed']} (+ the clip's index, the same in every row); checkpoint: "
              f"{s.get('checkpoint') or 'none (random weights)'}; embedders: {s.get('embedder', '?')}.",
              "LUFS MAE: the generated audio against the E_L it was asked to follow (LU, frames above -60 LUFS). "
              "AV-Align, shuffled video: the same audio against the clip's frames in a random order (the baseline). "
              "The reference audio is the clip's own (the paper's ground-truth e_A)."]
    return "\n".join(lines) + "\n"
