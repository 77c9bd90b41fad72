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
import logging
import os
import sys

import pytest
import torch

from triergon.triergon_core.cli_bench import add_bench_arguments, run_bench
from triergon.triergon_core.model import build_model
from triergon.triergon_core.rtf import VARIANTS, time_generation, warm_up

PRESET = os.environ.get("RTF_PRESET", "tiny")
SECONDS = [float(s) for s in os.environ.get("RTF_SECONDS", "2").split(",")]
STEPS = int(os.environ.get("RTF_STEPS", "4"))
DTYPE = os.environ.get("RTF_DTYPE") or None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def model():
    return build_model(PRESET, device=DEVICE, seed=0)


@pytest.mark.parametrize("variant", VARIANTS)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_rtf", description=__doc__.split("\n")[0])
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
