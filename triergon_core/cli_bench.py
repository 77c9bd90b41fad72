"""`triergon bench`: time whole generations (real-time factor, stage shares, peak memory, DiT TFLOP/s)."""

from __future__ import annotations

import argparse
import json
import logging

import torch

from .generate import DTYPES
from .model import build_model
from .presets import PRESETS
from .rtf import DEFAULT_VARIANTS, VARIANTS, format_table, time_generation, warm_up
from .sampling import COMPILE_MODES, SAMPLERS

logger = logging.getLogger(__name__)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="time whole generations with random weights (RTF, stages, memory)")
    add_bench_arguments(bench)
    bench.set_defaults(func=run_bench)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny", help="model preset (default tiny)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0], help="durations to time (default 5)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    parser.add_argument("--cfg-scale", type=float, default=7.0, help="CFG scale (default 7; 1 = no CFG batch)")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="dpmpp-2m")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                        help="reference (constant work every step), cached (prepared once, as generate), compiled "
                        "(cached, the step under torch.compile --compile), offload (cached, the VAE and encoders "
                        "on the CPU but for their stage); default: reference cached")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="reduce-overhead",
                        help="torch.compile mode of the compiled variant (default reduce-overhead: CUDA graphs)")
    parser.add_argument("--dtype", choices=DTYPES, help="autocast the DiT to this dtype (default: the weights')")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case; the fastest is kept")
    parser.add_argument("--text", help="also time the condition encoders on this prompt (tiny preset only)")
    parser.add_argument("--ceiling-tflops", type=float, help="the card's measured matmul rate, to report the "
                        "DiT's share of it (benchmarks/ceilings.py)")
    parser.add_argument("--json", metavar="FILE", help="also write every run as JSON")


def run_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.repeats < 1:
        raise ValueError("--steps and --repeats must be at least 1")
    model = build_model(args.preset, device=args.device, seed=0)
    for seconds in args.seconds:
        model.config.sequence.check_seconds(seconds)
    rows = []
    for seconds in args.seconds:
        for variant in args.variants:
            warm_s = warm_up(model, seconds=seconds, sampler=args.sampler, variant=variant, dtype=args.dtype,
                             compile=args.compile)
            if variant == "compiled":
                print(f"compiled ({args.compile}) {seconds:g} s: first (2-step) generation {warm_s:.1f} s, the "
                      "compilation included")
            runs = [time_generation(model, seconds=seconds, steps=args.steps, cfg_scale=args.cfg_scale,
                                    sampler=args.sampler, variant=variant, dtype=args.dtype, compile=args.compile,
                                    text=args.text)
                    for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r.wall_s)
            logger.info("%s %g s %s: %.3f s wall, RTF %.3f", args.preset, seconds, variant, best.wall_s, best.rtf)
            rows.append(best)
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""
    print(f"{args.preset}, random weights, on {args.device}{threads}")
    if args.text:
        print("condition encoders (apart, not in wall / RTF): " + ", ".join(f"{r.encoders_s:.3f} s" for r in rows))
    print(format_table(rows, ceiling_tflops=args.ceiling_tflops))
    if args.json:
        extra = {"ceiling_tflops": args.ceiling_tflops} if args.ceiling_tflops else {}
        with open(args.json, "w") as f:
            json.dump([r.as_dict() | extra for r in rows], f, indent=1)
    return 0
