"""A tiny training data set for the trainer tests: 5 short clips -> shards -> a cache (tiny preset, tiny
DINOv2), built once per test session."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from _videos import write_video

from triergon.triergon_core.audio import write_audio

CLIP_SECONDS = (1, 2, 1, 2, 1)


def write_clips(folder: Path) -> Path:
    """Videos with separate stereo tone tracks (the level rises over the clip), and a manifest with one bad row."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, seconds in enumerate(CLIP_SECONDS):
        write_video(folder / f"v{i}.mp4", fps=12, num_frames=12 * seconds, size=(32, 48))
        t = torch.arange(44100 * seconds) / 44100
        ramp = t / t.max()
        audio = torch.stack([0.3 * ramp * torch.sin(2 * math.pi * (220 + 55 * i) * t),
                             0.2 * torch.sin(2 * math.pi * 330 * t)])
        write_audio(folder / f"a{i}.wav", audio)
        rows.append({"video": f"v{i}.mp4", "audio": f"a{i}.wav", "caption": f"tone number {i}", "split": "train"})
    rows.append({"video": "missing.mp4", "caption": "a clip whose video is missing", "id": "missing"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def build(folder: Path, dinov2_dir: Path) -> dict[str, Path]:
    from triergon.train.data.cache import build_cache
    from triergon.train.data.pack import pack_manifest
    from triergon.triergon_core.encoders import build_encoders
    from triergon.triergon_core.lufs_predictor import load_dinov2
    from triergon.triergon_core.model import build_model

    manifest = write_clips(folder / "clips")
    report = pack_manifest(manifest, folder / "shards", short_side=32, max_samples=3)
    model = build_model("tiny", seed=0)
    build_cache(folder / "shards", folder / "cache", vae=model.vae, encoders=build_encoders(model.config.conditioning),
                features=load_dinov2(dinov2_dir))
    return {"manifest": manifest, "shards": folder / "shards", "cache": folder / "cache", "report": report}
