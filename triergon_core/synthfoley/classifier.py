"""A small audio classifier of the SynthFoley scene kinds: the embedder behind FD and KL on SynthFoley.

A CNN on log-mel spectrograms (16 kHz mono, 64 Kaldi mel bands) with one sigmoid per kind, since several
scenes share a clip (multi-label). Its clip embedding is the time mean and max of the last block's channels
(frequency averaged), so it takes clips of any length. `train_classifier` is deterministic from its seed;
`load_classifier` reads the safetensors file it writes (config in the metadata). The shipped weights are
`weights/synthfoley-classifier.safetensors`, trained on the train split of a 400-clip 5 s SynthFoley set.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import load_audio
from ..audio_embedders import AudioEmbedder, load_weights, mono_batch
from ..checkpoint import CheckpointError, read_state_dict, write_module
from ..languagebind_audio_features import mel_banks
from .clip import SCENE_KINDS
from .dataset import MANIFEST, METADATA

logger = logging.getLogger(__name__)

__all__ = ["SHIPPED_WEIGHTS", "ClassifierConfig", "LabelledAudio", "SynthFoleyClassifier", "kind_accuracy",
           "load_classifier", "read_split", "train_classifier"]

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "synthfoley-classifier.safetensors"
FORMAT = "triergon-synthfoley-classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """The classifier's shape. `kinds` are its labels, in output order."""

    kinds: tuple[str, ...] = SCENE_KINDS
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    mels: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)

    @property
    def dim(self) -> int:
        return 2 * self.channels[-1]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClassifierConfig:
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


@dataclass(frozen=True)
class LabelledAudio:
    """One training or validation clip: audio `[C, N]` at `sample_rate` and the scene kinds it contains."""

    audio: torch.Tensor
    sample_rate: int
    kinds: tuple[str, ...] = field(default=())


class SynthFoleyClassifier(AudioEmbedder):
    """Log-mel CNN: embeddings `[B, 2 * channels[-1]]` and per-kind probabilities `[B, len(kinds)]`."""

    def __init__(self, *, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.sample_rate, self.dim, self.labels = config.sample_rate, config.dim, config.kinds
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer("banks", mel_banks(config.mels, config.n_fft, config.sample_rate), persistent=False)
        self.norm = nn.BatchNorm2d(1)
        blocks, width = [], 1
        for c in config.channels:
            blocks += [nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            width = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(config.dim, len(config.kinds))

    def features(self, mono: torch.Tensor) -> torch.Tensor:
        """Mono `[B, N]` at `sample_rate` -> log-mel `[B, 1, mels, frames]` (natural log of power, floored)."""
        c = self.config
        if mono.shape[-1] < c.n_fft:
            raise ValueError(f"a clip needs at least {c.n_fft / c.sample_rate:.3f} s of audio, got "
                             f"{mono.shape[-1] / c.sample_rate:.3f} s")
        spec = torch.stft(mono, c.n_fft, hop_length=c.hop, window=self.window, return_complex=True)
        return (self.banks @ spec.abs().pow(2) + 1e-8).log()[:, None]

    def classify(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel `[B, 1, mels, frames]` -> (embeddings `[B, D]`, logits `[B, K]`)."""
        x = self.blocks(self.norm(feats)).mean(2)
        emb = torch.cat([x.mean(-1), x.amax(-1)], dim=1)
        return emb, self.head(emb)

    def forward(self, mono: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb, logits = self.classify(self.features(mono))
        return emb, logits.sigmoid()


def read_split(root: str | os.PathLike, split: str | None = "train") -> list[LabelledAudio]:
    """The clips of one split of a SynthFoley set written by `triergon synth` (its `manifest.jsonl` and
    `scenes.jsonl`), with their scene kinds as labels. Audio comes from the FLAC files (the MP4 when a row
    has none). `split` None: every clip.

    Raises:
        FileNotFoundError: no manifest or scene list in `root`.
        ValueError: a split with no clips.
    """
    root = Path(root)
    for name in (MANIFEST, METADATA):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} holds no {name}; give the folder `triergon synth -o` wrote")
    kinds = {m["id"]: tuple(s["kind"] for s in m["scenes"])
             for m in map(json.loads, (root / METADATA).read_text(encoding="utf-8").splitlines())}
    rows = [json.loads(line) for line in (root / MANIFEST).read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if split is None or r.get("split") == split]
    if not rows:
        raise ValueError(f"{root / MANIFEST} lists no clip in split {split!r}")
    return [LabelledAudio(load_audio(root / r.get("audio", r["video"]), target_rate=44100), 44100, kinds[r["id"]])
            for r in rows]


def train_classifier(
    clips: Sequence[LabelledAudio],
    out_path: str | os.PathLike | None = None,
    *,
    config: ClassifierConfig | None = None,
    steps: int = 800,
    seed: int = 0,
    batch_size: int = 16,
    lr: float = 3e-3,
    crop_seconds: float = 3.0,
    gain_db: float = 12.0,
    threads: int = 1,
) -> SynthFoleyClassifier:
    """Train a classifier on labelled clips, on the CPU, deterministically from `seed`.

    Each step draws `batch_size` clips, a random `crop_seconds` window of each (the whole clip when shorter)
    and a random gain within +-`gain_db` (generated audio need not match the training loudness), and minimises
    the per-kind binary cross-entropy with AdamW and a cosine learning-rate decay.

    Args:
        clips: training clips; their kinds must be among `config.kinds`.
        out_path: where to save the weights (`.safetensors`, config in the metadata); None: not saved.
        config: the network (None: `ClassifierConfig()`, all five SynthFoley kinds).
        steps, seed, batch_size, lr: the optimisation.
        crop_seconds, gain_db: the augmentation.
        threads: torch's CPU threads while training (restored afterwards). One by default: convolutions this
            small gain nothing from more (on a busy machine they are many times slower), and the result then
            does not depend on the machine's core count.

    Returns:
        the trained classifier, in eval mode, on the CPU.
    """
    config = config or ClassifierConfig()
    if not clips:
        raise ValueError("train_classifier needs at least one clip")
    if steps < 1 or batch_size < 1 or threads < 1:
        raise ValueError(f"steps, batch_size and threads must be at least 1, got {steps}, {batch_size}, {threads}")
    unknown = sorted({k for c in clips for k in c.kinds} - set(config.kinds))
    if unknown:
        raise ValueError(f"clips hold kinds {unknown} that the classifier does not have ({', '.join(config.kinds)})")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
            model = _train(clips, config, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                           crop_seconds=crop_seconds, gain_db=gain_db)
    finally:
        torch.set_num_threads(previous_threads)
    if out_path is not None:
        write_module(model, out_path, metadata={"format": FORMAT, "config": config.to_json(),
                                                "steps": str(steps), "seed": str(seed)})
    return model


def _train(clips: Sequence[LabelledAudio], config: ClassifierConfig, *, steps: int, seed: int, batch_size: int,
           lr: float, crop_seconds: float, gain_db: float) -> SynthFoleyClassifier:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SynthFoleyClassifier(config=config)
    with torch.no_grad():  # log-mel once per clip; a gain is a constant shift of the log power
        feats = [model.features(mono_batch(c.audio[None], c.sample_rate, config.sample_rate))[0] for c in clips]
    targets = torch.tensor([[float(k in c.kinds) for k in config.kinds] for c in clips])
    crop = max(1, round(crop_seconds * config.sample_rate / config.hop))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    for step in range(steps):
        pick = torch.randint(len(clips), (batch_size,), generator=gen)
        width = min(crop, *(feats[i].shape[-1] for i in pick.tolist()))
        batch = []
        for i in pick.tolist():
            start = int(torch.randint(feats[i].shape[-1] - width + 1, (1,), generator=gen))
            shift = (torch.rand((), generator=gen) * 2 - 1) * gain_db * math.log(10) / 10  # dB of power
            batch.append(feats[i][..., start:start + width] + shift)
        _, logits = model.classify(torch.stack(batch))
        loss = F.binary_cross_entropy_with_logits(logits, targets[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            logger.info("step %d/%d: loss %.4f", step + 1, steps, loss.item())
    return model.eval()


def kind_accuracy(model: SynthFoleyClassifier, clips: Sequence[LabelledAudio], *,
                  threshold: float = 0.5) -> dict[str, float]:
    """Per-kind accuracy of the thresholded probabilities (kind present or not) over `clips`."""
    if not clips:
        raise ValueError("kind_accuracy needs at least one clip")
    probs = torch.cat([model.embed(c.audio[None], c.sample_rate)[1] for c in clips])
    truth = torch.tensor([[k in c.kinds for k in model.labels] for c in clips])
    hits = ((probs > threshold) == truth).float().mean(0)
    return {k: float(v) for k, v in zip(model.labels, hits, strict=True)}


def load_classifier(path: str | os.PathLike | None = None) -> SynthFoleyClassifier:
    """Load a classifier written by `train_classifier` (None: the shipped weights), in eval mode on the CPU.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a SynthFoley classifier file, or weights that do not fit its config.
    """
    path = Path(SHIPPED_WEIGHTS if path is None else path)
    meta = read_state_dict(path)[1]
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path} is not a SynthFoley classifier (no {FORMAT!r} config in its metadata); "
                              "train one with train_classifier")
    model = SynthFoleyClassifier(config=ClassifierConfig.from_json(meta["config"]))
    return load_weights(model, path, what="a SynthFoley classifier of the config in its metadata")
