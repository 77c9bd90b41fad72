"""Real-time factor of whole generations (conditions, sampling, VAE decode; encoders apart) with random weights.

    python -m benchmarks.bench_rtf --preset tiny --seconds 5 --steps 20       # a table (same as `triergon bench`)
    pytest benchmarks/bench_rtf.py --benchmark-json=rtf.json                 # pytest-benchmark, for report.py

Each case times the reference path (constant work recomputed every step) and the cached path (what
`generate` runs) in the same process, so their ratio holds even on a busy machine; absolute times on a shared
CPU do not. Never asserts a time. `RTF_PRESET`, `RTF_SECONDS`, `RTF_STEPS`, `RTF_DTYPE` choose the pytest cases
(default: tiny, 2 s, 4 steps, the weights' dtype).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

import triergon
from triergon.triergon_core.cli_bench import add_bench_arguments, run_bench
from triergon.triergon_core.model import build_model
from triergon.triergon_core.rtf import DEFAULT_VARIANTS, format_summary, time_generation, warm_up
from triergon.triergon_core.sampling import GuidedDenoiser

PRESET = os.environ.get("RTF_PRESET", "tiny")
SECONDS = [float(s) for s in os.environ.get("RTF_SECONDS", "2").split(",")]
STEPS = int(os.environ.get("RTF_STEPS", "4"))
DTYPE = os.environ.get("RTF_DTYPE") or None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def model():
    return build_model(PRESET, device=DEVICE, seed=0)


@pytest.mark.parametrize("variant", DEFAULT_VARIANTS)
@pytest.mark.parametrize("seconds", SECONDS)
def test_rtf(benchmark, model, seconds, variant):
    warm_up(model, seconds=seconds, sampler="dpmpp-2m", variant=variant, dtype=DTYPE)
    timings = []

    def run():
        timings.append(time_generation(model, seconds=seconds, steps=STEPS, variant=variant, dtype=DTYPE))

    benchmark.pedantic(run, rounds=1, iterations=1)
    best = min(timings, key=lambda t: t.wall_s)
    benchmark.extra_info.update(op="rtf", shape=f"{PRESET} {seconds:g} s x {STEPS} steps", mode=variant,
                                dtype=best.dtype, rtf=best.rtf, step_ms=best.step_ms, flops=best.dit_flops,
                                **{f"{variant}_ms": 1000 * best.wall_s})


@torch.inference_mode()
def step_times(preset: str, seconds: float, *, rounds: int = 10, device: str = DEVICE,
               cpu_time: bool = False) -> dict[str, list[float]]:
    """Seconds of one CFG-batched sampling step, per round, reference vs cached path, the two alternating step
    by step in one loop (so that load on a shared machine hits both alike). `cpu_time` counts this process's
    CPU seconds instead of wall time: on a CPU shared with other work, that is what the step itself costs."""
    clock = time.process_time if cpu_time else time.perf_counter
    model = build_model(preset, device=device, seed=0)
    conditions = triergon.prepare_conditions(model, seconds=seconds)
    context, global_cond, frame_cond = model.conditioner(conditions)
    z = torch.randn(1, model.config.dit.io_channels, model.config.sequence.latent_frames(seconds), device=device)
    t = torch.full((1,), 0.5, device=device)
    denoisers = {name: GuidedDenoiser(model.dit, context, global_cond, cfg_scale=7.0, frame_cond=frame_cond,
                                      cache_conditioning=name == "cached") for name in ("reference", "cached")}
    times: dict[str, list[float]] = {name: [] for name in denoisers}
    for i in range(rounds + 2):  # two warm-up rounds
        for name, denoise in denoisers.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            denoise(z, t)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times[name].append(clock() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_rtf", description=__doc__.split("\n")[0])
    add_bench_arguments(parser)
    parser.add_argument("--step-ratio", action="store_true", help="instead of whole generations: the median time "
                        "of one sampling step, reference vs cached, alternating in one loop, per --seconds")
    parser.add_argument("--cpu-time", action="store_true", help="with --step-ratio: the process's CPU seconds "
                        "instead of wall time (for a CPU shared with other work; use --threads 1)")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="instead of timing: one table (eager vs "
                        "optimised per case) from the --json files of earlier runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.summarize:
        rows = [row for path in args.summarize if Path(path).is_file() for row in json.loads(Path(path).read_text())]
        print(format_summary(rows) if rows else "no RTF results to summarise")
        return 0
    if args.step_ratio:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"{args.preset}, one CFG-batched step, {args.repeats} alternating rounds, {args.device}"
              + (f", {torch.get_num_threads()} threads" if args.device == "cpu" else "")
              + f"; fastest (min) and median ms of {'process CPU' if args.cpu_time else 'wall'} time")
        print("| seconds | reference min / median | cached min / median | cached / reference (min, median) |")
        print("| --- | --- | --- | --- |")
        for seconds in args.seconds:
            ts = step_times(args.preset, seconds, rounds=args.repeats, device=args.device, cpu_time=args.cpu_time)
            lo = {k: 1000 * min(v) for k, v in ts.items()}
            med = {k: 1000 * statistics.median(v) for k, v in ts.items()}
            ratios = f"{lo['cached'] / lo['reference']:.3f}, {med['cached'] / med['reference']:.3f}"
            print(f"| {seconds:g} | {lo['reference']:.2f} / {med['reference']:.2f} | {lo['cached']:.2f} / "
                  f"{med['cached']:.2f} | {ratios} |")
        return 0
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
