"""Embedding cache: re-running on the same inputs does not re-encode them.

Keys are the SHA-256 of the encoder's identity, the modality and the input's content (the text's UTF-8
bytes, the audio or frame tensor's dtype, shape and bytes, a video file's bytes and the span of it encoded),
so a changed input or another encoder never hits a stale entry. Entries live in memory (bounded, least
recently used first out) and, when a folder is given, on disk as one safetensors file per entry, shared
across processes and runs (a ComfyUI graph re-executes often).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ._fs import atomic_write_path
from .encoders import ConditionEncoders

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def tensor_digest(x: torch.Tensor) -> bytes:
    """Content hash of a tensor (dtype, shape and values)."""
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def file_digest(path: str | os.PathLike) -> bytes:
    """Content hash of a file, read in chunks (memory stays flat for large videos)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


class EmbeddingCache:
    """A content-addressed store of embeddings: bounded in memory, optionally persisted in `folder`.

    Args:
        folder: where entries are kept across runs (created if missing); None keeps them in memory only.
        max_items: entries kept in memory.
    """

    def __init__(self, folder: str | os.PathLike | None = None, *, max_items: int = 256) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(identity: str, modality: str, digest: bytes) -> str:
        return hashlib.sha256(identity.encode() + b"\0" + modality.encode() + b"\0" + digest).hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                value = load_file(path)["embedding"]
            except Exception as e:  # a damaged entry is recomputed, never fatal
                logger.warning("ignoring unreadable cache entry %s: %s", path, e)
            else:
                self._remember(key, value)
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().cpu().contiguous()
        self._remember(key, value)
        path = self._path(key)
        if path is not None:
            with atomic_write_path(path) as tmp:
                save_file({"embedding": value}, tmp)

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.safetensors"


class CachedEncoders:
    """Condition encoders behind an `EmbeddingCache`, item by item (a batch mixes hits and misses).

    Args:
        encoders: the encoders to wrap.
        identity: names the encoders and their weights (e.g. "languagebind:/models/lb:<config hash>"); part
            of every key, so two encoder sets never share entries.
        cache: the store (default: a new in-memory cache).
    """

    def __init__(self, encoders: ConditionEncoders, *, identity: str, cache: EmbeddingCache | None = None) -> None:
        self.encoders, self.identity = encoders, identity
        self.cache = cache if cache is not None else EmbeddingCache()

    @property
    def embed_dim(self) -> int:
        return self.encoders.embed_dim

    def require(self, modalities: Collection[str]) -> None:
        self.encoders.require(modalities)

    def _cached(self, modality: str, digest: bytes, compute) -> torch.Tensor:
        key = EmbeddingCache.key(self.identity, modality, digest)
        value = self.cache.get(key)
        if value is None:
            value = compute()
            self.cache.put(key, value)
        return value

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.cat([self._cached("text", t.encode("utf-8"), lambda t=t: self.encoders.encode_text([t]))
                          for t in texts])

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._cached("audio", tensor_digest(a), lambda a=a: self.encoders.encode_audio(a[None]))
                          for a in audio])

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._cached("video", tensor_digest(f), lambda f=f: self.encoders.encode_video(f[None]))
                          for f in frames])

    def encode_video_file(self, path: str | os.PathLike, *, start: float = 0.0,
                          end: float | None = None) -> torch.Tensor:
        # the span is part of what is encoded: the same file cut elsewhere is another entry
        span = f"\0{float(start)!r}:{'end' if end is None else repr(float(end))}".encode()
        return self._cached("video-file", file_digest(path) + span,
                            lambda: self.encoders.encode_video_file(path, start=start, end=end))
