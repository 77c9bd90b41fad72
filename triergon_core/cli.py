"""The `triergon` command line: generate, presets, convert (lufs, bench, train, synth and eval in cli_*.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, checkpoint_config_of, load_checkpoint
from .checks import check_device, check_input_file, check_output_path, check_seed
from .cli_bench import add_bench_parser
from .cli_demo import add_demo_parser
from .cli_eval import add_eval_parser
from .cli_lufs import add_lufs_parser
from .cli_sampling import add_sampling_arguments, sampling_from_args
from .cli_synth import add_synth_parser
from .cli_train import add_train_parser
from .demo import apply_demo_defaults, warn_if_untrained
from .generate import DTYPES
from .lufs_curve import FIT_POLICIES, LufsCurve
from .model import build_model, parameter_counts
from .presets import PRESETS, get_preset
from .sampling import COMPILE_MODES
from .video import probe_video

logger = logging.getLogger("triergon")


# Without --checkpoint the weights are random, seeded with this fixed value rather than --seed, so that --seed
# only picks the noise: item i of a batch then equals a run with seed + i, as documented.
RANDOM_WEIGHTS_SEED = 0


def _output_paths(out: Path, batch_size: int) -> list[Path]:
    return [out] if batch_size == 1 else [out.with_stem(f"{out.stem}_{i}") for i in range(batch_size)]


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .audio import AUDIO_FORMATS, check_audio_output, load_audio, write_audio
    from .cache import EmbeddingCache
    from .generate import fit_lufs, generate, resolve_encoders, resolve_seconds
    from .languagebind import load_languagebind
    from .mux import MUX_FORMATS, check_mux_output, mux_audio

    # Every argument, input file and output path is checked before the model is built (minutes, gigabytes).
    device = check_device(args.device)
    apply_demo_defaults(args)  # the default: the shipped demo model, with its towers
    check_seed(args.seed, batch_size=args.batch_size)
    inputs = {"VIDEO": args.video, "--audio": args.audio, "--lufs": args.lufs, "--lufs-from": args.lufs_from,
              "--checkpoint": args.checkpoint}
    for what, path in inputs.items():
        if path is not None:
            check_input_file(path, what=what)
    settings = sampling_from_args(args, args.checkpoint)
    read = {("the input video" if what == "VIDEO" else f"the {what} file"): p for what, p in inputs.items()}
    out = Path(args.output).expanduser()
    muxing = out.suffix.lower() in MUX_FORMATS
    if muxing and not args.video:
        raise ValueError(f"{args.output} is a video file: give the input VIDEO to put the audio into, "
                         "or write a .wav / .flac")
    if muxing:
        bits = check_mux_output(out, bits=args.bits)
    else:
        bits = 16 if args.bits is None else args.bits
        check_audio_output(out, bits=bits)
    paths = [check_output_path(p, formats=(*AUDIO_FORMATS, *MUX_FORMATS), what="-o", inputs=read)
             for p in _output_paths(out, args.batch_size)]
    config = checkpoint_config_of(args.checkpoint, preset=args.preset) if args.checkpoint else \
        get_preset(args.preset)
    if args.video:
        probe_video(args.video)  # a file that is no usable video fails here, also when --seconds is given
    seconds = resolve_seconds(config, args.seconds, args.video)
    lufs = None
    if args.lufs:
        try:
            lufs = LufsCurve.load(args.lufs)
        except ValueError as e:
            raise ValueError(f"--lufs {e}") from e
    elif args.lufs_from:
        lufs = LufsCurve.measure(load_audio(args.lufs_from))
    fit_lufs(config, lufs, seconds, args.lufs_fit)
    reference = load_audio(args.audio) if args.audio else None
    # with --offload the encoders and the VAE live on the CPU and visit the device for their stage only
    home = torch.device("cpu") if args.offload else device
    encoders = load_languagebind(args.languagebind, device=home) if args.languagebind else None
    requested = [name for name, value in (("text", args.text), ("audio", args.audio), ("video", args.video)) if value]
    encoders = resolve_encoders(config, requested, encoders)
    cache = EmbeddingCache(args.cache_dir) if args.cache_dir else None

    if args.checkpoint:
        warn_if_untrained(args.checkpoint)
        model = load_checkpoint(args.checkpoint, preset=args.preset, device=home)
    else:
        logger.warning("--preset %s without --checkpoint has random weights, so the output is noise-like (without "
                       "--preset, the shipped demo model is used)", config.name)
        model = build_model(config, device=home, seed=RANDOM_WEIGHTS_SEED)
    model.dit.to(device)
    model.conditioner.to(device)
    with tqdm(total=settings.steps, desc="sampling", unit="step", disable=args.quiet) as bar:
        audio = generate(model, seconds=seconds, video=args.video, text=args.text, audio=reference, lufs=lufs,
                         lufs_fit=args.lufs_fit, encoders=encoders, cache=cache, seed=args.seed,
                         batch_size=args.batch_size, steps=settings.steps, cfg_scale=settings.cfg_scale,
                         sampler=settings.sampler, callback=lambda step, total, x0: bar.update(step - bar.n),
                         dtype=args.dtype, compile=args.compile, offload=args.offload)
    rate = model.config.sequence.sample_rate
    for path, clip in zip(paths, audio, strict=True):
        if muxing:
            mux_audio(args.video, clip.cpu(), path, sample_rate=rate, bits=bits)
            print(f"wrote {path} (the video with {_muxed_report(probe_video(args.video).duration, clip, rate)})")
        else:
            write_audio(path, clip.cpu(), sample_rate=rate, bits=bits)
            print(f"wrote {path} ({clip.shape[-1]} samples, {clip.shape[0]} channels, {rate} Hz)")
    return 0


def _muxed_report(video_seconds: float, clip: torch.Tensor, rate: int) -> str:
    """What the muxed file holds: the video's length of audio, and whether the generated clip was cut or padded."""
    made = clip.shape[-1] / rate
    kept = f"{video_seconds:.3f} s of generated stereo audio"
    if round(video_seconds * rate) == clip.shape[-1]:
        return kept + ")"
    return kept + f"; the {made:.3f} s generated were {'trimmed' if made > video_seconds else 'padded'} to fit)"


def _presets(args: argparse.Namespace) -> int:
    header = (f"{'preset':<12} {'VAE':>12} {'DiT':>14} {'conditioner':>12} {'total':>14} {'latent':>7} "
              f"{'max s':>6} {'frames':>7}")
    print(header)
    print("-" * len(header))
    for name in PRESETS:
        config = get_preset(name)
        counts = parameter_counts(config)
        seq = config.sequence
        print(f"{name:<12} {counts['vae']:>12,} {counts['dit']:>14,} {counts['conditioner']:>12,} "
              f"{counts['total']:>14,} {config.vae.latent_dim:>7} {seq.max_seconds:>6g} {seq.max_latent_frames:>7}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .sao import convert_sao_checkpoint

    check_input_file(args.source, what="--from-sao")
    config, report = convert_sao_checkpoint(args.source, args.output, preset=args.preset)
    print(f"{report.summary()}\nwrote {args.output} (config {config.name!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triergon", description="Tri-Ergon video-to-audio generation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate stereo 44.1 kHz audio")
    gen.add_argument("--preset", choices=list(PRESETS), help="model preset with random weights (with --checkpoint: "
                     "the preset the weights must fit; default: the checkpoint's own)")
    gen.add_argument("--checkpoint", help="weights (.safetensors from `triergon convert` or training); default, "
                     "without --preset: the shipped demo model, with its encoders")
    gen.add_argument("video", nargs="?", help="video to make sound for (e_V; the duration defaults to the video's)")
    gen.add_argument("--seconds", type=float, help="duration of the output in seconds (required without a video)")
    gen.add_argument("--text", help="text prompt (e_L)")
    gen.add_argument("--audio", metavar="FILE", help="reference audio file (e_A), any format ffmpeg reads")
    gen.add_argument("--languagebind", metavar="DIR", help="folder with LanguageBind's towers (video/, audio/) for "
                     "text, audio and video conditions (not needed for the tiny preset and the demo model, which "
                     "carry their own)")
    gen.add_argument("--cache-dir", metavar="DIR", help="keep condition embeddings here and reuse them across runs")
    loud = gen.add_mutually_exclusive_group()
    loud.add_argument("--lufs", metavar="CURVE", help="loudness curve (.json/.csv, see `triergon lufs`)")
    loud.add_argument("--lufs-from", metavar="AUDIO", help="use the measured loudness curve of this audio file")
    gen.add_argument("--lufs-fit", choices=FIT_POLICIES, default="error",
                     help="when the curve's length differs from --seconds: error (default), resample, pad, trim, "
                          "pad_or_trim")
    add_sampling_arguments(gen)
    gen.add_argument("--seed", type=int, default=0, help="random seed (item i of a batch uses seed + i)")
    gen.add_argument("--batch-size", type=int, default=1, help="number of variations")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument("--dtype", choices=DTYPES, help="run the DiT under autocast to this dtype (bfloat16 on a GPU: "
                     "about half the time and memory); default: the weights' dtype")
    gen.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile the sampling step: default, "
                     "reduce-overhead (with CUDA graphs) or max-autotune; pays off on a GPU, after a first "
                     "compilation of tens of seconds or more (README, Speed)")
    gen.add_argument("--offload", action="store_true", help="keep the VAE and condition encoders on the CPU "
                     "except while they run, for GPUs too small to hold them beside the DiT")
    gen.add_argument("--bits", type=int, choices=(16, 24, 32), help="output bit depth (default 16; 32 = float, "
                     "WAV only; with .mkv the FLAC track's: 16 or 24; not for AAC in .mp4 / .mov)")
    gen.add_argument("-o", "--output", required=True, help="output .wav / .flac, or .mp4 / .mkv / .mov: a copy of "
                     "VIDEO with the generated audio (video stream copied); a batch writes NAME_i")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate)

    pre = sub.add_parser("presets", help="list the model presets with parameter counts")
    pre.set_defaults(func=_presets)

    conv = sub.add_parser("convert", help="convert other checkpoints to Tri-Ergon's format")
    conv.add_argument("--from-sao", dest="source", required=True, metavar="PATH",
                      help="Stable Audio Open model.safetensors or model.ckpt")
    conv.add_argument("output", metavar="OUT", help="output .safetensors (the only format written)")
    conv.add_argument("--preset", choices=list(PRESETS), help="check the weights against this preset "
                      "(default: read the sizes off the checkpoint)")
    conv.set_defaults(func=_convert)
    add_lufs_parser(sub)
    add_bench_parser(sub)
    add_train_parser(sub)
    add_synth_parser(sub)
    add_eval_parser(sub)
    add_demo_parser(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (so redirection is honoured)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(*, verbose: bool) -> None:
    """One stderr handler on the root logger, however often `main` runs in a process."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[triergon] %(levelname)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(verbose=args.verbose)
    try:
        with torch.inference_mode():
            return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    except BrokenPipeError:  # e.g. `triergon lufs measure x.wav | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
