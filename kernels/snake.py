"""SnakeBeta activation: y = x + 1 / (exp(beta) + 1e-9) * sin(exp(alpha) * x)^2, per channel.

`alpha` and `beta` hold logarithms (Stable Audio Open's `alpha_logscale=True`). `snake_beta_reference` is
the pure-PyTorch definition: the CPU path and the oracle that faster implementations are tested against.
"""

from __future__ import annotations

import torch

SNAKE_EPS = 1e-9


def snake_beta_reference(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta on `x` of shape [batch, channels, time] with per-channel log-scale `alpha`, `beta`.

    Args:
        x: input, [batch, channels, time].
        log_alpha: log of the frequency, [channels].
        log_beta: log of the magnitude, [channels].
    """
    assert x.dim() == 3 and log_alpha.shape == (x.shape[1],) == log_beta.shape, (
        f"{x.shape=} {log_alpha.shape=} {log_beta.shape=}"
    )
    alpha = log_alpha.exp()[None, :, None]
    beta = log_beta.exp()[None, :, None]
    # Same order of operations as stable-audio-tools, so float32 results agree to the last bits.
    return x + (1.0 / (beta + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


def snake_beta(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta through the selected backend (today: the PyTorch reference)."""
    return snake_beta_reference(x, log_alpha, log_beta)
