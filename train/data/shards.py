"""WebDataset-format tar shards: writing, and random access by sample for exact, resumable epochs.

A sample is a group of tar members `KEY.EXT` sharing the key (WebDataset's convention: the key is the
name up to its first dot). Shards are written with `webdataset.TarWriter` when the package is installed,
else with `tarfile` in the same format. Training reads them through `ShardIndex`, which maps every sample
to its members' byte ranges, so a data set index reads one sample without streaming the shard (what exact
no-repeat / no-drop sampling over ranks and workers needs).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SHARD_PATTERN = "shard-{:06d}.tar"


def safe_key(text: str) -> str:
    """A sample key without dots or path separators (WebDataset splits names at the first dot)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or "_"


class ShardWriter:
    """Writes samples (dicts of extension -> bytes) into numbered shards of at most `max_samples` each."""

    def __init__(self, folder: str | os.PathLike, *, max_samples: int = 1000) -> None:
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_samples = max_samples
        self.shard, self.count, self.paths = -1, 0, []
        self._tar = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._tar is None or self.count >= self.max_samples:
            self._next()
        self._tar.write(key, members)
        self.count += 1

    def _next(self) -> None:
        self.close()
        self.shard += 1
        self.count = 0
        path = self.folder / SHARD_PATTERN.format(self.shard)
        self.paths.append(path)
        self._tar = _TarSink(path)

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _TarSink:
    """One shard, written under a temporary name and renamed when complete (a killed pack leaves no torn shard)."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        try:
            import webdataset

            self._wds = webdataset.TarWriter(str(self.tmp))
            self._tar = None
        except ImportError:
            self._wds, self._tar = None, tarfile.open(self.tmp, "w")  # noqa: SIM115 - closed in close()

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._wds is not None:
            self._wds.write({"__key__": key, **members})
            return
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o444
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        (self._wds or self._tar).close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)


class ShardIndex:
    """Random access to the samples of every `*.tar` shard in a folder (sorted by name, then tar order)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        paths = sorted(self.folder.glob("*.tar"))
        if not paths:
            raise FileNotFoundError(f"no .tar shards in {self.folder}: write them with `triergon data pack`")
        self.keys: list[str] = []
        self._members: list[dict[str, tuple[Path, int, int]]] = []
        for path in paths:
            with tarfile.open(path) as tar:
                by_key: dict[str, dict[str, tuple[Path, int, int]]] = {}
                for m in tar.getmembers():
                    if m.isfile():
                        key, _, ext = m.name.partition(".")
                        by_key.setdefault(key, {})[ext] = (path, m.offset_data, m.size)
            for key, members in by_key.items():
                self.keys.append(key)
                self._members.append(members)

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int, ext: str) -> bytes:
        path, offset, size = self._members[index][ext]
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def has(self, index: int, ext: str) -> bool:
        return ext in self._members[index]

    def meta(self, index: int) -> dict:
        return json.loads(self.read(index, "json"))

    def array(self, index: int, ext: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read(index, ext)), allow_pickle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()
