"""The clip manifest: JSON Lines, one clip per line.

Fields: `video` (path), `audio` (optional path; default: the video's own track), `caption` (text),
`split` (optional, default "train"), `id` (optional, default: the line number). Relative paths are relative
to the manifest's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FIELDS = {"video", "audio", "caption", "split", "id"}


@dataclass(frozen=True)
class Clip:
    id: str
    video: Path
    audio: Path | None
    caption: str
    split: str


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names the file, the line and what to change."""


def read_manifest(path: str | os.PathLike, *, split: str | None = None) -> list[Clip]:
    """Read and check a manifest; with `split`, keep only that split's clips.

    Raises:
        FileNotFoundError: no such manifest.
        ManifestError: bad JSON, a missing `video` or `caption`, an unknown field, or a repeated id.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    clips, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: each line must be a JSON object with video, caption [, audio, split]")
        unknown = set(row) - FIELDS
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(FIELDS)}")
        for key in ("video", "caption"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ManifestError(f"{where}: `{key}` must be a non-empty string")
        clip_id = str(row.get("id", f"{n:08d}"))
        if clip_id in seen:
            raise ManifestError(f"{where}: id {clip_id!r} appears twice; ids must be unique")
        seen.add(clip_id)
        audio = row.get("audio")
        clips.append(Clip(id=clip_id, video=_resolve(path, row["video"]),
                          audio=_resolve(path, audio) if audio else None, caption=row["caption"].strip(),
                          split=str(row.get("split", "train"))))
    return [c for c in clips if split is None or c.split == split]


def _resolve(manifest: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else manifest.parent / p
