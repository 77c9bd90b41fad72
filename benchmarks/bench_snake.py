"""SnakeBeta: the fused Triton kernel ("ours") against the eager reference and torch.compile of it, at the
Oobleck decoder's real shapes.

    python -m pytest benchmarks/bench_snake.py -p no:cacheprovider --noconftest --benchmark-json=snake.json

Shapes: every SnakeBeta input of the full-size (SAO) decoder for a 10 s clip (216 latent frames, batch 1),
found by running the decoder on the meta device, with how many layers see each. Cases: bf16 at every
shape; fp32 at the two largest and fp16 at the largest. Parameters are in the input's dtype (a bf16 model).

Each case first checks every provider against a float64 reference on the device (norm-relative error of y
and the three gradients, every element finite), then times forward (no grad), backward (`autograd.grad` of a
retained graph) and both with `triton.testing.do_bench` (CUDA events, median, L2 flushed before each run).
GB/s counts the fewest bytes: forward reads x and writes y, backward reads x and dy and writes dx, both
directions also read alpha and beta and write their gradients. Everything the report needs is in each
benchmark's `extra_info` (`<provider>_ms`, `bytes`, `count`, `targets`); pytest-benchmark's own statistics
time ours with a host clock around a synchronised call, so they include launch latency. Targets, printed by
benchmarks/report.py and never asserted: forward + backward at >= 85% of the copy bandwidth and >= 1.3x
torch.compile. `test_block_sweep` times other row tiles at the largest shapes, for tuning.

Without a GPU this is a smoke test at a tiny decoder's two smallest shapes: the eager reference, and ours
when the process was started with TRITON_INTERPRET=1 (torch.compile is GPU-only here: minutes on a CPU).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from unittest import mock

import pytest
import torch

from triergon import VAEConfig
from triergon.kernels import backend, snake
from triergon.kernels.snake import snake_beta, snake_beta_reference
from triergon.triergon_core.layers import SnakeBeta
from triergon.triergon_core.presets import get_preset
from triergon.triergon_core.vae import OobleckDecoder

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
LATENT_FRAMES = 216  # 10 s: 216 * 2048 samples at 44.1 kHz
MODES = ("fwd", "bwd", "fwd+bwd")
TARGETS = {"fwd+bwd": {"copy_fraction": 0.85, "speedup_vs_compile": 1.3}}
# ||out - ref|| / ||ref|| bounds. Ours computes in fp32 and rounds once; the reference (eager and compiled)
# computes in the storage dtype, so it only has to be the same function.
OURS_TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
BASELINE_TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def decoder_snake_shapes(config: VAEConfig, frames: int) -> list[tuple[tuple[int, int, int], int]]:
    """The decoder's SnakeBeta input shapes for a batch of one, in call order, with how many layers see each."""
    counts: Counter[tuple[int, int, int]] = Counter()
    with torch.device("meta"):
        decoder = OobleckDecoder(config=config)
    for module in decoder.modules():
        if isinstance(module, SnakeBeta):
            module.register_forward_pre_hook(lambda _, args: counts.update([tuple(args[0].shape)]))
    with mock.patch.dict(os.environ, {backend.ENV: "torch"}):
        decoder(torch.empty(1, config.latent_dim, frames, device="meta"))
    return list(counts.items())


def _interpreted() -> bool:
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(tl.standard.sum, InterpretedFunction)


def _by_size(shapes):
    return sorted(shapes, key=lambda s: s[0][1] * s[0][2])


if ON_GPU:
    DECODER = decoder_snake_shapes(VAEConfig(), LATENT_FRAMES)
    SHAPES = DECODER
    CASES = ([(s, torch.bfloat16) for s in SHAPES] + [(s, torch.float32) for s in _by_size(SHAPES)[-2:]]
             + [(_by_size(SHAPES)[-1], torch.float16)])
    PROVIDERS = ("ours", "eager", "compile")
else:
    DECODER = decoder_snake_shapes(get_preset("tiny").vae, 2)
    SHAPES = _by_size(DECODER)[:2]
    CASES = [(s, torch.float32) for s in SHAPES]
    PROVIDERS = ("ours", "eager") if _interpreted() else ("eager",)

_ROWS: list[dict] = []
_CASE_STATE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _setup(request):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(backend.ENV, "triton")  # ours must never fall back silently
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        with torch._dynamo.config.patch(**{limit: 4 * len(CASES) + 8}):  # one specialised graph per case
            yield
    _print_table(request)


def _print_table(request) -> None:
    if not _ROWS:
        return
    # Teardown output is captured like a test's: print past the capture.
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        _write_table(request.config.pluginmanager.get_plugin("terminalreporter").write_line)


def _write_table(write) -> None:
    write("")
    write(f"SnakeBeta on {_device_name()}, median ms, GB/s of ours (benchmarks/report.py makes the full table)")
    write(f"{'shape':<18}{'dtype':<10}{'mode':<9}" + "".join(f"{p + ' ms':>12}" for p in PROVIDERS)
          + f"{'ours GB/s':>11}")
    for r in _ROWS:
        write(f"{r['shape']:<18}{r['dtype']:<10}{r['mode']:<9}"
              + "".join(f"{r[p + '_ms']:>12.4f}" for p in PROVIDERS) + f"{r.get('ours_gbps', float('nan')):>11.0f}")


def _device_name() -> str:
    return torch.cuda.get_device_name() if ON_GPU else "cpu"


def _inputs(shape, dtype, *, seed):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    channels = shape[1]

    def randn(*size, scale=1.0):
        return (torch.randn(*size, device=DEVICE, generator=g) * scale).to(dtype).requires_grad_()

    x = randn(*shape, scale=2.0)
    log_alpha, log_beta = randn(channels, scale=0.5), randn(channels, scale=0.5)
    return x, log_alpha, log_beta, randn(*shape).detach()


def _compiled():
    return torch.compile(snake_beta_reference, fullgraph=True, dynamic=False)


def _provider_fns():
    makers = {"ours": lambda: snake_beta, "eager": lambda: snake_beta_reference, "compile": _compiled}
    return {name: makers[name]() for name in PROVIDERS}


def _poison_allocator(*like: torch.Tensor) -> None:
    # NaN blocks of the outputs' sizes, freed at once: the caching allocator hands them out next, so an
    # element a kernel never writes shows up as NaN.
    blocks = [torch.full_like(t, float("nan")) for t in like for _ in range(2)]
    del blocks


def _outputs(fn, x, log_alpha, log_beta, dy):
    _poison_allocator(x, x)
    y = fn(x, log_alpha, log_beta)
    return [y.detach(), *torch.autograd.grad(y, (x, log_alpha, log_beta), dy)]


def _norm_err(actual, expected) -> float:
    return float((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30))


def _case(shape, dtype) -> dict:
    """Inputs, provider functions and their checked errors for one (shape, dtype), built once."""
    key = (shape, dtype)
    if key not in _CASE_STATE:
        x, log_alpha, log_beta, dy = _inputs(shape, dtype, seed=len(_CASE_STATE))
        fns = _provider_fns()
        leaves64 = [t.detach().double().requires_grad_() for t in (x, log_alpha, log_beta)]
        ref = _outputs(snake_beta_reference, *leaves64, dy.double())
        errors = {}
        for name, fn in fns.items():
            outs = _outputs(fn, x, log_alpha, log_beta, dy)
            for label, out in zip(("y", "dx", "dlog_alpha", "dlog_beta"), outs, strict=True):
                assert torch.isfinite(out).all(), f"{name} {label}: unwritten or non-finite elements"
            errors[name] = {label: _norm_err(out, r)
                            for label, out, r in zip(("y", "dx", "dlog_alpha", "dlog_beta"), outs, ref, strict=True)}
        del ref, leaves64
        _CASE_STATE[key] = {"inputs": (x, log_alpha, log_beta, dy), "fns": fns, "errors": errors}
    return _CASE_STATE[key]


def _step(fn, mode, x, log_alpha, log_beta, dy):
    """A zero-argument callable for one pass of `mode`."""
    leaves = (x, log_alpha, log_beta)
    if mode == "fwd":
        detached = [t.detach() for t in leaves]

        def forward():
            with torch.no_grad():
                return fn(*detached)
        return forward
    if mode == "bwd":
        y = fn(*leaves)
        return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)
    return lambda: torch.autograd.grad(fn(*leaves), leaves, dy)


def _median_ms(step) -> float:
    step()  # compile and warm up outside the timing
    if ON_GPU:
        import triton.testing

        torch.cuda.synchronize()
        return triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _peak_mib(step) -> float:
    if not ON_GPU:
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _bytes(shape, dtype, mode) -> int:
    """Fewest bytes through device memory: each input read once, each output written once."""
    numel, channels, size = shape[0] * shape[1] * shape[2], shape[1], torch.finfo(dtype).bits // 8
    tensors = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[mode]  # x, y | x, dy, dx | both
    params = {"fwd": 2, "bwd": 4, "fwd+bwd": 6}[mode]  # alpha, beta read (each pass); grads written
    return tensors * numel * size + params * channels * size


def _synchronised(step):
    def run():
        step()
        if ON_GPU:
            torch.cuda.synchronize()
    return run


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}x{}x{}-{}".format(*c[0][0], str(c[1]).removeprefix("torch.")))
def test_snake(benchmark, case, mode):
    (shape, count), dtype = case
    state = _case(shape, dtype)
    errors = state["errors"]
    for name, errs in errors.items():
        tol = (OURS_TOL if name == "ours" else BASELINE_TOL)[dtype]
        assert all(e <= tol for e in errs.values()), (name, errs, tol)

    steps = {name: _step(fn, mode, *state["inputs"]) for name, fn in state["fns"].items()}
    ms = {name: _median_ms(step) for name, step in steps.items()}
    nbytes = _bytes(shape, dtype, mode)
    row = {
        "op": "snake_beta", "shape": "x".join(map(str, shape)), "batch": shape[0], "channels": shape[1],
        "length": shape[2], "count": count, "decoder_layers": sum(c for _, c in DECODER),
        "dtype": str(dtype).removeprefix("torch."), "mode": mode,
        "bytes": nbytes, "device": _device_name(), "timing": "do_bench median, L2 flushed" if ON_GPU else "cpu",
        **{f"{name}_ms": t for name, t in ms.items()},
        **{f"{name}_peak_mib": _peak_mib(step) for name, step in steps.items()},
        **({"ours_gbps": nbytes / (ms["ours"] * 1e6)} if "ours" in ms else {}),
        "errors": errors,
        "block_t": snake._launch_config(shape[2])[0],
    }
    if mode in TARGETS:
        row["targets"] = TARGETS[mode]
    benchmark.extra_info.update(row)
    _ROWS.append(row)
    benchmark.pedantic(_synchronised(steps[PROVIDERS[0]]), rounds=20 if ON_GPU else 2, iterations=1,
                       warmup_rounds=3 if ON_GPU else 0)


@pytest.mark.skipif(not ON_GPU, reason="tuning run: GPU only")
@pytest.mark.parametrize("case", _by_size(SHAPES)[-2:],
                         ids=lambda c: "x".join(map(str, c[0])))
def test_block_sweep(benchmark, case, monkeypatch):
    shape, count = case
    state = _case(shape, torch.bfloat16)
    step = _step(snake_beta, "fwd+bwd", *state["inputs"])
    ms = {"ours": _median_ms(step)}
    for block in (1024, 4096):
        monkeypatch.setattr(snake, "MAX_BLOCK_T", block)
        ms[f"block{block}"] = _median_ms(step)
    monkeypatch.undo()
    row = {
        "op": "snake_beta block sweep", "shape": "x".join(map(str, shape)), "count": count, "dtype": "bfloat16",
        "mode": "fwd+bwd", "bytes": _bytes(shape, torch.bfloat16, "fwd+bwd"), "device": _device_name(),
        "block_t": snake._launch_config(shape[2])[0], **{f"{name}_ms": t for name, t in ms.items()},
    }
    benchmark.extra_info.update(row)
    benchmark.pedantic(_synchronised(step), rounds=5, iterations=1, warmup_rounds=1)
