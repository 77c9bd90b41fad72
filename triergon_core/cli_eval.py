"""`triergon eval`: score generated audio against a manifest's test clips, or run the paper's Table 3 in
miniature (`--table3`)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from .audio_embedders import EMBEDDERS
from .checks import check_device, check_input_file, check_output_path, check_seed
from .cli_sampling import add_sampling_arguments, sampling_from_args
from .generate import DTYPES
from .presets import PRESETS

logger = logging.getLogger(__name__)

# Table 3's options without a default that matters for scoring: given without --table3, they are a mistake.
_TABLE3_ONLY = ("checkpoint", "preset", "languagebind", "dinov2", "lufs_predictor", "steps", "cfg_scale", "sampler",
                "seconds", "dtype")


def _load_embedder(kind: str, path: str | None, *, option: str, device):
    from .audio_embedders import load_embedder

    if path is not None:
        check_input_file(path, what=f"{option}-weights")
    elif kind != "synthfoley":
        raise ValueError(f"{option} {kind} needs its weights file: give {option}-weights PATH")
    return load_embedder(kind, path).to(device)


def _embedders(args: argparse.Namespace, device) -> tuple:
    """(the embedder for FD, and KL unless --kl-embedder; the one for KL or None) and how to name them."""
    embedder = _load_embedder(args.embedder, args.embedder_weights, option="--embedder", device=device)
    name = args.embedder + (f" ({Path(args.embedder_weights).name})" if args.embedder_weights else "")
    if args.kl_embedder is None:
        if args.kl_embedder_weights is not None:
            raise ValueError("--kl-embedder-weights needs --kl-embedder KIND")
        return embedder, None, name
    kl = _load_embedder(args.kl_embedder, args.kl_embedder_weights, option="--kl-embedder", device=device)
    if not kl.labels:
        raise ValueError(f"--kl-embedder {args.kl_embedder} gives no class probabilities; use a classifier "
                         "(synthfoley or passt)")
    kl_name = args.kl_embedder + (f" ({Path(args.kl_embedder_weights).name})" if args.kl_embedder_weights else "")
    return embedder, kl, f"{name} for FD, {kl_name} for KL"


def _check_eval_extra() -> None:
    missing = [name for name in ("cv2", "librosa") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"AV-Align needs OpenCV and librosa ({', '.join(missing)} not found): "
                         "pip install 'triergon[eval]'")


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import load_clips

    device = check_device(args.device)
    _check_eval_extra()
    check_input_file(args.manifest, what="--manifest")
    clips = load_clips(args.manifest, split=args.split, limit=args.limit)
    output = Path(args.output or ("table3" if args.table3 else "eval")).expanduser()
    if output.exists() and not output.is_dir():
        raise ValueError(f"-o {str(output)!r} is a file; give a folder")
    check_output_path(output / f"{'table3' if args.table3 else 'scores'}.json", formats=(".json",), what="-o")
    if args.table3:
        if args.generated is not None:
            raise ValueError(f"--table3 generates its own audio: leave out the folder {args.generated!r}")
        return _table3(args, clips, output, device)
    given = [f"--{name.replace('_', '-')}" for name in _TABLE3_ONLY if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} only apply to --table3 (scoring reads audio generated before)")
    if args.generated is None:
        raise ValueError("give the folder of generated audio (<clip id>.wav / .flac) to score, or --table3")
    return _score(args, clips, output, device)


def _score(args: argparse.Namespace, clips: list, output: Path, device) -> int:
    from tqdm import tqdm

    from .evaluation import format_markdown, score_folder, write_report

    embedder, kl_embedder, names = _embedders(args, device)
    with tqdm(total=len(clips), desc="scoring", unit="clip", disable=args.quiet) as bar:
        report = score_folder(args.generated, clips, embedder=embedder, kl_embedder=kl_embedder,
                              progress=lambda n: bar.update(n - bar.n))
    report = {"generated": str(args.generated), "manifest": str(args.manifest), "split": args.split,
              "embedder": names, **report}
    title = f"Scores of {args.generated} ({args.split} split of {args.manifest})"
    paths = write_report(report, output, name="scores", markdown=format_markdown(report, title=title))
    print(f"wrote {paths[0]} and {paths[1]} ({report['num_clips']} clips)")
    return 0


def _table3(args: argparse.Namespace, clips: list, output: Path, device) -> int:
    from tqdm import tqdm

    from .checkpoint import checkpoint_config_of, load_checkpoint
    from .cli import RANDOM_WEIGHTS_SEED
    from .demo import apply_demo_defaults, warn_if_untrained
    from .evaluation import write_report
    from .generate import resolve_encoders
    from .languagebind import load_languagebind
    from .lufs_predictor import load_dinov2, load_predictor
    from .model import build_model
    from .presets import get_preset
    from .table3 import ROWS, format_table3, run_table3

    # every argument and input is checked before a model is loaded
    check_seed(args.seed, batch_size=len(clips))
    apply_demo_defaults(args, lufs_models=True)  # as generate's: the shipped demo model, its towers and T_LUFS
    if args.dinov2 is None or args.lufs_predictor is None:
        raise ValueError("--table3 needs T_LUFS for the rows with predicted E_L: give --dinov2 DIR and "
                         "--lufs-predictor FILE")
    check_input_file(args.lufs_predictor, what="--lufs-predictor")
    if args.checkpoint:
        check_input_file(args.checkpoint, what="--checkpoint")
        config = checkpoint_config_of(args.checkpoint, preset=args.preset)
    else:
        config = get_preset(args.preset)
    sampling = sampling_from_args(args, args.checkpoint)  # the checkpoint's recommendation where not given
    if args.seconds is not None:
        config.sequence.check_seconds(args.seconds)
    encoders = load_languagebind(args.languagebind, device=device) if args.languagebind else None
    encoders = resolve_encoders(config, ["text", "audio", "video"], encoders)
    embedder, kl_embedder, names = _embedders(args, device)
    features = load_dinov2(args.dinov2, device=device)
    predictor = load_predictor(args.lufs_predictor, device=device)
    if args.checkpoint:
        warn_if_untrained(args.checkpoint)
        model = load_checkpoint(args.checkpoint, preset=args.preset, device=device)
    else:
        logger.warning("no --checkpoint given: %r has random weights, so the table measures noise-like audio",
                       config.name)
        model = build_model(config, device=device, seed=RANDOM_WEIGHTS_SEED)
    # what identifies the generated audio (a resumed run must match it); the embedders only score it
    settings = {"checkpoint": str(args.checkpoint) if args.checkpoint else None, "preset": config.name,
                "manifest": str(args.manifest), "split": args.split}
    with tqdm(total=len(clips) * len(ROWS), desc="table 3", unit="generation", disable=args.quiet) as bar:
        result = run_table3(model, clips, output=output, features=features, predictor=predictor,
                            embedder=embedder, kl_embedder=kl_embedder, encoders=encoders, steps=sampling.steps,
                            cfg_scale=sampling.cfg_scale, sampler=sampling.sampler, seconds=args.seconds,
                            seed=args.seed, dtype=args.dtype, settings=settings, progress=bar.update)
    result["settings"]["embedder"] = names
    paths = write_report(result, output, name="table3", markdown=format_table3(result))
    print(f"wrote {paths[0]} and {paths[1]} ({len(clips)} clips x {len(ROWS)} rows)")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="score generated audio against a manifest's clips (LUFS tracking, stereo "
                        "placement, AV-Align, FD, KL), or run Table 3 (--table3)")
    ev.add_argument("generated", nargs="?", metavar="FOLDER", help="generated audio to score: <clip id>.wav / .flac "
                    "for clips of the split")
    ev.add_argument("--manifest", required=True, help="the clips' manifest.jsonl (e.g. from `triergon synth`)")
    ev.add_argument("--split", default="test", help="the manifest's split to use (default test)")
    ev.add_argument("--limit", type=int, metavar="N", help="use the split's first N clips")
    ev.add_argument("--embedder", choices=list(EMBEDDERS), default="synthfoley",
                    help="audio network for FD, and KL unless --kl-embedder (default synthfoley: the SynthFoley "
                    "classifier shipped in weights/; the paper: openl3 for FD, passt for KL)")
    ev.add_argument("--embedder-weights", metavar="PATH", help="its weights file (required for openl3 and passt; "
                    "default for synthfoley: weights/synthfoley-classifier.safetensors)")
    ev.add_argument("--kl-embedder", choices=list(EMBEDDERS), help="another classifier for KL's class "
                    "probabilities (default: --embedder's)")
    ev.add_argument("--kl-embedder-weights", metavar="PATH", help="its weights file")
    ev.add_argument("-o", "--output", metavar="DIR", help="output folder (default: eval, or table3 with --table3)")
    ev.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t3 = ev.add_argument_group("Table 3", "generate the eight condition sets for every clip and score them")
    t3.add_argument("--table3", action="store_true", help="run Table 3 and write table3.md and table3.json")
    t3.add_argument("--checkpoint", help="model weights (default without --preset: the shipped demo model, with "
                    "its encoders, DINOv2 and T_LUFS)")
    t3.add_argument("--preset", choices=list(PRESETS), help="a preset with random weights, or the checkpoint's "
                    "preset to check against")
    t3.add_argument("--languagebind", metavar="DIR", help="LanguageBind towers (not needed for the tiny preset and "
                    "the demo model)")
    t3.add_argument("--dinov2", metavar="DIR", help="DINOv2 folder for T_LUFS's frame features (default with the "
                    "demo model: its own)")
    t3.add_argument("--lufs-predictor", metavar="FILE", help="T_LUFS weights (.safetensors; default with the demo "
                    "model: its own)")
    add_sampling_arguments(t3)
    t3.add_argument("--seconds", type=float, help="generate the first SECONDS of each clip (shorter clips whole; "
                    "default: whole clips)")
    t3.add_argument("--seed", type=int, default=0, help="clip i of the split uses seed + i in every row (default 0)")
    t3.add_argument("--dtype", choices=DTYPES, help="run the DiT under autocast to this dtype")
    ev.set_defaults(func=_eval)
