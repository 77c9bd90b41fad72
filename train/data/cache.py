"""`triergon data cache`: what the frozen encoders give, computed once per clip, so the DiT and T_LUFS
trainers run without the encoders loaded.

One safetensors file per clip in `CACHE/items/` with `latent_mean`, `latent_std` ([latent_dim, frames], the
VAE posterior, so training samples a fresh latent per step), `lufs` ([2, frames] measured LUFS at 6 frames/s),
`text`, `audio`, `video` ([M, D] LanguageBind embeddings, when encoders are given) and `dinov2`
([frames, feature_dim] at 6 fps, when a DINOv2 model is given); `CACHE/index.json` lists the clips and names
the VAE and encoders. A cache run that was stopped resumes: finished items are kept.

After a new VAE, only the latents change: `embeddings_from` (`triergon data cache --embeddings-from OLD`) copies
the embeddings and DINOv2 features of an earlier cache of the same shards and encodes only the latents (the
encoders need not be at hand; with the demo's small towers the VAE encoder is most of the time anyway).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...triergon_core._fs import atomic_write_path
from ...triergon_core.audio import load_audio
from ...triergon_core.lufs_curve import LufsCurve
from .shards import ShardIndex

logger = logging.getLogger(__name__)

INDEX = "index.json"
EMBEDDING_KEYS = ("text", "audio", "video", "dinov2")  # what does not depend on the VAE


@torch.inference_mode()
def build_cache(shards: str | os.PathLike, output: str | os.PathLike, *, vae, encoders=None, features=None,
                identity: dict[str, str] | None = None, device: torch.device | str = "cpu",
                progress: Callable[[int, int], None] | None = None,
                embeddings_from: str | os.PathLike | None = None) -> Path:
    """Compute the cache of every sample in the `shards` folder into `output`.

    Args:
        shards: folder of shards from `triergon data pack`.
        output: cache folder (created; finished items of an earlier run are kept).
        vae: the frozen `OobleckVAE` whose latents the DiT will learn.
        encoders: condition encoders (`ConditionEncoders`) for text / audio / video embeddings, or None.
        features: DINOv2 `FrameFeatures` for T_LUFS, or None.
        identity: names of the weights used (stored in the index, checked by the trainers' logs).
        device: where the models run.
        progress: called as progress(done, total).
        embeddings_from: an earlier cache of the same shards: its embeddings and features are copied (and its
            encoders' names kept in the index) instead of computed; `encoders` and `features` must then be None.
    """
    index = ShardIndex(shards)
    out = Path(output).expanduser()
    previous = None
    if embeddings_from is not None:
        if encoders is not None or features is not None:
            raise ValueError("embeddings_from copies the embeddings and features of another cache: give no encoders "
                             "or features with it")
        previous = CacheIndex(embeddings_from)
        if previous.folder.resolve() == out.resolve():
            raise ValueError(f"embeddings_from must be another cache than the output {out}")
        identity = {**(identity or {}), **{k: v for k, v in previous.identity.items() if k != "vae"},
                    "embeddings_from": str(previous.folder.resolve())}
        previous_keys = {r["key"] for r in previous.rows}
        missing = [k for k in index.keys if k not in previous_keys]
        if missing:
            raise ValueError(f"{previous.folder} is not a cache of these shards: it lacks {len(missing)} of their "
                             f"clips (e.g. {missing[0]!r})")
    (out / "items").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in index:
        key, meta = index.keys[i], index.meta(i)
        path = out / "items" / f"{key}.safetensors"
        caption = index.read(i, "txt").decode("utf-8")
        if not path.is_file():
            audio = load_audio(index.read(i, "flac"))
            item = _encode(audio, caption, index, i, vae=vae, encoders=encoders, features=features, device=device)
            if previous is not None:
                item.update({k: v for k, v in previous.item_by_key(key).items() if k in EMBEDDING_KEYS})
            with atomic_write_path(path) as tmp_path:
                save_file({k: v.float().contiguous().cpu() for k, v in item.items()}, tmp_path)
        rows.append({"key": key, "seconds": meta["seconds"], "split": meta.get("split", "train"), "caption": caption})
        if progress is not None:
            progress(i + 1, len(index))
    with atomic_write_path(out / INDEX) as tmp_path:
        tmp_path.write_text(json.dumps({"items": rows, "identity": identity or {},
                                        "latent_dim": vae.config.latent_dim}, indent=1))
    return out


def _encode(audio, caption, index, i, *, vae, encoders, features, device) -> dict[str, torch.Tensor]:
    dist = vae.encode_distribution(audio[None].to(device))
    item = {"latent_mean": dist.mean[0], "latent_std": dist.stdev[0], "lufs": LufsCurve.measure(audio).values}
    if encoders is not None:
        item["text"] = encoders.encode_text([caption])[0]
        item["audio"] = encoders.encode_audio(audio[None])[0]
        item["video"] = encoders.encode_video(torch.from_numpy(index.array(i, "vframes.npy"))[None])[0]
    if features is not None:
        item["dinov2"] = features(torch.from_numpy(index.array(i, "frames.npy")))
    return item


class CacheIndex:
    """Read access to a cache folder: `len`, and `item(i)` -> the tensors of clip i (optionally one split)."""

    def __init__(self, folder: str | os.PathLike, *, split: str | None = None) -> None:
        self.folder = Path(folder).expanduser()
        index = self.folder / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"{self.folder} is not a cache folder (no {INDEX}): run `triergon data cache`")
        data = json.loads(index.read_text())
        self.identity = data.get("identity", {})
        self.rows = [r for r in data["items"] if split is None or r["split"] == split]

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, i: int) -> dict[str, torch.Tensor]:
        return self.item_by_key(self.rows[i]["key"])

    def item_by_key(self, key: str) -> dict[str, torch.Tensor]:
        return load_file(self.folder / "items" / f"{key}.safetensors")


def latent_stats(folder: str | os.PathLike, *, split: str | None = None) -> dict[str, float]:
    """Statistics of a cache's latents: clip count, seconds of audio, the spread of the posterior means
    (`mean_std`, over all channels and frames: the `latent_scale` that gives the DiT unit-scale data), their
    average (`mean_mean`) and the average posterior standard deviation (`posterior_std`)."""
    index = CacheIndex(folder, split=split)
    if not len(index):
        raise ValueError(f"{index.folder} holds no clips" + (f" of split {split!r}" if split else ""))
    n, total, squares, posterior, seconds = 0, 0.0, 0.0, 0.0, 0.0
    for i in range(len(index)):
        item = index.item(i)
        mean, std = item["latent_mean"].double(), item["latent_std"].double()
        n += mean.numel()
        total += float(mean.sum())
        squares += float((mean ** 2).sum())
        posterior += float(std.sum())
        seconds += float(index.rows[i]["seconds"])
    avg = total / n
    return {"clips": len(index), "seconds": seconds, "mean_mean": avg,
            "mean_std": max(squares / n - avg ** 2, 0.0) ** 0.5, "posterior_std": posterior / n}
