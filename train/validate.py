"""Validation of VAE, DiT, T_LUFS and encoder runs: scores of each checkpoint on whole clips of the validation split.

`python -m triergon.train.validate RUN_DIR --data FOLDER` scores every checkpoint of the run that is not yet in
`RUN_DIR/validation.jsonl`, one line per checkpoint, so that it can run beside a training run and be repeated; the
lines are the validation curves of the model card. VAE runs read a shard folder and give the multi-resolution
STFT distance, the per-window loudness error and bias and the octave-band level error of the reconstructions; DiT
runs read a cache folder and give the LUFS tracking and stereo placement of audio generated under each clip's
cached conditions (its measured curve as E_L); T_LUFS runs read a cache folder (with DINOv2 features; a shard
folder for runs that trained their DINOv2, `model.dinov2`) and give the predicted curve's error in LU; encoder runs
read a shard folder and give how often a caption finds its own clip's frames and sound among all the clips' (top-1
retrieval).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..triergon_core.audio import load_audio
from ..triergon_core.config import LUFS_RATE
from ..triergon_core.lufs_curve import LufsCurve
from ..triergon_core.lufs_predictor import LufsPredictor
from ..triergon_core.vae import OobleckVAE
from .checkpointing import _NAME, CheckpointManager
from .data.cache import CacheIndex
from .data.shards import ShardIndex
from .export import load_run
from .losses import band_levels, window_loudness
from .trainers.lufs import FramesToLufs

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
        stereo_placement: share of the windows where the input's L and R differ by more than 6 LU whose
            reconstruction puts the louder side on the same side (`metrics.stereo_placement`; NaN when no clip has
            such a window): a VAE that loses the stereo image scores about 0.5 or less here.
        stereo_frames: how many windows that share counts.
        clips: how many clips were scored.
        band_error: mean |reconstruction - input| of the per-channel octave-band levels of each 1/6 s window (dB;
            `losses.band_levels`), over the bands where the input is above -60 dB, and over the bands where only the
            reconstruction is, there counting its excess over -60 dB: the spectral envelope, which a reconstruction
            with the right loudness and the wrong timbre misses, including the energy it puts where the input has
            none (a low rumble under rain).
    """

    mrstft: float
    loudness_mae: float
    loudness_bias: float
    stereo_placement: float
    stereo_frames: int
    clips: int
    band_error: float


@torch.inference_mode()
def reconstruction_scores(vae: OobleckVAE, clips: list[torch.Tensor]) -> ReconstructionScores:
    """Encode (posterior mean) and decode each clip [C, N] and compare the result with the input."""
    from auraloss.freq import MultiResolutionSTFTLoss

    from ..triergon_core.metrics import stereo_placement

    distance = MultiResolutionSTFTLoss()
    stft, diffs, placements, bands = [], [], [], []
    for audio in clips:
        real = audio[None].float()
        fake = vae.decode(vae.encode(real, sample=False), num_samples=real.shape[-1])
        stft.append(float(distance(fake.reshape(-1, 1, real.shape[-1]), real.reshape(-1, 1, real.shape[-1]))))
        lr, lf = window_loudness(real), window_loudness(fake)
        diffs.append((lf - lr)[lr > SILENCE])
        br, bf = band_levels(real), band_levels(fake)
        heard = br > SILENCE
        bands.append(torch.cat([(bf - br)[heard].abs(), (bf - SILENCE)[~heard & (bf > SILENCE)]]))
        if real.shape[1] == 2:
            placements.append(stereo_placement(LufsCurve(lr[0]), LufsCurve(lf[0])))
    d = torch.cat(diffs)
    accuracy, frames = _pooled(placements)
    return ReconstructionScores(mrstft=sum(stft) / len(stft), loudness_mae=float(d.abs().mean()),
                                loudness_bias=float(d.mean()), stereo_placement=accuracy, stereo_frames=frames,
                                clips=len(clips), band_error=float(torch.cat(bands).mean()))


def _pooled(placements: list) -> tuple[float, int]:
    """(share of hits, frames) of several clips' `StereoPlacement`s pooled over their frames (NaN, 0 without any)."""
    frames = sum(p.frames for p in placements)
    hits = sum(p.accuracy * p.frames for p in placements if p.frames)
    return (hits / frames if frames else math.nan), frames


@dataclass(frozen=True)
class PredictorScores:
    """Args:
        mae: mean |predicted - measured| loudness per channel and 1/6 s frame (LU), over frames whose measured
            loudness is above -60 LUFS (the frames `lufs_tracking` scores).
        bias: the same difference, signed.
        clips: how many clips were scored.
    """

    mae: float
    bias: float
    clips: int


@torch.inference_mode()
def predictor_scores(predictor: LufsPredictor, items: list[dict[str, torch.Tensor]]) -> PredictorScores:
    """T_LUFS's curves for cached clips (`dinov2` features [T, D], measured `lufs` [2, T] in LUFS) against the
    measured ones, in LU (the prediction's [0, 1] scale mapped back as the conditioning maps it)."""
    diffs = []
    for item in items:
        frames = min(item["dinov2"].shape[0], item["lufs"].shape[-1], predictor.config.max_frames)
        pred = predictor(item["dinov2"][:frames][None].float())[0].clamp(0, 1)
        predicted = LufsCurve.from_normalized(pred, rate=predictor.config.rate).values
        measured = item["lufs"][:, :frames].float()
        diffs.append((predicted - measured)[measured > SILENCE])
    d = torch.cat(diffs)
    return PredictorScores(mae=float(d.abs().mean()), bias=float(d.mean()), clips=len(items))


@dataclass(frozen=True)
class GenerationScores:
    """Args:
        lufs_mae: LUFS tracking error (LU) of the generated audio against the requested curve (the clip's own,
            normalised as the model reads it), per channel over frames requested above -60 LUFS, averaged over
            channels and clips.
        lufs_correlation: Pearson correlation of the same curves, averaged over the channels and clips where it
            is defined.
        stereo_placement: share of the frames with a clear requested side (|L - R| > 6 LU), over all clips,
            whose generated L - R has the same sign (NaN when no clip has such a frame).
        stereo_frames: how many frames that share counts.
        clips: how many clips were scored.
        steps, cfg_scale: the sampling settings (dpmpp-2m).
    """

    lufs_mae: float
    lufs_correlation: float
    stereo_placement: float
    stereo_frames: int
    clips: int
    steps: int
    cfg_scale: float


@torch.inference_mode()
def generation_scores(model, items: list[dict[str, torch.Tensor]], *, steps: int = 25, cfg_scale: float = 7.0,
                      seed: int = 0) -> GenerationScores:
    """Generate each cached clip (whole, with its cached text / audio / video embeddings and its measured curve as
    E_L; seed `seed` + its index) with a Tri-Ergon `model` and score the audio's loudness against that curve."""
    from ..triergon_core.conditioning import Conditions, normalize_lufs
    from ..triergon_core.generate import generate
    from ..triergon_core.metrics import lufs_tracking, stereo_placement

    maes, corrs, placements = [], [], []
    for i, item in enumerate(items):
        lufs = normalize_lufs(item["lufs"].float())
        seconds = min(float(item["seconds"]), model.config.sequence.max_seconds)
        frames = min(lufs.shape[-1], math.ceil(round(seconds * LUFS_RATE, 6)))
        embeddings = {k: item[k][None].float() for k in ("text", "audio", "video") if k in item}
        cond = Conditions(seconds_start=torch.zeros(1), seconds_total=torch.tensor([seconds]),
                          lufs=lufs[None, :, :frames], **embeddings)
        audio = generate(model, seconds=seconds, conditions=cond, steps=steps, cfg_scale=cfg_scale, seed=seed + i)[0]
        requested = LufsCurve.from_normalized(lufs[:, :frames])
        tracking = lufs_tracking(requested, audio, floor=SILENCE)
        maes += [x for x in tracking.mae if not math.isnan(x)]
        corrs += [x for x in tracking.correlation if not math.isnan(x)]
        placements.append(stereo_placement(requested, audio))
    accuracy, frames = _pooled(placements)
    return GenerationScores(lufs_mae=_mean(maes), lufs_correlation=_mean(corrs), stereo_placement=accuracy,
                            stereo_frames=frames, clips=len(items), steps=steps, cfg_scale=cfg_scale)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass(frozen=True)
class RetrievalScores:
    """Encoder runs, over the validation clips: how often a clip's caption finds its own clip's frames (text_video)
    or sound (text_audio) first among all the clips', and its frames its own sound (video_audio); chance is
    1 / clips (and clips of one scene kind look and sound alike, so 1 is out of reach)."""

    text_video: float
    text_audio: float
    video_audio: float
    clips: int


@torch.inference_mode()
def retrieval_scores(towers, items: list[dict[str, torch.Tensor]], *, batch: int = 64) -> RetrievalScores:
    """Top-1 retrieval among `items` (`EncoderInputs` items) with an encoder run's `EncoderTowers`."""
    import torch.nn.functional as F

    parts: dict[str, list[torch.Tensor]] = {"text": [], "video": [], "audio": []}
    for start in range(0, len(items), batch):
        chunk = {k: torch.stack([x[k] for x in items[start:start + batch]])
                 for k in ("input_ids", "attention_mask", "video", "audio")}
        out = towers(chunk["input_ids"], chunk["attention_mask"], chunk["video"], chunk["audio"])
        for k in parts:
            parts[k].append(F.normalize(out[k].float(), dim=-1))
    e = {k: torch.cat(v) for k, v in parts.items()}
    target = torch.arange(len(items))

    def top1(a: str, b: str) -> float:
        return float(((e[a] @ e[b].T).argmax(-1) == target).float().mean())

    return RetrievalScores(top1("text", "video"), top1("text", "audio"), top1("video", "audio"), len(items))


def read_encoder_inputs(shards: str | os.PathLike, towers, *, limit: int | None = None) -> list[dict]:
    """The encoder inputs of a shard folder's clips, as the encoder trainer prepares them."""
    from .trainers.encoders import encoder_inputs

    data = encoder_inputs(shards, towers, towers.run_config, keep=False)
    return [data.inputs(i) for i in list(data.index)[:limit]]


def load_checkpoint_of_run(run_dir: str | os.PathLike, checkpoint: Path, *, ema: bool = True) -> tuple[Any, str, int]:
    """(the VAE, the Tri-Ergon model of a DiT run or the T_LUFS; the run's trainer; the step) of one checkpoint
    folder of a run."""
    model, config, _ = load_run(run_dir, ema=ema, checkpoint=checkpoint)
    step = int(_NAME.match(checkpoint.name).group(1))
    return (model.vae if config.trainer == "vae" else model), config.trainer, step


def read_clips(shards: str | os.PathLike, *, limit: int | None = None) -> list[torch.Tensor]:
    index = ShardIndex(shards)
    return [load_audio(index.read(i, "flac")) for i in list(index)[:limit]]


def read_cache(cache: str | os.PathLike, *, limit: int | None = None,
               features: bool = True) -> list[dict[str, torch.Tensor]]:
    """The cached clips (each with its `seconds`); `features`: they must hold DINOv2 features."""
    index = CacheIndex(cache)
    items = [{**index.item(i), "seconds": torch.tensor(float(index.rows[i]["seconds"]))}
             for i in range(min(len(index), limit or len(index)))]
    if features and items and "dinov2" not in items[0]:
        raise ValueError(f"{cache} has no DINOv2 features: build it with `triergon data cache --dinov2 DIR`")
    return items


def read_frame_clips(shards: str | os.PathLike, *, limit: int | None = None) -> list[dict[str, torch.Tensor]]:
    """The packed clips' frames at 6 fps (`frames` uint8 [T, H, W, 3]) and measured loudness (`lufs` [2, T])."""
    index = ShardIndex(shards)
    return [{"frames": torch.from_numpy(index.array(i, "frames.npy")),
             "lufs": LufsCurve.measure(load_audio(index.read(i, "flac"))).values} for i in list(index)[:limit]]


@torch.inference_mode()
def frame_features(model, clips: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """`read_frame_clips`' clips with the `dinov2` features of a T_LUFS run's own DINOv2 (`FramesToLufs`)."""
    pooling = model.predictor.config.frame_pooling
    return [{"dinov2": model.features(c["frames"], pooling=pooling), "lufs": c["lufs"]} for c in clips]


def validate_run(run_dir: str | os.PathLike, data: str | os.PathLike, *, limit: int | None = None,
                 ema: bool = True, steps: int = 25, cfg_scale: float = 7.0) -> list[dict]:
    """Score the run's checkpoints not yet in `validation.jsonl`, append them, and return all lines.

    Args:
        run_dir: a VAE, DiT, T_LUFS or encoder run folder.
        data: the validation split's shard folder (VAE, encoders, T_LUFS with its DINOv2 trained), cache folder (DiT:
            made with the VAE and encoders the run trained on) or cache folder with DINOv2 features (T_LUFS).
        limit: score only the first `limit` clips.
        ema: the EMA weights (default) rather than the raw ones.
        steps, cfg_scale: DiT runs: the sampling settings of the generations.
    """
    out = Path(run_dir) / "validation.jsonl"
    lines = [json.loads(x) for x in out.read_text().splitlines()] if out.is_file() else []
    done = {x["step"] for x in lines}
    clips = None
    for path in CheckpointManager(run_dir, rank=0, world_size=1).all():
        if int(_NAME.match(path.name).group(1)) in done:
            continue
        model, trainer, step = load_checkpoint_of_run(run_dir, path, ema=ema)
        if trainer == "vae":
            clips = clips if clips is not None else read_clips(data, limit=limit)
            row = {"step": step, **asdict(reconstruction_scores(model, clips))}
        elif trainer == "dit":
            clips = clips if clips is not None else read_cache(data, limit=limit, features=False)
            row = {"step": step, **asdict(generation_scores(model, clips, steps=steps, cfg_scale=cfg_scale))}
        elif trainer == "encoders":
            clips = clips if clips is not None else read_encoder_inputs(data, model, limit=limit)
            row = {"step": step, **asdict(retrieval_scores(model, clips))}
        elif isinstance(model, FramesToLufs):  # T_LUFS with the DINOv2 it trained: features from the shards' frames
            clips = clips if clips is not None else read_frame_clips(data, limit=limit)
            row = {"step": step, **asdict(predictor_scores(model.predictor, frame_features(model, clips)))}
        else:
            clips = clips if clips is not None else read_cache(data, limit=limit)
            row = {"step": step, **asdict(predictor_scores(model, clips))}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        lines.append(row)
        logger.info("step %d: %s", step, row)
    return sorted(lines, key=lambda x: x["step"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m triergon.train.validate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a VAE, DiT, T_LUFS or encoder run folder")
    parser.add_argument("--data", required=True, help="the validation split: a shard folder (VAE and encoder runs, "
                                                      "T_LUFS runs with model.dinov2) or a cache folder (DiT runs; "
                                                      "with DINOv2 features for other T_LUFS runs)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N clips")
    parser.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    parser.add_argument("--steps", type=int, default=25, help="DiT runs: sampler steps (default 25)")
    parser.add_argument("--cfg", type=float, default=7.0, help="DiT runs: CFG scale (default 7)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for row in validate_run(args.run_dir, args.data, limit=args.limit, ema=not args.raw, steps=args.steps,
                            cfg_scale=args.cfg):
        sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
