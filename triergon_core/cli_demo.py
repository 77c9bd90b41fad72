"""`triergon demo`: the main job on the shipped demo model; `demo bundle` / `demo encoders` rebuild its folder."""

from __future__ import annotations

import argparse

from .cli_sampling import add_sampling_arguments, sampling_from_args


def _fmt(mae: tuple[float, ...]) -> str:
    return " / ".join(f"{m:.1f}" for m in mae) + " LU (L / R)"


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .demo import DemoFiles, run_demo

    files = DemoFiles(args.weights) if args.weights else None
    settings = sampling_from_args(args, (files or DemoFiles()).check().model)
    with tqdm(total=settings.steps, desc="sampling", unit="step", disable=args.quiet) as bar:
        result = run_demo(args.output, seed=args.seed, seconds=args.seconds, steps=settings.steps,
                          cfg_scale=settings.cfg_scale, files=files,
                          callback=lambda step, total, x0: bar.update(step - bar.n))
    p = result.paths
    print(f"SynthFoley clip (seed {args.seed}, {result.seconds:g} s): {result.caption!r}")
    print(f"wrote {p['video']} (the rendered clip with its own sound)")
    print(f"wrote {p['curve']} (T_LUFS's loudness curve; MAE against the clip's own sound "
          f"{_fmt(result.prediction_mae)})")
    print(f"wrote {p['audio']} (generated stereo 44.1 kHz; MAE against the predicted curve "
          f"{_fmt(result.generation_mae)})")
    print(f"wrote {p['muxed']} (the clip with the generated sound)")
    print(f"wrote {p['plot']} (predicted vs measured loudness)")
    note = "" if result.trained else " with UNTRAINED placeholder weights (noise-like sound)"
    print(f"done in {result.elapsed:.1f} s{note}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from ..train.demo_bundle import bundle_demo
    from .sampling import PAPER_SAMPLING

    given = args.steps is not None or args.cfg_scale is not None
    sampling = PAPER_SAMPLING.override(steps=args.steps, cfg_scale=args.cfg_scale) if given else None
    files = bundle_demo(args.output, vae=args.vae, dit=args.dit, lufs=args.lufs, encoders=args.encoders,
                        sampling=sampling)
    for path in (files.model, files.predictor, files.languagebind, files.dinov2):
        print(f"wrote {path}")
    return 0


def _encoders(args: argparse.Namespace) -> int:
    from .demo import write_demo_encoders

    files = write_demo_encoders(args.output)
    print(f"wrote {files.languagebind}\nwrote {files.dinov2}")
    return 0


def _listen(args: argparse.Namespace) -> int:
    from .demo import DemoFiles
    from .demo_listen import listen

    files = DemoFiles(args.weights) if args.weights else None
    settings = sampling_from_args(args, (files or DemoFiles()).check().model)
    log = None if args.quiet else (lambda kind: print(f"generating: {kind}", flush=True))
    reports = listen(args.output, files=files, seconds=args.seconds, steps=settings.steps,
                     cfg_scale=settings.cfg_scale, progress=log)
    for r in reports:
        print(f"wrote {args.output}/{r.plot}")
    print(f"wrote {args.output}/listening.md and listening.json")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.action != "bundle" and (args.vae or args.dit or args.lufs or args.encoders):
        raise ValueError("--vae, --dit, --lufs and --encoders go with `triergon demo bundle`")
    return {None: _run, "bundle": _bundle, "encoders": _encoders, "listen": _listen}[args.action](args)


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="the main job on the shipped demo model: SynthFoley clip -> T_LUFS curve -> stereo audio, "
        "WAV, muxed MP4 and a plot", description="Render a SynthFoley clip, predict its loudness curve with "
        "T_LUFS, generate its sound with the demo model and write the WAV, the clip with the sound muxed in and a "
        "plot of predicted vs measured loudness into -o. `demo bundle` writes a demo weights folder from training "
        "runs (placeholders for parts not given; --steps / --cfg-scale given to it are stored as the model's "
        "recommended sampling); `demo encoders` rebuilds its seeded folders (DINOv2, and the LanguageBind towers "
        "as they were before the encoder training); "
        "`demo listen` measures the model's sound per SynthFoley scene kind (a table and one plot per kind).")
    demo.add_argument("action", nargs="?", choices=("bundle", "encoders", "listen"), help="bundle: write the demo "
                      "weights folder -o from runs; encoders: write the seeded dinov2/ and random languagebind/ "
                      "folders; listen: "
                      "one clip per scene kind, its sound generated with its own curve as E_L, measured (onsets, "
                      "spectral centroid, channel balance, LUFS tracking) into -o")
    demo.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (for bundle / encoders: "
                      "the weights folder, e.g. weights/demo)")
    demo.add_argument("--seed", type=int, default=0, help="the clip's and the sampling's seed (default 0; not used "
                      "by listen, whose kind i always uses 1000 + i)")
    demo.add_argument("--seconds", type=float, default=5.0, help="clip duration, at most 10 (default 5)")
    add_sampling_arguments(demo, sampler=False)
    demo.add_argument("--weights", metavar="DIR", help="a demo weights folder (default: the shipped one)")
    demo.add_argument("--vae", metavar="RUN", help="bundle: the synthfoley-vae run folder (its EMA VAE)")
    demo.add_argument("--dit", metavar="RUN", help="bundle: the synthfoley-dit run folder (its EMA DiT and "
                      "conditioner)")
    demo.add_argument("--lufs", metavar="RUN", help="bundle: the synthfoley-lufs run folder (its EMA T_LUFS), or a "
                      "T_LUFS weights file to keep (e.g. weights/demo/lufs-predictor.safetensors)")
    demo.add_argument("--encoders", metavar="RUN", help="bundle: the synthfoley-encoders run folder (its EMA "
                      "LanguageBind towers; default: the seeded random towers)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
