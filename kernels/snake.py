"""SnakeBeta activation: y = x + 1 / (exp(beta) + 1e-9) * sin(exp(alpha) * x)^2, per channel.

`alpha` and `beta` hold logarithms (Stable Audio Open's `alpha_logscale=True`). `snake_beta_reference` is
the pure-PyTorch definition: the CPU path and the oracle that faster implementations are tested against.
`snake_beta` is what the models call; it picks the fused Triton kernel or the reference through
`backend.use_triton`.

The Triton path has two entry points sharing one launcher: an `autograd.Function` for eager calls, and the
custom ops `triergon::snake_beta` / `triergon::snake_beta_backward` (fake implementations, autograd through
`register_autograd`) that `torch.compile(fullgraph=True)` records as opaque nodes. Eager calls avoid the
custom ops because their dispatch costs tens of microseconds more per forward + backward, which is more
than the kernel itself at the decoder's short early stages.

Kernel design:
- x is contiguous [B, C, T]; one program handles `BLOCK_T` consecutive samples of one (b, c) row, so alpha
  and beta are scalar loads and every element access is unit-stride (16-byte vector loads). The grid is
  one-dimensional (rows * tiles), with no 65535 limit on B * C. A row's last tile is masked, and the mask
  is compiled out (`EVEN_T`) when T is a multiple of the block.
- Math is fp32 whatever the storage dtype (fp32, fp16, bf16); outputs are rounded once. fp16 / bf16 use
  the hardware sin / cos after a range reduction (see `APPROX` in the kernel); fp32 keeps libdevice's.
- The backward reads x and dy once and recomputes sin(alpha x) and cos(alpha x) instead of saving them
  (autograd keeps only x). It writes dx, and per program one fp32 partial sum for the gradient of log alpha
  and one for log beta. Those partials ([2, B, C, tiles], under 1/500 of x's bytes) are reduced by one
  small `torch.sum` in fp32. This two-stage reduction was chosen over `atomic_add` into per-channel
  buffers: it costs the same number of launches (atomics need a zeroed buffer) and keeps the parameter
  gradients bitwise reproducible from run to run.
"""

from __future__ import annotations

import functools

import torch

from .backend import interpreting, use_triton

SNAKE_EPS = 1e-9
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The largest tile of a row that one program handles; shorter rows get the next power of two above T.
MAX_BLOCK_T = 2048


def snake_beta_reference(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta on `x` of shape [batch, channels, time] with per-channel log-scale `alpha`, `beta`.

    Args:
        x: input, [batch, channels, time].
        log_alpha: log of the frequency, [channels].
        log_beta: log of the magnitude, [channels].
    """
    _check(x, log_alpha, log_beta)
    alpha = log_alpha.exp()[None, :, None]
    beta = log_beta.exp()[None, :, None]
    # Same order of operations as stable-audio-tools, so float32 results agree to the last bits.
    return x + (1.0 / (beta + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


def snake_beta(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta through the backend chosen by `TRIERGON_KERNELS`: the fused Triton kernel or the reference.

    float64 inputs always take the reference (the kernel computes in fp32). The kernel returns x's dtype,
    where the reference follows type promotion (bf16 x with fp32 parameters gives fp32 there); under autocast
    the next convolution casts to bf16 either way, and writing bf16 halves the output's bytes.

    Args:
        x: input, [batch, channels, time], float32, float16 or bfloat16 for the kernel.
        log_alpha: log of the frequency, [channels].
        log_beta: log of the magnitude, [channels].
    """
    if x.dtype not in KERNEL_DTYPES or not use_triton("snake_beta", x, {"channels": x.shape[1], "time": x.shape[2]}):
        return snake_beta_reference(x, log_alpha, log_beta)
    if torch.compiler.is_compiling():
        return torch.ops.triergon.snake_beta(x, log_alpha, log_beta)
    return _SnakeBeta.apply(x, log_alpha, log_beta)


def _check(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> None:
    assert x.dim() == 3 and log_alpha.shape == (x.shape[1],) == log_beta.shape, (
        f"{x.shape=} {log_alpha.shape=} {log_beta.shape=}"
    )


# --- Triton kernels (built on first use, so that importing this module does not import Triton) --------------


@functools.cache
def _kernel(interpret: bool):
    """The jitted kernel (forward, or backward with BACKWARD=True). `interpret` keys the cache because
    Triton decides at decoration time whether a kernel runs compiled or under TRITON_INTERPRET."""
    import triton
    import triton.language as tl

    if not interpret:  # the interpreter has no libdevice: there numpy's exact sin and cos stand in
        from triton.language.extra import libdevice

    # One kernel body for both directions: the interpreter cannot call jitted helpers defined in a closure,
    # and the forward is the backward's first half.
    @triton.jit
    def snake_kernel(x_ptr, log_alpha_ptr, log_beta_ptr, out_ptr, dy_ptr, partial_ptr, C, T, n_tiles, n_programs,
                     BLOCK_T: tl.constexpr, EVEN_T: tl.constexpr, APPROX: tl.constexpr, BACKWARD: tl.constexpr,
                     INTERPRET: tl.constexpr):
        pid = tl.program_id(0)
        row = pid // n_tiles
        t = (pid % n_tiles) * BLOCK_T + tl.arange(0, BLOCK_T)
        channel = row % C
        alpha = tl.exp(tl.load(log_alpha_ptr + channel).to(tl.float32))
        beta = tl.exp(tl.load(log_beta_ptr + channel).to(tl.float32))
        inv_beta = 1.0 / (beta + 1e-9)  # SNAKE_EPS
        base = row.to(tl.int64) * T
        # Both loads are issued before any arithmetic, so that they are in flight together. Masked lanes
        # load dy = 0 and add nothing to the partial sums.
        if EVEN_T:
            x = tl.load(x_ptr + base + t).to(tl.float32)
            if BACKWARD:
                dy = tl.load(dy_ptr + base + t).to(tl.float32)
        else:
            x = tl.load(x_ptr + base + t, mask=t < T, other=0.0).to(tl.float32)
            if BACKWARD:
                dy = tl.load(dy_ptr + base + t, mask=t < T, other=0.0).to(tl.float32)

        a = x * alpha
        if APPROX:
            # fp16 / bf16 storage rounds at 5e-4 / 4e-3, so there the hardware sin and cos (one MUFU op
            # each, 2^-21.4 absolute error on [-pi, pi]) replace libdevice's ~20 instructions each, which
            # would make the kernel compute-bound. Their argument is first reduced to [-pi, pi] by a
            # three-part Cody-Waite subtraction of k * 2 pi (exact products for |a| < 2.5e4, graceful
            # beyond), with k = rint(a / 2 pi) by the 1.5 * 2^23 rounding trick.
            k = (a * 0.15915493667125702 + 12582912.0) - 12582912.0
            a = a - k * 6.28125
            a = a - k * 0.0019354820251464844
            a = a - k * -1.7484555314695172e-07
            if INTERPRET:
                s = tl.sin(a)
                c = tl.cos(a)
            else:
                s = libdevice.fast_sinf(a)
                c = libdevice.fast_cosf(a)
        else:
            s = tl.sin(a)
            c = tl.cos(a)

        if BACKWARD:
            # With b = beta + eps: dy/dx = 1 + 2 alpha / b sin cos, dy/dlog_alpha = 2 alpha / b x sin cos,
            # dy/dlog_beta = -beta / b^2 sin^2.
            sc = s * c
            scale = 2.0 * alpha * inv_beta
            out = dy * (1.0 + scale * sc)
            tl.store(partial_ptr + pid, scale * tl.sum(dy * x * sc, axis=0))
            tl.store(partial_ptr + n_programs + pid, -beta * inv_beta * inv_beta * tl.sum(dy * (s * s), axis=0))
        else:
            out = x + inv_beta * (s * s)  # the forward never uses c: the compiler drops it
        out = out.to(out_ptr.dtype.element_ty)
        if EVEN_T:
            tl.store(out_ptr + base + t, out)
        else:
            tl.store(out_ptr + base + t, out, mask=t < T)

    return snake_kernel


def _launch_config(T: int) -> tuple[int, int, int]:
    """(BLOCK_T, num_warps, tiles per row): 16 fp32 values per thread at full size, fewer warps for short rows."""
    block = min(MAX_BLOCK_T, max(128, 1 << (T - 1).bit_length()))
    return block, max(1, block // 512), -(-T // block)


def _launch(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor, dy: torch.Tensor | None,
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Runs the kernel on contiguous inputs: (y, None) forward, (dx, [2, C] parameter grads) backward."""
    batch, channels, T = x.shape
    out = torch.empty_like(x)
    backward = dy is not None
    if out.numel() == 0:
        return out, torch.zeros((2, channels), dtype=log_alpha.dtype, device=x.device) if backward else None
    block, warps, n_tiles = _launch_config(T)
    n_programs = batch * channels * n_tiles
    # The forward reads neither dy nor the partial sums: `out` stands in for both pointers.
    partial = torch.empty((2, batch, channels, n_tiles), dtype=torch.float32, device=x.device) if backward else out
    interpret = interpreting()
    _kernel(interpret)[(n_programs,)](
        x, log_alpha, log_beta, out, dy if backward else out, partial, channels, T, n_tiles, n_programs,
        BLOCK_T=block, EVEN_T=T % block == 0, APPROX=x.dtype in (torch.float16, torch.bfloat16), BACKWARD=backward,
        INTERPRET=interpret, num_warps=warps,
    )
    return out, partial.sum(dim=(1, 3)).to(log_alpha.dtype) if backward else None


# --- eager path: autograd.Function ---------------------------------------------------------------------------


class _SnakeBeta(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
        _check(x, log_alpha, log_beta)
        x, log_alpha, log_beta = x.contiguous(), log_alpha.contiguous(), log_beta.contiguous()
        ctx.save_for_backward(x, log_alpha, log_beta)
        return _launch(x, log_alpha, log_beta, None)[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, log_alpha, log_beta = ctx.saved_tensors
        dx, dparams = _launch(x, log_alpha, log_beta, grad.contiguous())
        return dx, dparams[0], dparams[1]


# --- compiled path: custom ops, opaque to torch.compile, differentiable through register_autograd -----------


@torch.library.custom_op("triergon::snake_beta", mutates_args=())
def _snake_beta_op(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    _check(x, log_alpha, log_beta)
    return _launch(x.contiguous(), log_alpha.contiguous(), log_beta.contiguous(), None)[0]


@_snake_beta_op.register_fake
def _(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    _check(x, log_alpha, log_beta)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("triergon::snake_beta_backward", mutates_args=())
def _snake_beta_backward_op(grad: torch.Tensor, x: torch.Tensor, log_alpha: torch.Tensor,
                            log_beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad of x, [2, C]: grads of log_alpha and log_beta stacked)."""
    assert grad.shape == x.shape, f"{grad.shape=} {x.shape=}"
    dx, dparams = _launch(x.contiguous(), log_alpha.contiguous(), log_beta.contiguous(), grad.contiguous())
    return dx, dparams


@_snake_beta_backward_op.register_fake
def _(grad: torch.Tensor, x: torch.Tensor, log_alpha: torch.Tensor,
      log_beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), log_alpha.new_empty((2, x.shape[1]))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward_rule(ctx, grad: torch.Tensor):
    x, log_alpha, log_beta = ctx.saved_tensors
    dx, dparams = _snake_beta_backward_op(grad, x, log_alpha, log_beta)
    return dx, dparams[0], dparams[1]


_snake_beta_op.register_autograd(_backward_rule, setup_context=_setup_context)
