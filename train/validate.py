"""Validation of a VAE run: reconstruction scores of its checkpoints on whole clips of a shard folder.

`python -m triergon.train.validate RUN_DIR --data SHARDS` scores every checkpoint of the run that is not yet in
`RUN_DIR/validation.jsonl` (one line per checkpoint: step, multi-resolution STFT distance, per-window loudness
error and bias), so that it can run beside a training run and be repeated; the lines are the validation curve
of the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..triergon_core.audio import load_audio
from ..triergon_core.vae import OobleckVAE
from .checkpointing import CheckpointManager, read_config
from .config import TrainConfig
from .data.shards import ShardIndex
from .export import _weights
from .losses import window_loudness

logger = logging.getLogger(__name__)

SILENCE = -60.0  # windows of the input below this loudness are left out of the loudness error


@dataclass(frozen=True)
class ReconstructionScores:
    """Args:
        mrstft: auraloss's multi-resolution STFT distance (spectral convergence + log magnitude, FFT sizes
            2048/1024/512), per channel, averaged over clips.
        loudness_mae: mean |reconstruction - input| of the per-channel K-weighted loudness of each 1/6 s
            window (LU), over windows where the input is above -60 LUFS.
        loudness_bias: the same difference, signed (negative: reconstructions too quiet).
        clips: how many clips were scored.
    """

    mrstft: float
    loudness_mae: float
    loudness_bias: float
    clips: int


@torch.inference_mode()
def reconstruction_scores(vae: OobleckVAE, clips: list[torch.Tensor]) -> ReconstructionScores:
    """Encode (posterior mean) and decode each clip [C, N] and compare the result with the input."""
    from auraloss.freq import MultiResolutionSTFTLoss

    distance = MultiResolutionSTFTLoss()
    stft, diffs = [], []
    for audio in clips:
        real = audio[None].float()
        fake = vae.decode(vae.encode(real, sample=False), num_samples=real.shape[-1])
        stft.append(float(distance(fake.reshape(-1, 1, real.shape[-1]), real.reshape(-1, 1, real.shape[-1]))))
        lr, lf = window_loudness(real), window_loudness(fake)
        diffs.append((lf - lr)[lr > SILENCE])
    d = torch.cat(diffs)
    return ReconstructionScores(mrstft=sum(stft) / len(stft), loudness_mae=float(d.abs().mean()),
                                loudness_bias=float(d.mean()), clips=len(clips))


def load_vae(checkpoint: Path, *, ema: bool = True) -> tuple[OobleckVAE, int]:
    """The VAE (EMA weights by default) of one checkpoint folder of a VAE run, and its step."""
    from ..triergon_core.presets import get_preset

    config = TrainConfig.from_dict(read_config(checkpoint))
    if config.trainer != "vae":
        raise ValueError(f"{checkpoint} is a checkpoint of a {config.trainer} run, not of a VAE run")
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
    vae = OobleckVAE(config=get_preset(config.model.preset).vae)
    vae.load_state_dict(_weights(state["parts"]["vae"], ema=ema))
    return vae.eval(), int(state["step"])


def read_clips(shards: str | os.PathLike, *, limit: int | None = None) -> list[torch.Tensor]:
    index = ShardIndex(shards)
    keys = list(index)[:limit]
    return [load_audio(index.read(i, "flac")) for i in keys]


def validate_run(run_dir: str | os.PathLike, shards: str | os.PathLike, *, limit: int | None = None,
                 ema: bool = True) -> list[dict]:
    """Score the run's checkpoints not yet in `validation.jsonl`, append them, and return all lines."""
    out = Path(run_dir) / "validation.jsonl"
    lines = [json.loads(x) for x in out.read_text().splitlines()] if out.is_file() else []
    done = {x["step"] for x in lines}
    clips = None
    for path in CheckpointManager(run_dir, rank=0, world_size=1).all():
        vae, step = load_vae(path, ema=ema)
        if step in done:
            continue
        clips = clips if clips is not None else read_clips(shards, limit=limit)
        row = {"step": step, **asdict(reconstruction_scores(vae, clips))}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        lines.append(row)
        logger.info("step %d: %s", step, row)
    return sorted(lines, key=lambda x: x["step"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m triergon.train.validate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a VAE run folder")
    parser.add_argument("--data", required=True, help="shard folder of the validation split")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N clips")
    parser.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for row in validate_run(args.run_dir, args.data, limit=args.limit, ema=not args.raw):
        sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
