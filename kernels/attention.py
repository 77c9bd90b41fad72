"""Multi-head attention with separate query / key lengths, grouped key-value heads and a key padding mask.

`attention_reference` is the explicit PyTorch definition (the test oracle); `attention` is what the models
call: the Triton flash-attention kernels when `backend.use_triton` says so, else PyTorch's
`scaled_dot_product_attention`.

Semantics shared by every path: q [B, H, Lq, D], k and v [B, Hkv, Lk, D] with H a multiple of Hkv (query head
j reads kv head j // (H / Hkv)), softmax scale 1/sqrt(D) unless given, not causal. `key_padding_mask`
[B, Lk] is True where a key may be attended to. A query row whose keys are all masked has no distribution to
average over: its output is defined as zeros, and it passes no gradient to q, k or v (plain softmax would
give NaN).

The Triton path is two custom ops, `triergon::flash_attention_forward` -> (out, lse) and
`triergon::flash_attention_backward` -> (dq, dk, dv), with fake implementations so `torch.compile` traces
them as opaque nodes; `FlashAttentionFunction` ties them together for autograd (and is also registered as
the forward op's autograd formula). Kernel design:

- Forward: one program per (BLOCK_M query rows, batch * head); it streams the kv head's keys in BLOCK_N
  tiles with an online softmax in base 2 (fp32 running max, sum and accumulator, whatever the input dtype)
  and writes the output and the natural-log log-sum-exp of each row (-inf for a row with no key).
- Ragged lengths: tails are masked only where needed, decided per launch by the EVEN_M / EVEN_N heuristics
  (Lq % BLOCK_M, Lk % BLOCK_N). Masked keys (padding mask or past Lk) get a score of -inf; rows past Lq are
  neither stored nor counted.
- Backward recomputes P from q, k and the saved LSE instead of saving it. A preprocessing kernel computes
  delta = rowsum(dO * O) (minus the incoming LSE gradient, so the LSE output is differentiable too). The
  dk/dv kernel gives one program per (BLOCK_N keys, batch * kv head) and loops over every query head of
  that kv head's group and every query tile, so a kv head's gradient sums over its query heads in registers
  without atomics (deterministic). When there are too few key tiles to fill the GPU (cross-attention to a
  few tokens), that loop is split over a third grid axis into fp32 partial sums that one `torch.sum` adds.
  The dq kernel gives one program per (BLOCK_M rows, batch * head) and loops over the key tiles.
  The last ragged tile is not peeled: with EVEN_N false every key tile pays one compare-and-select on the
  [BLOCK_M, BLOCK_N] scores, next to two tile products; peeling would duplicate each loop body (the
  interpreter cannot call jitted helpers) for a gain that only a GPU profile could show, on an op that is
  2-7% of the DiT's FLOPs.
- On CUDA the block sizes, warps and stages are autotuned per (Lq bucket, Lk bucket, D, mask), each length
  bucketed to the next power of two so that a new clip length does not re-tune, with tiles never much larger
  than the sequences; under TRITON_INTERPRET=1 fixed 16 x 16 tiles keep the interpreter fast.
- fp32 inputs use `tf32x3` dot products on the GPU (three TF32 tensor-core products, about fp32 accuracy)
  and exact IEEE products under the interpreter.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .backend import ENV, KernelBackendError, interpreting, requested_backend, use_triton

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The smallest tile a GPU `tl.dot` accepts; also the fixed tile under TRITON_INTERPRET=1.
MIN_BLOCK = 16
LOG2E = 1.4426950408889634


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
    assert q.dim() == k.dim() == v.dim() == 4, f"{q.shape=} {k.shape=} {v.shape=}"
    assert k.shape == v.shape and q.shape[0] == k.shape[0] and q.shape[-1] == k.shape[-1], (
        f"{q.shape=} {k.shape=} {v.shape=}"
    )
    assert q.shape[1] % k.shape[1] == 0, f"query heads must be a multiple of kv heads: {q.shape=} {k.shape=}"
    if key_padding_mask is not None:
        assert key_padding_mask.shape == (k.shape[0], k.shape[2]), f"{key_padding_mask.shape=} {k.shape=}"
        assert key_padding_mask.dtype == torch.bool, f"{key_padding_mask.dtype=}"


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v, computed in float32 (float64 for float64 inputs).

    Args:
        q: [batch, heads, q_len, head_dim].
        k, v: [batch, kv_heads, k_len, head_dim]; query head j uses kv head j // (heads / kv_heads).
        key_padding_mask: [batch, k_len], True where a key may be attended to. A row with no key to attend
            to gives zeros and zero gradients.
        scale: softmax scale, 1/sqrt(head_dim) by default.
    """
    _check(q, k, v, key_padding_mask)
    compute = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.to(compute), k.to(compute)) * scale
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    # softmax written out so that a row of -inf gives zeros instead of 0/0: the shift is any finite number
    # (detached: softmax does not depend on it), and an empty row divides 0 by 1.
    shift = scores.amax(dim=-1, keepdim=True).detach()
    e = (scores - torch.where(shift.isfinite(), shift, 0.0)).exp()
    total = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(total == 0, 1.0, total)
    return torch.einsum("bhqk,bhkd->bhqd", p, v.to(compute)).to(q.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Attention through the backend chosen by `TRIERGON_KERNELS` (`auto`: SDPA until a GPU measurement
    shows the Triton flash attention ahead at a shape; `triton`: flash attention; `torch`: SDPA).

    Args:
        q: [batch, heads, q_len, head_dim].
        k, v: [batch, kv_heads, k_len, head_dim]; query head j uses kv head j // (heads / kv_heads).
        key_padding_mask: [batch, k_len] bool, True where a key may be attended to; a row with no key gives
            zeros.
        scale: softmax scale, 1/sqrt(head_dim) by default.
    """
    _check(q, k, v, key_padding_mask)
    shape = {"batch": q.shape[0], "heads": q.shape[1], "kv_heads": k.shape[1], "q_len": q.shape[2],
             "k_len": k.shape[2], "head_dim": q.shape[3]}
    if use_triton("attention", q, shape):
        reason = _unsupported_reason(q)
        if reason is None:
            return flash_attention(q, k, v, key_padding_mask, scale)
        if requested_backend() == "triton":
            raise KernelBackendError(f"{ENV}=triton, but the Triton attention kernel {reason}")
    return _sdpa(q, k, v, key_padding_mask, scale)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """The Triton flash-attention kernels, differentiable; same arguments as `attention`.

    Needs CUDA tensors (or TRITON_INTERPRET=1), head_dim in `HEAD_DIMS`, and float32/float16/bfloat16.
    """
    _check(q, k, v, key_padding_mask)
    reason = _unsupported_reason(q)
    assert reason is None, f"flash_attention {reason}"
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, _ = FlashAttentionFunction.apply(q, k, v, key_padding_mask, scale)
    return out


def _unsupported_reason(q: torch.Tensor) -> str | None:
    if q.shape[-1] not in HEAD_DIMS:
        return f"supports head_dim in {HEAD_DIMS}, not {q.shape[-1]}"
    if q.dtype not in DTYPES:
        return f"supports float32, float16 and bfloat16, not {q.dtype}"
    return None


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
          scale: float | None) -> torch.Tensor:
    gqa = k.shape[1] != q.shape[1]
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    # Batch items with no key to attend to are zeroed explicitly rather than trusting each SDPA backend's
    # handling of all-masked rows: they attend to everything (finite values) and are then replaced by 0,
    # which also blocks their gradients.
    has_key = key_padding_mask.any(dim=-1)
    mask = (key_padding_mask | ~has_key[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return torch.where(has_key[:, None, None, None], out, 0.0)


# --- Triton kernels (built on first use, so that importing this module does not import Triton) --------------


@functools.cache
def _kernels(interpret: bool):
    """The jitted (forward, backward preprocessing, dk/dv, dq) kernels; `interpret` keys the cache because
    Triton decides at decoration time whether a kernel runs compiled or under TRITON_INTERPRET. Helpers are
    written inline: the interpreter re-executes each kernel's source without its closure."""
    import triton
    import triton.language as tl

    # Autotuning candidates, (BLOCK_M, BLOCK_N, num_warps, num_stages), for Hopper (H100 / H200) at head_dim 64
    # and 128: picked from the ptxas resource report (sm_90, bf16) to avoid register spills at head_dim 64;
    # timings still to be measured on the GPU.
    def tuned(configs):
        if interpret:
            return lambda fn: fn
        return triton.autotune(configs=[triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
                                        for m, n, w, s in configs],
                               key=["Lq_key", "Lk_key", "D", "HAS_MASK"],
                               prune_configs_by={"early_config_prune": _prune_configs})

    even = triton.heuristics({"EVEN_M": lambda a: a["Lq"] % a["BLOCK_M"] == 0,
                              "EVEN_N": lambda a: a["Lk"] % a["BLOCK_N"] == 0})

    @tuned([(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 64, 4, 4)])
    @even
    @triton.jit
    def fwd(Q, K, V, Mask, Out, Lse,
            stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
            stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
            H, GROUPS, Lq, Lk, Lq_key, Lk_key, qk_scale,
            HAS_MASK: tl.constexpr, DOT: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr):
        pid_bh = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        hk = h // GROUPS
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :]
        q = tl.load(q_ptrs) if EVEN_M else tl.load(q_ptrs, mask=(rows < Lq)[:, None], other=0.0)
        k_base = K + b * stride_kb + hk * stride_kh + offs_d[None, :]
        v_base = V + b * stride_vb + hk * stride_vh + offs_d[None, :]
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        for start_n in range(0, Lk, BLOCK_N):
            cols = start_n + offs_n
            if EVEN_N:
                k = tl.load(k_base + cols[:, None] * stride_kn)
                v = tl.load(v_base + cols[:, None] * stride_vn)
            else:
                k = tl.load(k_base + cols[:, None] * stride_kn, mask=(cols < Lk)[:, None], other=0.0)
                v = tl.load(v_base + cols[:, None] * stride_vn, mask=(cols < Lk)[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=DOT) * qk_scale
            if HAS_MASK:
                keep = tl.load(Mask + b * Lk + cols, mask=cols < Lk, other=0) != 0
                s = tl.where(keep[None, :], s, float("-inf"))
            elif not EVEN_N:
                s = tl.where((cols < Lk)[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row that has seen no key yet keeps m = -inf; shift it by 0 so that exp2 gives 0, not NaN.
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_shift[:, None])
            alpha = tl.math.exp2(m_i - m_shift)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT)
            m_i = m_new
        empty = l_i == 0.0
        l_safe = tl.where(empty, 1.0, l_i)
        out = (acc / l_safe[:, None]).to(Out.dtype.element_ty)
        # Natural-log LSE (m_i is in log2 units); -inf for a row with no key.
        lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
        o_ptrs = Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_om + offs_d[None, :]
        lse_ptrs = Lse + pid_bh.to(tl.int64) * Lq + rows
        if EVEN_M:
            tl.store(o_ptrs, out)
            tl.store(lse_ptrs, lse)
        else:
            tl.store(o_ptrs, out, mask=(rows < Lq)[:, None])
            tl.store(lse_ptrs, lse, mask=rows < Lq)

    @triton.jit
    def bwd_preprocess(Out, DO, DLse, Delta, stride_ob, stride_oh, stride_om, stride_dob, stride_doh, stride_dom,
                       H, Lq, HAS_DLSE: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr):
        pid_bh = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        row_mask = rows < Lq
        o = tl.load(Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_om + offs_d[None, :],
                    mask=row_mask[:, None], other=0.0)
        do = tl.load(DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_dom + offs_d[None, :],
                     mask=row_mask[:, None], other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        base = pid_bh.to(tl.int64) * Lq
        if HAS_DLSE:
            # d lse / d s = p, so an LSE gradient enters exactly as a shift of delta.
            delta -= tl.load(DLse + base + rows, mask=row_mask, other=0.0)
        tl.store(Delta + base + rows, delta, mask=row_mask)

    @tuned([(32, 64, 4, 3), (64, 64, 4, 3), (64, 64, 8, 2), (64, 128, 8, 3), (128, 64, 8, 2)])
    @even
    @triton.jit
    def bwd_dkdv(Q, K, V, Mask, DO, Lse, Delta, DK, DV,
                 stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                 stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_dom,
                 stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dvs, stride_dvb, stride_dvh, stride_dvn,
                 H, GROUPS, Lq, Lk, Lq_key, Lk_key, sm_scale, qk_scale, SPLITS,
                 HAS_MASK: tl.constexpr, DOT: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr):
        pid_bhk = tl.program_id(1)
        split = tl.program_id(2)
        Hkv = H // GROUPS
        b = (pid_bhk // Hkv).to(tl.int64)
        hk = (pid_bhk % Hkv).to(tl.int64)
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        k_ptrs = K + b * stride_kb + hk * stride_kh + cols[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = V + b * stride_vb + hk * stride_vh + cols[:, None] * stride_vn + offs_d[None, :]
        if EVEN_N:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=(cols < Lk)[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=(cols < Lk)[:, None], other=0.0)
        keep = (tl.load(Mask + b * Lk + cols, mask=cols < Lk, other=0) != 0) if HAS_MASK else cols < Lk
        dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
        m_tiles = tl.cdiv(Lq, BLOCK_M)
        # Every (query head of this kv head's group, query tile) pair, dealt round-robin to the splits.
        for it in range(split, GROUPS * m_tiles, SPLITS):
            h = hk * GROUPS + it // m_tiles
            rows = (it % m_tiles) * BLOCK_M + offs_m
            q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :]
            do_ptrs = DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_dom + offs_d[None, :]
            if EVEN_M:
                q = tl.load(q_ptrs)
                do = tl.load(do_ptrs)
            else:
                q = tl.load(q_ptrs, mask=(rows < Lq)[:, None], other=0.0)
                do = tl.load(do_ptrs, mask=(rows < Lq)[:, None], other=0.0)
            stats = (b * H + h) * Lq + rows
            # +inf (in log2 units) for rows past Lq and rows with no key, so that their P is exactly 0.
            lse = tl.load(Lse + stats, mask=rows < Lq, other=float("inf"))
            lse = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
            delta = tl.load(Delta + stats, mask=rows < Lq, other=0.0)
            # Transposed tiles ([keys, rows]), so that dv and dk need no transpose of P.
            p_t = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=DOT) * qk_scale - lse[None, :])
            if HAS_MASK or not EVEN_N:
                p_t = tl.where(keep[:, None], p_t, 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT)
            dp_t = tl.dot(v, tl.trans(do), input_precision=DOT)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT)
        dk *= sm_scale
        dk_ptrs = (DK + split * stride_dks + b * stride_dkb + hk * stride_dkh + cols[:, None] * stride_dkn
                   + offs_d[None, :])
        dv_ptrs = (DV + split * stride_dvs + b * stride_dvb + hk * stride_dvh + cols[:, None] * stride_dvn
                   + offs_d[None, :])
        if EVEN_N:
            tl.store(dk_ptrs, dk.to(DK.dtype.element_ty))
            tl.store(dv_ptrs, dv.to(DV.dtype.element_ty))
        else:
            tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=(cols < Lk)[:, None])
            tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=(cols < Lk)[:, None])

    @tuned([(64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 4), (64, 128, 8, 2), (128, 128, 8, 2)])
    @even
    @triton.jit
    def bwd_dq(Q, K, V, Mask, DO, Lse, Delta, DQ,
               stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
               stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_dom,
               stride_dqb, stride_dqh, stride_dqm,
               H, GROUPS, Lq, Lk, Lq_key, Lk_key, sm_scale, qk_scale,
               HAS_MASK: tl.constexpr, DOT: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr):
        pid_bh = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        hk = h // GROUPS
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :]
        do_ptrs = DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_dom + offs_d[None, :]
        if EVEN_M:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
        else:
            q = tl.load(q_ptrs, mask=(rows < Lq)[:, None], other=0.0)
            do = tl.load(do_ptrs, mask=(rows < Lq)[:, None], other=0.0)
        stats = pid_bh.to(tl.int64) * Lq + rows
        lse = tl.load(Lse + stats, mask=rows < Lq, other=float("inf"))
        lse = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
        delta = tl.load(Delta + stats, mask=rows < Lq, other=0.0)
        k_base = K + b * stride_kb + hk * stride_kh + offs_d[None, :]
        v_base = V + b * stride_vb + hk * stride_vh + offs_d[None, :]
        dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        for start_n in range(0, Lk, BLOCK_N):
            cols = start_n + offs_n
            if EVEN_N:
                k = tl.load(k_base + cols[:, None] * stride_kn)
                v = tl.load(v_base + cols[:, None] * stride_vn)
            else:
                k = tl.load(k_base + cols[:, None] * stride_kn, mask=(cols < Lk)[:, None], other=0.0)
                v = tl.load(v_base + cols[:, None] * stride_vn, mask=(cols < Lk)[:, None], other=0.0)
            p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=DOT) * qk_scale - lse[:, None])
            if HAS_MASK:
                keep = tl.load(Mask + b * Lk + cols, mask=cols < Lk, other=0) != 0
                p = tl.where(keep[None, :], p, 0.0)
            elif not EVEN_N:
                p = tl.where((cols < Lk)[None, :], p, 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT)
        dq *= sm_scale
        dq_ptrs = DQ + b * stride_dqb + h * stride_dqh + rows[:, None] * stride_dqm + offs_d[None, :]
        if EVEN_M:
            tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty))
        else:
            tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=(rows < Lq)[:, None])

    return fwd, bwd_preprocess, bwd_dkdv, bwd_dq


def _prune_configs(configs, named_args, **kwargs):
    """Shrink tiles to the sequences (a few tokens of cross-attention need no 128-wide key tile) and drop
    the duplicates that this makes."""
    import triton

    cap_m = max(MIN_BLOCK, triton.next_power_of_2(named_args["Lq"]))
    cap_n = max(MIN_BLOCK, triton.next_power_of_2(named_args["Lk"]))
    seen, kept = set(), []
    for c in configs:
        m, n = min(c.kwargs["BLOCK_M"], cap_m), min(c.kwargs["BLOCK_N"], cap_n)
        key = (m, n, c.num_warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            kept.append(triton.Config({**c.kwargs, "BLOCK_M": m, "BLOCK_N": n},
                                      num_warps=c.num_warps, num_stages=c.num_stages))
    return kept


def _blocks() -> dict[str, int]:
    """Fixed tiles under the interpreter; on a GPU the autotuner supplies them."""
    return {"BLOCK_M": MIN_BLOCK, "BLOCK_N": MIN_BLOCK} if interpreting() else {}


def _dot_precision(q: torch.Tensor) -> str:
    # fp32 inputs: three TF32 tensor-core products (hi*hi + hi*lo + lo*hi), close to fp32 accuracy at tensor-core
    # speed, instead of IEEE FMA on the CUDA cores. The interpreter only knows exact products ("ieee"), so the
    # tf32x3 path is checked on a GPU only. 16-bit inputs take the default path (their precision is ignored).
    if q.dtype != torch.float32 or interpreting():
        return "ieee"
    return "tf32x3"


def _tune_keys(q_len: int, k_len: int) -> tuple[int, int]:
    """The lengths the autotuner keys on: the next power of two, so that a new clip length reuses the tiles
    tuned for its bucket instead of stalling to re-tune (the tiles depend on the scale, not the exact size)."""
    return _next_power_of_2(q_len), _next_power_of_2(k_len)


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _dkdv_splits(q: torch.Tensor, k: torch.Tensor) -> int:
    """How many programs share one key tile's backward loop: more than 1 only when the key tiles of all
    batches and kv heads (counted at 64 keys a tile) leave most of the GPU idle, as cross-attention to a
    few tokens does."""
    if not q.is_cuda:
        return 1
    batch, heads, q_len, _ = q.shape
    kv_programs = batch * k.shape[1] * _cdiv(k.shape[2], 64)
    sms = _sm_count(q.device)
    if kv_programs >= sms:
        return 1
    iterations = heads // k.shape[1] * _cdiv(q_len, 64)
    return max(1, min(_cdiv(2 * sms, kv_programs), iterations // 4))


def _rowmajor(x: torch.Tensor) -> torch.Tensor:
    # The kernels take batch, head and row strides; the head_dim axis must be unit-stride.
    return x if x.stride(-1) == 1 else x.contiguous()


def _mask_arg(key_padding_mask: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    # A bool tensor read as bytes (row-major [B, Lk]); without a mask any pointer will do (never read).
    return fallback if key_padding_mask is None else key_padding_mask.contiguous().view(torch.uint8)


def _strides(x: torch.Tensor) -> tuple[int, ...]:
    return x.stride()[:-1]


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _rowmajor(q), _rowmajor(k), _rowmajor(v)
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    out = q.new_empty((batch, heads, q_len, head_dim))
    lse = q.new_empty((batch, heads, q_len), dtype=torch.float32)
    if out.numel() == 0:
        return out, lse.fill_(float("-inf"))
    fwd, _, _, _ = _kernels(interpreting())
    fwd[lambda meta: (_cdiv(q_len, meta["BLOCK_M"]), batch * heads)](
        q, k, v, _mask_arg(key_padding_mask, q), out, lse,
        *_strides(q), *_strides(k), *_strides(v), *_strides(out),
        heads, heads // kv_heads, q_len, k_len, *_tune_keys(q_len, k_len), scale * LOG2E,
        HAS_MASK=key_padding_mask is not None, DOT=_dot_precision(q), D=head_dim, **_blocks())
    return out, lse


def _backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor,
              dlse: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dout, q, k, v, out = (_rowmajor(t) for t in (dout, q, k, v, out))
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    dq = q.new_empty((batch, heads, q_len, head_dim))
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), k.new_zeros(k.shape), v.new_zeros(v.shape)
    _, preprocess, dkdv, dq_kernel = _kernels(interpreting())
    lse = lse.contiguous()
    delta = torch.empty_like(lse)
    pre_block = MIN_BLOCK if interpreting() else 64
    preprocess[(_cdiv(q_len, pre_block), batch * heads)](
        out, dout, lse if dlse is None else dlse.float().contiguous(), delta, *_strides(out), *_strides(dout),
        heads, q_len, HAS_DLSE=dlse is not None, D=head_dim, BLOCK_M=pre_block)
    mask = _mask_arg(key_padding_mask, q)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(dout))
    groups, qk_scale = heads // kv_heads, scale * LOG2E

    splits = _dkdv_splits(q, k)
    if splits == 1:
        dk, dv = k.new_empty((1, *k.shape)), v.new_empty((1, *v.shape))
    else:
        dk = k.new_empty((splits, *k.shape), dtype=torch.float32)
        dv = v.new_empty((splits, *v.shape), dtype=torch.float32)
    dkdv[lambda meta: (_cdiv(k_len, meta["BLOCK_N"]), batch * kv_heads, splits)](
        q, k, v, mask, dout, lse, delta, dk, dv, *common, *_strides(dk), *_strides(dv),
        heads, groups, q_len, k_len, *_tune_keys(q_len, k_len), scale, qk_scale, splits,
        HAS_MASK=key_padding_mask is not None, DOT=_dot_precision(q), D=head_dim, **_blocks())
    dk, dv = (dk[0], dv[0]) if splits == 1 else (dk.sum(0).to(k.dtype), dv.sum(0).to(v.dtype))

    dq_kernel[lambda meta: (_cdiv(q_len, meta["BLOCK_M"]), batch * heads)](
        q, k, v, mask, dout, lse, delta, dq, *common, *_strides(dq),
        heads, groups, q_len, k_len, *_tune_keys(q_len, k_len), scale, qk_scale,
        HAS_MASK=key_padding_mask is not None, DOT=_dot_precision(q), D=head_dim, **_blocks())
    return dq, dk, dv


# --- custom ops: opaque to torch.compile, differentiable through FlashAttentionFunction --------------------


@torch.library.custom_op("triergon::flash_attention_forward", mutates_args=())
def _flash_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             key_padding_mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, H, Lq, D] in q's dtype, lse [B, H, Lq] float32: natural-log log-sum-exp of each row's scaled
    scores, -inf for a row with no key)."""
    _check(q, k, v, key_padding_mask)
    return _forward(q, k, v, key_padding_mask, scale)


@_flash_attention_forward.register_fake
def _(q, k, v, key_padding_mask, scale):
    _check(q, k, v, key_padding_mask)
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("triergon::flash_attention_backward", mutates_args=())
def _flash_attention_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              key_padding_mask: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor,
                              dlse: torch.Tensor | None, scale: float,
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from the output gradient and, optionally, the LSE gradient."""
    assert dout.shape == out.shape == q.shape and lse.shape == q.shape[:3], f"{dout.shape=} {q.shape=} {lse.shape=}"
    return _backward(dout, q, k, v, key_padding_mask, out, lse, dlse, scale)


@_flash_attention_backward.register_fake
def _(dout, q, k, v, key_padding_mask, out, lse, dlse, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class FlashAttentionFunction(torch.autograd.Function):
    """(q, k, v, key_padding_mask, scale) -> (out, lse) through the custom ops; both outputs differentiable."""

    @staticmethod
    def forward(q, k, v, key_padding_mask, scale):
        return torch.ops.triergon.flash_attention_forward(q, k, v, key_padding_mask, scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, key_padding_mask, scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, key_padding_mask, out, lse)
        ctx.scale = scale
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, key_padding_mask, out, lse = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = torch.ops.triergon.flash_attention_backward(dout, q, k, v, key_padding_mask, out, lse, dlse,
                                                                 ctx.scale)
        return dq, dk, dv, None, None


torch.library.register_autograd("triergon::flash_attention_forward", FlashAttentionFunction.backward,
                                setup_context=FlashAttentionFunction.setup_context)
