"""Multi-head attention with separate query / key lengths, grouped key-value heads and a key padding mask.

`attention_reference` is the explicit PyTorch definition (the test oracle); `attention` is what the models
call (today: PyTorch's `scaled_dot_product_attention`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
    assert q.dim() == k.dim() == v.dim() == 4, f"{q.shape=} {k.shape=} {v.shape=}"
    assert k.shape == v.shape and q.shape[0] == k.shape[0] and q.shape[-1] == k.shape[-1], (
        f"{q.shape=} {k.shape=} {v.shape=}"
    )
    assert q.shape[1] % k.shape[1] == 0, f"query heads must be a multiple of kv heads: {q.shape=} {k.shape=}"
    if key_padding_mask is not None:
        assert key_padding_mask.shape == (k.shape[0], k.shape[2]), f"{key_padding_mask.shape=} {k.shape=}"


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with fp32 softmax statistics.

    Args:
        q: [batch, heads, q_len, head_dim].
        k, v: [batch, kv_heads, k_len, head_dim]; query head j uses kv head j // (heads / kv_heads).
        key_padding_mask: [batch, k_len], True where a key may be attended to.
    """
    _check(q, k, v, key_padding_mask)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(dim=-1), v.float()).to(q.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention through the selected backend (today: `scaled_dot_product_attention`); see the reference."""
    _check(q, k, v, key_padding_mask)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
