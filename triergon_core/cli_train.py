"""`triergon data pack|cache` and `triergon train [export]`: data preparation and one-process training.

Multi-process training runs under torchrun: `torchrun --nproc-per-node N -m triergon.train ...` takes the
same arguments as `triergon train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .config import FRAME_POOLINGS


def _bar(desc: str, quiet: bool):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="clip", disable=quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def _pack(args: argparse.Namespace) -> int:
    from ..train.data.pack import pack_manifest

    bar, progress = _bar("packing", args.quiet)
    with bar:
        report = pack_manifest(args.manifest, args.output, split=args.split, fps=args.fps, short_side=args.frame_size,
                               min_seconds=args.min_seconds, bits=args.bits, max_samples=args.shard_size,
                               progress=progress)
    print(report.summary())
    print(f"wrote {args.output}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from ..train.data.cache import build_cache
    from .checkpoint import load_checkpoint
    from .encoders import build_encoders
    from .model import build_model

    if args.embeddings_from and (args.languagebind or args.dinov2 or args.no_embeddings):
        raise SystemExit("--embeddings-from copies the embeddings and features of that cache: give no "
                         "--languagebind, --dinov2 or --no-embeddings with it")
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, device=args.device)
        identity = {"vae": str(Path(args.checkpoint).resolve())}
    else:
        model = build_model(args.preset, device=args.device, seed=args.seed)
        identity = {"vae": f"preset {args.preset}, seed {args.seed} (random weights)"}
    encoders = None
    if args.languagebind:
        from .languagebind import load_languagebind

        encoders = load_languagebind(args.languagebind, device=args.device)
    elif not (args.no_embeddings or args.embeddings_from):
        encoders = build_encoders(model.config.conditioning)
    if encoders is not None:
        identity["encoders"] = encoders.identity
    features = None
    if args.dinov2:
        from .lufs_predictor import load_dinov2

        features = load_dinov2(args.dinov2, device=args.device, pooling=args.frame_pooling)
        identity["dinov2"] = str(Path(args.dinov2).resolve())
        identity["frame_pooling"] = args.frame_pooling
    bar, progress = _bar("caching", args.quiet)
    with bar:
        build_cache(args.shards, args.output, vae=model.vae, encoders=encoders, features=features, identity=identity,
                    device=args.device, progress=progress, embeddings_from=args.embeddings_from)
    print(f"wrote {args.output}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from ..train.data.cache import latent_stats

    s = latent_stats(args.cache, split=args.split)
    print(f"{s['clips']} clips, {s['seconds']:.1f} s of audio")
    print(f"posterior means: average {s['mean_mean']:.4f}, standard deviation {s['mean_std']:.4f}")
    print(f"posterior standard deviation (average): {s['posterior_std']:.4f}")
    print(f"DiT runs on this cache: --set model.latent_scale={s['mean_std']:.4g} --set data.sample_latents=false "
          "gives unit-scale data")
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.action == "export":
        from ..train.export import export_run

        if not args.export_dir or not args.output:
            raise ValueError("usage: triergon train export RUN_DIR -o OUT.safetensors [--fp16] [--raw] [--step N] "
                             "[--cfg-scale S]")
        checkpoint = None
        if args.step is not None:
            from ..train.checkpointing import CheckpointManager

            checkpoint = CheckpointManager(args.export_dir, rank=0, world_size=1).at(args.step)
        sampling = None
        if args.cfg_scale is not None:
            from .sampling import PAPER_SAMPLING

            sampling = PAPER_SAMPLING.override(cfg_scale=args.cfg_scale)
        path, config = export_run(args.export_dir, args.output, fp16=args.fp16, ema=not args.raw,
                                  checkpoint=checkpoint, sampling=sampling)
        print(f"wrote {path} ({config.trainer} weights of run {args.export_dir})")
        return 0
    if args.action is not None:
        raise ValueError(f"unknown train action {args.action!r}: use `triergon train --recipe ...` or "
                         "`triergon train export RUN_DIR -o OUT`")
    export_only = [name for name, given in (("--fp16", args.fp16), ("--raw", args.raw), ("--step", args.step),
                                            ("--cfg-scale", args.cfg_scale), ("-o", args.output)) if given]
    if export_only:
        raise ValueError(f"{', '.join(export_only)} go with `triergon train export RUN_DIR -o OUT`")
    if not args.recipe or not args.run_dir:
        raise ValueError("triergon train needs --recipe NAME and --run-dir DIR (see `triergon train --help`)")
    from ..train.run import run_training

    with torch.inference_mode(False):
        return run_training(args=args)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare training data: pack clips into shards, cache encoder outputs")
    cmds = data.add_subparsers(dest="data_command", required=True)
    pack = cmds.add_parser("pack", help="manifest (JSONL: video, audio, caption, split) -> WebDataset tar shards")
    pack.add_argument("manifest", help="JSONL manifest, one clip per line")
    pack.add_argument("-o", "--output", required=True, metavar="SHARDS", help="shard folder")
    pack.add_argument("--split", help="pack only this split")
    pack.add_argument("--fps", type=float, default=6.0, help="frame rate of the stored frames (default 6)")
    pack.add_argument("--frame-size", type=int, default=224, help="short side of stored frames (default 224)")
    pack.add_argument("--min-seconds", type=float, default=0.5, help="skip shorter clips (default 0.5)")
    pack.add_argument("--bits", type=int, choices=(16, 24), default=16, help="FLAC bit depth (default 16)")
    pack.add_argument("--shard-size", type=int, default=1000, help="clips per shard (default 1000)")
    pack.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pack.set_defaults(func=_pack)

    cache = cmds.add_parser("cache", help="shards -> VAE latents, condition embeddings, LUFS curves "
                            "(and DINOv2 features)")
    cache.add_argument("shards", help="shard folder from `triergon data pack`")
    cache.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder (resumable)")
    cache.add_argument("--checkpoint", help="Tri-Ergon checkpoint whose VAE encodes the latents")
    cache.add_argument("--preset", default="tiny", help="without --checkpoint: a preset with seeded random weights")
    cache.add_argument("--seed", type=int, default=0, help="seed of the random preset weights (default 0)")
    cache.add_argument("--languagebind", metavar="DIR", help="LanguageBind towers folder for the embeddings")
    cache.add_argument("--no-embeddings", action="store_true", help="cache no text / audio / video embeddings")
    cache.add_argument("--dinov2", metavar="DIR", help="DINOv2 folder: also cache frame features for T_LUFS")
    cache.add_argument("--frame-pooling", choices=tuple(FRAME_POOLINGS), default="cls",
                       help="DINOv2 frame features: the CLS output (default, the paper's presets) or that with the "
                            "mean patch token of each image quarter (the demo T_LUFS's; 5 x the width)")
    cache.add_argument("--embeddings-from", metavar="CACHE", help="copy the embeddings and DINOv2 features of this "
                       "earlier cache of the same shards; encode only the latents (after a new VAE)")
    cache.add_argument("--device", default="cpu", help="torch device (default cpu)")
    cache.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cache.set_defaults(func=_cache)

    stats = cmds.add_parser("stats", help="a cache's latent statistics, and the DiT's latent_scale for them")
    stats.add_argument("cache", help="cache folder from `triergon data cache`")
    stats.add_argument("--split", help="only this split")
    stats.set_defaults(func=_stats)

    from ..train.run import add_train_arguments

    train = sub.add_parser("train", help="train in one process; `triergon train export RUN_DIR -o OUT` writes a "
                           "run's EMA weights", description="Train in one process (the same arguments as "
                           "`torchrun ... -m triergon.train`), or export a run's weights.")
    train.add_argument("action", nargs="?", choices=("export",), help="export: write a run's weights")
    train.add_argument("export_dir", nargs="?", metavar="RUN_DIR", help="the run to export")
    add_train_arguments(train, required=False)
    train.add_argument("-o", "--output", help="export: output .safetensors")
    train.add_argument("--fp16", action="store_true", help="export: float16 weights (half the size)")
    train.add_argument("--raw", action="store_true", help="export: the raw weights instead of the EMA")
    train.add_argument("--step", type=int, help="export: the checkpoint of this step (default: the latest)")
    train.add_argument("--cfg-scale", type=float, help="export: the CFG scale to store as the weights' "
                       "recommended one (the default of generate, demo, Table 3 and the nodes' loader; without it: "
                       "the paper's 7)")
    train.set_defaults(func=_train)
