"""Building blocks shared by the models: SnakeBeta and weight-normalised convolutions.

Parameter names follow stable-audio-tools 0.0.19 (`alpha`/`beta`, `weight_g`/`weight_v`), so Stable Audio
Open checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.snake import snake_beta


class SnakeBeta(nn.Module):
    """SnakeBeta with log-scale alpha and beta (both initialised to log 1 = 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake_beta(x, self.alpha, self.beta)


class _WeightNorm:
    """Weight norm over dim 0 (W = v * g / ||v||), stored as `weight_g` / `weight_v` like torch's old
    `nn.utils.weight_norm`, but as plain parameters: no hooks, works on the meta device, no deprecation."""

    weight_g: nn.Parameter
    weight_v: nn.Parameter

    def _split_weight(self) -> None:
        v = self.weight.detach()  # type: ignore[attr-defined]
        del self.weight  # type: ignore[attr-defined]
        dims = tuple(range(1, v.dim()))
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=dims, keepdim=True))
        self.weight_v = nn.Parameter(v.clone())

    def normalized_weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)


class WNConv1d(_WeightNorm, nn.Conv1d):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class WNConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    # ConvTranspose1d weights are [in, out, k], so g is per *input* channel, as in stable-audio-tools.
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._split_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.normalized_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
