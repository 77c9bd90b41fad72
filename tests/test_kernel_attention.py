"""Triton flash attention (forward and backward) against the PyTorch reference, the backend switch, and the
kernels inside the tiny DiT.

Kernel tests run compiled on a CUDA GPU when there is one, and otherwise on the CPU under the Triton
interpreter, with 16 x 16 tiles, so that every shape here crosses tiles, has ragged tails, grouped kv heads
and (where asked) a key padding mask. Triton must have been imported for the interpreter (tests/conftest.py
does it before the first kernel test module is imported, in any file order); if something imported it for
the GPU earlier (a plugin, say), the kernel tests skip here and `test_kernel_tests_under_the_interpreter`
runs them in a fresh process with TRITON_INTERPRET=1.

The interpreter's `tl.dot` is exact for float32 and float16 but wrong for bfloat16, so bfloat16 is
checked on a GPU only (here when there is one, and in benchmarks/bench_attention.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import interpreter_problem, max_rel_err, perturb_, triton_is_interpreted

import triergon
from triergon.kernels import attention as attn
from triergon.kernels.backend import ENV, KernelBackendError

INTERPRETED = triton_is_interpreted()
ON_GPU = torch.cuda.is_available() and not INTERPRETED
DEVICE = "cuda" if ON_GPU else "cpu"
INTERPRETER_PROBLEM = interpreter_problem() if INTERPRETED else None
needs_kernels = pytest.mark.skipif(
    not (ON_GPU or INTERPRETED) or INTERPRETER_PROBLEM is not None,
    reason=INTERPRETER_PROBLEM or "no GPU: test_kernel_tests_under_the_interpreter runs this in a fresh process")

# Largest error relative to the reference's largest magnitude (the reference runs in float64 on the inputs
# rounded to the tested dtype). Measured on the CPU interpreter: float32 <= 1.0e-6 for outputs and gradients
# (the largest, dk with one key, is pure cancellation); float16 <= 6.1e-4, the kernel rounding P and dS to
# fp16 before their products as flash attention does. bfloat16 (GPU only) has 3 fewer mantissa bits than
# float16: 8x the float16 bound, not yet measured.
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2.4e-2}


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    """Kernels run compiled on a GPU, else under the interpreter; the backend switch starts at `auto`."""
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(ENV, raising=False)


def _inputs(batch, heads, kv_heads, q_len, k_len, head_dim, masked, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=g, dtype=torch.float64)
    k = torch.randn(batch, kv_heads, k_len, head_dim, generator=g, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, k_len, head_dim, generator=g, dtype=torch.float64)
    dout = torch.randn(batch, heads, q_len, head_dim, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(batch, k_len, generator=g) > 0.3
        mask[:, -1] = True  # every batch item keeps a key ...
        mask[0] = False  # ... except the first, whose rows have none
    return q, k, v, mask, dout


def _grads(fn, q, k, v, mask, dout, dtype, device="cpu"):
    """(out, dq, dk, dv) of fn on `device`, returned on the CPU."""
    leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, None if mask is None else mask.to(device))
    out.backward(dout.to(device, dtype))
    return [t.cpu() for t in (out.detach(), *(leaf.grad for leaf in leaves))]


def _reference(q, k, v, mask, dout, dtype):
    """float64 reference on inputs rounded to `dtype` (so only the kernel's arithmetic is measured)."""
    q, k, v, dout = (t.to(dtype).double() for t in (q, k, v, dout))
    return _grads(attn.attention_reference, q, k, v, mask, dout, torch.float64)


def _err(actual, expected):
    """Largest difference relative to the reference's largest magnitude, or absolute where that is below 1
    (with one key, dq and dk are exactly 0 and only cancellation error is left)."""
    return float((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1.0))


def _errors(ours, ref):
    return {name: _err(a, b) for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref, strict=True)}


# (batch, heads, kv_heads, q_len, k_len, head_dim, key padding mask)
CASES = [
    (2, 4, 4, 17, 17, 64, False),  # self-attention, ragged tails in both lengths
    (2, 4, 2, 33, 8, 64, False),  # cross-attention to 8 tokens, 2 query heads per kv head
    (2, 4, 1, 5, 1, 64, False),  # one key, one kv head for all query heads
    (2, 4, 2, 17, 3, 64, True),  # mask over 3 keys, first batch item fully masked
    (2, 4, 4, 33, 17, 64, True),
    (2, 4, 1, 5, 33, 64, True),
    (2, 4, 2, 32, 16, 64, False),  # lengths that are multiples of the tile (EVEN_M, EVEN_N)
    (2, 4, 2, 16, 32, 64, True),
    (2, 4, 2, 17, 8, 128, True),
    (1, 4, 4, 16, 33, 128, False),
    (2, 2, 1, 9, 5, 32, True),
    (2, 4, 2, 1, 17, 64, True),  # a single query
]


def _case_id(case):
    return "b{}h{}kv{}q{}k{}d{}{}".format(*case[:6], "m" if case[6] else "")


@needs_kernels
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference_float32(case):
    q, k, v, mask, dout = _inputs(*case)
    ours = _grads(attn.flash_attention, q, k, v, mask, dout, torch.float32, DEVICE)
    errors = _errors(ours, _reference(q, k, v, mask, dout, torch.float32))
    print(case, {n: f"{e:.1e}" for n, e in errors.items()})
    assert all(e <= TOL[torch.float32] for e in errors.values()), errors
    assert all(t.dtype == torch.float32 for t in ours)
    if mask is not None:
        # rows with no key: exactly zero output and no gradient to their queries; masked keys get none
        out, dq, dk, dv = ours
        assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.equal(dq[0], torch.zeros_like(dq[0]))
        masked_keys = ~mask[:, None, :, None].expand_as(dk)
        assert not dk[masked_keys].any() and not dv[masked_keys].any()


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not ON_GPU, reason="the interpreter's bf16 tl.dot is wrong; checked on the GPU"))], ids=str)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[8]], ids=_case_id)
def test_matches_reference_half(case, dtype):
    q, k, v, mask, dout = _inputs(*case, seed=1)
    ours = _grads(attn.flash_attention, q, k, v, mask, dout, dtype, DEVICE)
    errors = _errors(ours, _reference(q, k, v, mask, dout, dtype))
    print(case, dtype, {n: f"{e:.1e}" for n, e in errors.items()})
    assert all(e <= TOL[dtype] for e in errors.values()), errors
    assert all(t.dtype == dtype for t in ours)


@needs_kernels
def test_split_key_backward(monkeypatch):
    # On a GPU, cross-attention to a few tokens splits each key tile's loop over query heads and tiles
    # across programs; force the split here.
    monkeypatch.setattr(attn, "_dkdv_splits", lambda q, k: 3)
    case = (2, 4, 2, 33, 8, 64, True)
    q, k, v, mask, dout = _inputs(*case, seed=2)
    errors = _errors(_grads(attn.flash_attention, q, k, v, mask, dout, torch.float32, DEVICE),
                     _reference(q, k, v, mask, dout, torch.float32))
    assert all(e <= TOL[torch.float32] for e in errors.values()), errors


@needs_kernels
def test_strided_inputs():
    # [B, L, H, D] memory seen as [B, H, L, D] (as the DiT's head split makes it), and a head_dim axis that is
    # not unit-stride (copied by the launcher)
    q, k, v, mask, dout = _inputs(2, 4, 2, 17, 9, 32, True, seed=10)

    def strided(q, k, v, m):
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
        k = k.transpose(2, 3).contiguous().transpose(2, 3)
        return attn.flash_attention(q, k, v, m)

    ours = _grads(strided, q, k, v, mask, dout, torch.float32, DEVICE)
    errors = _errors(ours, _reference(q, k, v, mask, dout, torch.float32))
    assert all(e <= TOL[torch.float32] for e in errors.values()), errors


@needs_kernels
def test_log_sum_exp_and_its_gradient():
    q, k, v, mask, dout = _inputs(2, 4, 2, 17, 8, 64, True, seed=3)
    scale = 0.3
    w = torch.randn(2, 4, 17, dtype=torch.float64)

    def loss(out, lse):
        return (out * dout).sum() + (torch.where(lse.isfinite(), lse, 0.0) * w).sum()

    leaves = [t.to(DEVICE, torch.float32).requires_grad_() for t in (q, k, v)]
    out, lse = attn.FlashAttentionFunction.apply(*leaves, mask.to(DEVICE), scale)
    loss(out.cpu().double(), lse.cpu().double()).backward()
    lse = lse.detach().cpu()
    ref_leaves = [t.float().double().requires_grad_() for t in (q, k, v)]
    rq, rk, rv = ref_leaves
    scores = torch.einsum("bhqd,bhkd->bhqk", rq, rk.repeat_interleave(2, dim=1)) * scale
    ref_lse = scores.masked_fill(~mask[:, None, None, :], float("-inf")).logsumexp(dim=-1)
    loss(attn.attention_reference(rq, rk, rv, mask, scale), ref_lse).backward()
    assert lse.dtype == torch.float32 and lse.shape == (2, 4, 17)
    assert torch.equal(lse[0], torch.full_like(lse[0], float("-inf")))  # no key: log 0
    assert max_rel_err(lse[1], ref_lse[1]) <= 1e-6
    for ours, ref in zip(leaves, ref_leaves, strict=True):
        assert max_rel_err(ours.grad.cpu(), ref.grad) <= TOL[torch.float32]


def test_reference_defines_rows_without_keys():
    q, k, v, mask, dout = _inputs(2, 2, 1, 5, 4, 16, True, seed=4)
    out, dq, dk, dv = _grads(attn.attention_reference, q, k, v, mask, dout, torch.float64)
    assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.equal(dq[0], torch.zeros_like(dq[0]))
    assert all(not t.isnan().any() for t in (out, dq, dk, dv))
    # elsewhere it is plain softmax attention
    expected = torch.nn.functional.scaled_dot_product_attention(
        q[1:], k[1:], v[1:], attn_mask=mask[1:, None, None, :], enable_gqa=True)
    assert max_rel_err(out[1:], expected) <= 1e-12


def test_sdpa_path_gives_zeros_for_rows_without_keys():
    q, k, v, mask, dout = _inputs(2, 4, 2, 9, 5, 16, True, seed=5)
    ours = _grads(lambda q, k, v, m: attn._sdpa(q, k, v, m, None), q, k, v, mask, dout, torch.float64)
    errors = _errors(ours, _reference(q, k, v, mask, dout, torch.float64))
    assert all(e <= 1e-12 for e in errors.values()), errors


@needs_kernels
def test_custom_ops_opcheck():
    q, k, v, mask, dout = _inputs(1, 2, 1, 5, 3, 16, True, seed=6)
    q, k, v, dout = (t.to(DEVICE, torch.float32) for t in (q, k, v, dout))
    mask = mask.to(DEVICE)
    fwd = torch.ops.triergon.flash_attention_forward.default
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.library.opcheck(fwd, (*leaves, mask, 0.25))
    out, lse = fwd(q, k, v, mask, 0.25)
    torch.library.opcheck(torch.ops.triergon.flash_attention_backward.default,
                          (dout, q, k, v, mask, out, lse, None, 0.25))


@needs_kernels
def test_torch_compile_traces_the_ops():
    torch._dynamo.reset()
    q, k, v, mask, dout = _inputs(2, 4, 2, 9, 5, 32, True, seed=7)
    compiled = torch.compile(attn.flash_attention, backend="aot_eager", fullgraph=True)
    eager = _grads(attn.flash_attention, q, k, v, mask, dout, torch.float32, DEVICE)
    traced = _grads(compiled, q, k, v, mask, dout, torch.float32, DEVICE)
    for a, b in zip(traced, eager, strict=True):
        assert torch.equal(a, b)


# --- the backend switch ---------------------------------------------------------------------------------


@pytest.fixture
def spies(monkeypatch):
    calls = []
    real_flash, real_sdpa = attn.flash_attention, attn._sdpa
    monkeypatch.setattr(attn, "flash_attention", lambda *a: calls.append("triton") or real_flash(*a))
    monkeypatch.setattr(attn, "_sdpa", lambda *a: calls.append("sdpa") or real_sdpa(*a))
    return calls


def _small(head_dim=16, device=DEVICE):
    q, k, v, mask, _ = _inputs(2, 4, 2, 5, 3, head_dim, True, seed=8)
    return q.to(device, torch.float32), k.to(device, torch.float32), v.to(device, torch.float32), mask.to(device)


@needs_kernels
@pytest.mark.parametrize(("backend", "expected"), [("auto", "sdpa"), ("triton", "triton"), ("torch", "sdpa")])
def test_backend_switch_where_triton_runs(monkeypatch, spies, backend, expected):
    monkeypatch.setenv(ENV, backend)
    q, k, v, mask = _small()
    out = attn.attention(q, k, v, mask)
    assert spies == [expected]
    assert max_rel_err(out.cpu(), attn.attention_reference(q, k, v, mask).cpu()) <= TOL[torch.float32]


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cpu_tensors_without_the_interpreter_use_sdpa(monkeypatch, spies, backend):
    monkeypatch.setenv(ENV, backend)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, mask = _small(device="cpu")
    out = attn.attention(q, k, v, mask)
    assert spies == ["sdpa"]
    assert max_rel_err(out, attn.attention_reference(q, k, v, mask)) <= TOL[torch.float32]


def test_triton_backend_on_cpu_without_the_interpreter_raises(monkeypatch):
    monkeypatch.setenv(ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelBackendError, match="attention"):
        attn.attention(*_small(device="cpu"))


def test_unsupported_head_dim(monkeypatch, spies):
    q, k, v, mask = _small(head_dim=24)
    attn.attention(q, k, v, mask)  # auto: SDPA, whatever the device
    assert spies == ["sdpa"]
    monkeypatch.setenv(ENV, "triton")
    with pytest.raises(KernelBackendError, match="head_dim"):
        attn.attention(q, k, v, mask)


# --- the whole model -------------------------------------------------------------------------------------

# Measured (CPU interpreter): largest difference between the two backends relative to each tensor's largest
# magnitude, 4.8e-7 for the output and 1.4e-6 over all parameter gradients (float32 sums in another order).
DIT_TOL = 1e-5


@needs_kernels
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "context-mask"])
def test_tiny_dit_matches_sdpa_backend(monkeypatch, masked):
    dit = perturb_(triergon.build_model("tiny", seed=0).dit).to(DEVICE)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 16, 12, generator=g)
    t = torch.rand(2, generator=g)
    context = torch.randn(2, 8, 64, generator=g)
    global_cond = torch.randn(2, 128, generator=g)
    context_mask = torch.tensor([[True] * 5 + [False] * 3, [False, True] * 4]) if masked else None
    grad_out = torch.randn(2, 16, 12, generator=g)
    args = [a if a is None else a.to(DEVICE) for a in (x, t, context, global_cond, context_mask)]

    def run(backend):
        monkeypatch.setenv(ENV, backend)
        dit.zero_grad(set_to_none=True)
        out = dit(*args)
        out.backward(grad_out.to(DEVICE))
        return out.detach().cpu(), {n: p.grad.cpu() for n, p in dit.named_parameters()}

    ref_out, ref_grads = run("torch")
    out, grads = run("triton")
    errors = {"out": max_rel_err(out, ref_out)}
    errors |= {n: max_rel_err(grads[n], ref_grads[n]) for n in ref_grads}
    worst = max(errors, key=errors.get)
    print(f"tiny DiT, triton vs torch: output {errors['out']:.1e}, worst {worst} {errors[worst]:.1e}")
    assert all(e <= DIT_TOL for e in errors.values()), {n: e for n, e in errors.items() if e > DIT_TOL}


def test_kernel_tests_under_the_interpreter():
    if ON_GPU or INTERPRETED:
        pytest.skip("the kernel tests run in this process")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(ENV, None)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-p", "no:cacheprovider",
         "-k", "not under_the_interpreter"],
        cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=900,
    )
    report = res.stdout[-6000:] + res.stderr[-3000:]
    print(report)
    assert res.returncode == 0, report
    assert "fresh process" not in res.stdout, f"the kernel tests skipped under the interpreter too:\n{report}"
