"""The fused SnakeBeta kernel against its float64 reference, the backend switch, and the kernel in the VAE.

Kernel tests run compiled on a CUDA GPU when there is one (benchmarks/run_gpu.sh runs this file there), and
otherwise under the Triton interpreter on the CPU. Triton must have been imported for the interpreter
(tests/conftest.py does it before any test module is imported, so in any file order); if something
imported it for the GPU earlier (a plugin, say), the kernel tests of this process skip, pointing to
`test_kernel_tests_under_the_interpreter`, which reruns this file in a fresh process with TRITON_INTERPRET=1.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import interpreter_problem, max_rel_err, perturb_, triton_is_interpreted

import triergon
from triergon import VAEConfig
from triergon.kernels import backend, snake
from triergon.kernels.snake import snake_beta, snake_beta_reference
from triergon.triergon_core.vae import OobleckVAE

INTERPRETED = triton_is_interpreted()
ON_GPU = torch.cuda.is_available() and not INTERPRETED
DEVICE = "cuda" if ON_GPU else "cpu"

SHAPES = [(2, 3, 41), (1, 5, 341), (3, 8, 7), (2, 4, 256), (1, 2, 4096), (1, 3, 2049)]
# (dtype, atol, rtol) for the output and dx: about one unit in the last place of the dtype. The interpreter
# rounds fp32 -> bf16 toward zero where GPUs round to nearest, so bf16 is checked on the GPU only.
DTYPES = [
    (torch.float32, 1e-5, 1e-5),
    (torch.float16, 1e-3, 1e-3),
    pytest.param((torch.bfloat16, 8e-3, 8e-3), marks=pytest.mark.skipif(
        not ON_GPU, reason="the Triton interpreter rounds fp32 -> bf16 toward zero; checked on the GPU")),
]
# ||out - ref|| / ||ref|| bounds: fp32 math, or one rounding to the storage dtype.
NORM_TOL = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}
# The parameter gradients are fp32 sums whatever the storage dtype.
PARAM_GRAD_TOL = 1e-4


@pytest.fixture
def kernels(monkeypatch):
    """Force the Triton path: compiled on a GPU, else the interpreter on the CPU."""
    pytest.importorskip("triton")
    if not (ON_GPU or INTERPRETED):
        pytest.skip("no GPU: test_kernel_tests_under_the_interpreter runs this in a fresh process")
    if not ON_GPU and (problem := interpreter_problem()):
        pytest.skip(problem)
    monkeypatch.setenv(backend.ENV, "triton")
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _inputs(shape, dtype, *, x_scale=3.0, device=DEVICE):
    """x (rounded to dtype), fp32 log_alpha / log_beta, and an upstream gradient, fresh for every call."""
    channels = shape[1]
    x = (torch.randn(shape) * x_scale).to(device=device, dtype=dtype)
    log_alpha = (torch.randn(channels) * 0.5).to(device)
    log_beta = (torch.randn(channels) * 0.5).to(device)
    grad = torch.randn(shape).to(device=device, dtype=dtype)
    return x, log_alpha, log_beta, grad


def _run(fn, x, log_alpha, log_beta, grad):
    """(y, dx, dlog_alpha, dlog_beta) of fn, with the allocator first handed NaN-filled blocks of the output's
    size, so that an element the kernel forgets to write shows up as NaN (reliable on CUDA's caching
    allocator, best effort on the CPU)."""
    poison = [torch.full_like(x, float("nan")) for _ in range(2)]
    del poison
    x, log_alpha, log_beta = (t.detach().clone().requires_grad_() for t in (x, log_alpha, log_beta))
    y = fn(x, log_alpha, log_beta)
    y.backward(grad)
    return y.detach(), x.grad, log_alpha.grad, log_beta.grad


def _reference64(x, log_alpha, log_beta, grad):
    return _run(snake_beta_reference, *(t.double() for t in (x, log_alpha, log_beta, grad)))


def _norm_err(actual, expected):
    return float((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30))


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("dtype_tol", DTYPES, ids=lambda p: str(p[0]).removeprefix("torch."))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_float64_reference(shape, dtype_tol):
    dtype, atol, rtol = dtype_tol
    inputs = _inputs(shape, dtype)
    y, dx, da, db = _run(snake_beta, *inputs)
    ry, rdx, rda, rdb = _reference64(*inputs)

    assert y.dtype == dx.dtype == dtype and da.dtype == db.dtype == torch.float32
    for name, out in (("y", y), ("dx", dx), ("dlog_alpha", da), ("dlog_beta", db)):
        assert torch.isfinite(out).all(), f"{name} has unwritten or non-finite elements"
    torch.testing.assert_close(y.double(), ry, atol=atol, rtol=rtol)
    torch.testing.assert_close(dx.double(), rdx, atol=atol, rtol=rtol)
    assert _norm_err(y, ry) < NORM_TOL[dtype] and _norm_err(dx, rdx) < NORM_TOL[dtype]
    assert max_rel_err(da, rda) < PARAM_GRAD_TOL, (max_rel_err(da, rda), da, rda)
    assert max_rel_err(db, rdb) < PARAM_GRAD_TOL, (max_rel_err(db, rdb), db, rdb)


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, *([torch.bfloat16] if ON_GPU else [])], ids=str)
def test_large_arguments_keep_their_accuracy(dtype):
    # |alpha x| up to ~3000: the fp16 / bf16 path reduces the argument to [-pi, pi] before the hardware sin.
    inputs = _inputs((2, 4, 300), dtype, x_scale=300.0)
    y, dx, da, db = _run(snake_beta, *inputs)
    ry, rdx, rda, rdb = _reference64(*inputs)
    assert _norm_err(y, ry) < NORM_TOL[dtype]
    # dx and the alpha gradient scale with alpha * x, so fp32 rounding of alpha * x shows at 1e-5 here.
    assert max_rel_err(dx, rdx) < 1e-3 and max_rel_err(da, rda) < 1e-3 and max_rel_err(db, rdb) < 1e-3


@pytest.mark.usefixtures("kernels")
def test_parameter_gradients_are_bitwise_reproducible():
    inputs = _inputs((2, 16, 4100), torch.float16)
    first, second = _run(snake_beta, *inputs), _run(snake_beta, *inputs)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.usefixtures("kernels")
def test_non_contiguous_input_and_gradient():
    x, log_alpha, log_beta, grad = _inputs((2, 41, 6), torch.float32)
    x, grad = x.transpose(1, 2), grad.transpose(1, 2)  # [2, 6, 41], strided
    y, dx, da, db = _run(snake_beta, x, log_alpha[:6], log_beta[:6], grad)
    ry, rdx, rda, rdb = _reference64(x, log_alpha[:6], log_beta[:6], grad)
    torch.testing.assert_close(y.double(), ry, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx.double(), rdx, atol=1e-5, rtol=1e-5)
    assert max_rel_err(da, rda) < PARAM_GRAD_TOL and max_rel_err(db, rdb) < PARAM_GRAD_TOL


@pytest.mark.usefixtures("kernels")
def test_empty_time_axis():
    x, log_alpha, log_beta, grad = _inputs((2, 3, 0), torch.float32)
    y, dx, da, db = _run(snake_beta, x, log_alpha, log_beta, grad)
    assert y.shape == dx.shape == (2, 3, 0)
    assert torch.equal(da, torch.zeros(3, device=DEVICE)) and torch.equal(db, torch.zeros(3, device=DEVICE))


@pytest.mark.usefixtures("kernels")
def test_eager_function_and_custom_op_agree_bitwise():
    inputs = _inputs((2, 3, 41), torch.float16)
    eager = _run(snake_beta, *inputs)
    op = _run(torch.ops.triergon.snake_beta, *inputs)
    for a, b in zip(eager, op, strict=True):
        assert torch.equal(a, b)


@pytest.mark.usefixtures("kernels")
def test_custom_ops_pass_opcheck():
    x, log_alpha, log_beta, grad = _inputs((2, 3, 41), torch.float32)
    torch.library.opcheck(torch.ops.triergon.snake_beta.default,
                          (x.requires_grad_(), log_alpha.requires_grad_(), log_beta.requires_grad_()))
    torch.library.opcheck(torch.ops.triergon.snake_beta_backward.default,
                          (grad, x.detach(), log_alpha.detach(), log_beta.detach()))


def _block(x, log_alpha, log_beta):
    return snake_beta(x * 2.0, log_alpha, log_beta) * 0.5


def _graph_recorder(graphs: dict[str, set[str]]):
    """A torch.compile backend that runs AOT autograd's graphs eagerly and keeps their ops' names."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    def keep(name):
        def compiler(gm, example_inputs):
            graphs[name] = {str(node.target) for node in gm.graph.nodes}
            return make_boxed_func(gm.forward)
        return compiler

    return aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward"))


@pytest.mark.usefixtures("kernels")
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_torch_compile_fullgraph_records_the_custom_ops():
    torch._dynamo.reset()
    graphs: dict[str, set[str]] = {}
    inputs = _inputs((2, 3, 41), torch.float32)
    compiled = _run(torch.compile(_block, fullgraph=True, backend=_graph_recorder(graphs)), *inputs)
    assert "triergon.snake_beta.default" in graphs["forward"], graphs
    assert "triergon.snake_beta_backward.default" in graphs["backward"], graphs
    for a, b in zip(compiled, _run(_block, *inputs), strict=True):
        assert torch.equal(a, b)


@pytest.mark.usefixtures("kernels")
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
@pytest.mark.skipif(not ON_GPU, reason="Inductor needs minutes on the CPU; the recording test covers tracing")
def test_torch_compile_inductor():
    torch._dynamo.reset()
    inputs = _inputs((2, 8, 1000), torch.bfloat16)
    compiled = _run(torch.compile(_block, fullgraph=True), *inputs)
    for a, b in zip(compiled, _run(_block, *inputs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def test_kernel_tests_under_the_interpreter():
    if ON_GPU or INTERPRETED:
        pytest.skip("the kernel tests run in this process")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(backend.ENV, None)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-p", "no:cacheprovider",
         "-k", "not under_the_interpreter and not does_not_import_triton"],
        cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=600,
    )
    report = res.stdout[-6000:] + res.stderr[-3000:]
    assert res.returncode == 0, report
    assert "fresh process" not in res.stdout, f"the kernel tests skipped under the interpreter too:\n{report}"


# --- the backend switch ----------------------------------------------------------------------------------------


def _no_kernel(*args, **kwargs):
    raise AssertionError("the Triton kernel ran")


def test_torch_backend_uses_the_reference(monkeypatch):
    monkeypatch.setenv(backend.ENV, "torch")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton could run; the switch must still say no
    monkeypatch.setattr(snake, "_launch", _no_kernel)
    x, log_alpha, log_beta, _ = _inputs((2, 3, 41), torch.float32, device="cpu")
    assert torch.equal(snake_beta(x, log_alpha, log_beta), snake_beta_reference(x, log_alpha, log_beta))


def test_auto_on_cpu_falls_back_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setenv(backend.ENV, "auto")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(snake, "_launch", _no_kernel)
    backend._log_fallback.cache_clear()
    x, log_alpha, log_beta, _ = _inputs((2, 3, 41), torch.float32, device="cpu")
    with caplog.at_level(logging.INFO, logger=backend.__name__):
        for _ in range(3):
            assert torch.equal(snake_beta(x, log_alpha, log_beta), snake_beta_reference(x, log_alpha, log_beta))
    records = [r for r in caplog.records if r.name == backend.__name__]
    assert len(records) == 1 and "snake_beta" in records[0].getMessage(), [r.getMessage() for r in records]


def test_triton_backend_on_cpu_without_interpreter_raises(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv(backend.ENV, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, log_alpha, log_beta, _ = _inputs((2, 3, 41), torch.float32, device="cpu")
    with pytest.raises(backend.KernelBackendError, match="snake_beta"):
        snake_beta(x, log_alpha, log_beta)


def test_float64_takes_the_reference(monkeypatch):
    monkeypatch.setenv(backend.ENV, "triton")
    monkeypatch.setattr(snake, "_launch", _no_kernel)
    x, log_alpha, log_beta, _ = (t.double() for t in _inputs((2, 3, 41), torch.float32, device="cpu"))
    assert torch.equal(snake_beta(x, log_alpha, log_beta), snake_beta_reference(x, log_alpha, log_beta))


def test_import_does_not_import_triton(tmp_path):
    probe = ("import json, sys, triergon, triergon.kernels.snake; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'triton')))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


# --- inside the real model -------------------------------------------------------------------------------------


def _vae_step(vae, audio):
    vae.zero_grad(set_to_none=True)
    recon, kl = vae(audio, generator=torch.Generator(audio.device).manual_seed(0))
    (recon.square().mean() + 1e-3 * kl).backward()
    return recon.detach(), kl.detach(), {n: p.grad.clone() for n, p in vae.named_parameters()}


@pytest.mark.usefixtures("kernels")
def test_vae_forward_and_backward_match_the_torch_backend(monkeypatch):
    # On the GPU the tiny preset; the interpreter needs ~15 s for it, so on the CPU a two-block VAE.
    if ON_GPU:
        vae, samples = triergon.build_model("tiny", seed=0).vae, 4096
    else:
        vae, samples = OobleckVAE(config=VAEConfig(channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=4)), 256
    vae = perturb_(vae.to(DEVICE), std=0.2).train()
    audio = torch.randn(1, 2, samples, device=DEVICE)
    # TF32 convolutions would round the two runs' slightly different activations apart.
    with torch.backends.cudnn.flags(enabled=True, deterministic=True, allow_tf32=False):
        recon, kl, grads = _vae_step(vae, audio)
        monkeypatch.setenv(backend.ENV, "torch")
        ref_recon, ref_kl, ref_grads = _vae_step(vae, audio)

    assert max_rel_err(recon, ref_recon) < 1e-5 and max_rel_err(kl, ref_kl) < 1e-5
    assert sum(n.endswith((".alpha", ".beta")) for n in grads) >= 60, list(grads)
    for name, grad in grads.items():
        assert max_rel_err(grad, ref_grads[name]) < 1e-4, (name, max_rel_err(grad, ref_grads[name]))
