"""The diffusion transformer: Stable Audio Open's DiT, with its parameter names and behaviour.

Cross-attention to the conditioning tokens E in every block, rotary positions on the first 32 channels of
each head, timestep Fourier features, global conditioning (timing) prepended as one token, SwiGLU
feed-forward. Keys equal stable-audio-tools' `DiffusionTransformer`, so SAO's DiT loads unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..kernels.attention import attention
from .config import DiTConfig

ROTARY_MIN_DIM = 32
ROTARY_BASE = 10000.0


class LayerNorm(nn.Module):
    """LayerNorm with SAO's key names: weight `gamma` (parameter), bias `beta` (a buffer, zeros).

    `beta` is cast to the input's dtype at use: FSDP2's mixed precision casts parameters, not buffers, so a
    bf16 `gamma` would otherwise meet a float32 `beta`.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma.to(x.dtype), self.beta.to(x.dtype), self.eps)


class FourierFeatures(nn.Module):
    """t -> [cos(2 pi t W), sin(2 pi t W)] (cosine first, as SAO's timestep features)."""

    def __init__(self, *, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, 1) * std)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * t[:, None] @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary angles for the first `dim` channels of a head; channel i pairs with i + dim/2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", ROTARY_BASE ** -(torch.arange(0, dim, 2).float() / dim))

    def forward(self, length: int) -> torch.Tensor:
        t = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.float())
        return torch.cat([freqs, freqs], dim=-1)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first freqs.shape[-1] channels of x [B, H, L, D] (in float32), pass the rest through."""
    rot = freqs.shape[-1]
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:]
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = x_rot * freqs.cos() + torch.cat([-x2, x1], dim=-1) * freqs.sin()
    return torch.cat([rotated.to(x.dtype), x_pass], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, *, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = attention(apply_rotary(q, freqs), apply_rotary(k, freqs), v)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Queries from the sequence, keys/values from the context with context_dim / head_dim heads (SAO: 24
    query heads share 12 key/value heads)."""

    def __init__(self, *, dim: int, context_dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads = dim // head_dim, context_dim // head_dim
        assert self.kv_heads >= 1 and self.heads % self.kv_heads == 0, f"{dim=} {context_dim=} {head_dim=}"
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * context_dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.kv_heads) for t in self.to_kv(context).chunk(2, -1))
        out = attention(q, k, v, key_padding_mask=context_mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class GLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.silu(gate)


class FeedForward(nn.Module):
    def __init__(self, *, dim: int, mult: int) -> None:
        super().__init__()
        # Index 1 holds SAO's (parameter-free) dropout slot, so the output layer keeps the key `ff.2`.
        self.ff = nn.Sequential(GLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    def __init__(self, *, dim: int, head_dim: int, context_dim: int, ff_mult: int) -> None:
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = SelfAttention(dim=dim, head_dim=head_dim)
        self.cross_attend_norm = LayerNorm(dim)
        self.cross_attn = CrossAttention(dim=dim, context_dim=context_dim, head_dim=head_dim)
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim=dim, mult=ff_mult)

    def forward(self, x: torch.Tensor, context: torch.Tensor, freqs: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.pre_norm(x), freqs)
        x = x + self.cross_attn(self.cross_attend_norm(x), context, context_mask)
        return x + self.ff(self.ff_norm(x))


class ContinuousTransformer(nn.Module):
    def __init__(self, *, config: DiTConfig, context_dim: int) -> None:
        super().__init__()
        dim = config.embed_dim
        self.project_in = nn.Linear(config.io_channels, dim, bias=False)
        self.project_out = nn.Linear(dim, config.io_channels, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(max(config.head_dim // 2, ROTARY_MIN_DIM))
        self.layers = nn.ModuleList(
            TransformerBlock(dim=dim, head_dim=config.head_dim, context_dim=context_dim, ff_mult=config.ff_mult)
            for _ in range(config.depth)
        )

    def forward(self, x: torch.Tensor, prepend: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat([prepend, self.project_in(x)], dim=1)
        freqs = self.rotary_pos_emb(x.shape[1])
        for layer in self.layers:
            x = layer(x, context, freqs, context_mask)
        return self.project_out(x)


class DiT(nn.Module):
    """v-predicting diffusion transformer over VAE latents [B, io_channels, frames].

    `forward(x, t, context, global_cond)` is one network evaluation; classifier-free guidance lives in the
    sampler's denoiser, which batches the conditional and unconditional halves into one call.
    """

    def __init__(self, *, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim, cond_dim = config.embed_dim, config.cond_token_dim
        cond_embed_dim = dim if config.project_cond_tokens else cond_dim
        self.timestep_features = FourierFeatures(out_features=256)
        self.to_timestep_embed = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.to_cond_embed = nn.Sequential(nn.Linear(cond_dim, cond_embed_dim, bias=False), nn.SiLU(),
                                           nn.Linear(cond_embed_dim, cond_embed_dim, bias=False))
        self.to_global_embed = nn.Sequential(nn.Linear(config.global_cond_dim, dim, bias=False), nn.SiLU(),
                                             nn.Linear(dim, dim, bias=False))
        self.transformer = ContinuousTransformer(config=config, context_dim=cond_embed_dim)
        self.preprocess_conv = nn.Conv1d(config.io_channels, config.io_channels, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(config.io_channels, config.io_channels, 1, bias=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # As stable-audio-tools: residual branch outputs and the 1x1 pre/post convs start at zero, so a new
        # model is an identity-plus-projection and training starts stable.
        for block in self.transformer.layers:
            for layer in (block.self_attn.to_out, block.cross_attn.to_out, block.ff.ff[2]):
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.preprocess_conv.weight)
        nn.init.zeros_(self.postprocess_conv.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, global_cond: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One denoiser evaluation.

        Args:
            x: noisy latents [B, io_channels, frames].
            t: diffusion times in [0, 1], [B].
            context: conditioning tokens E [B, tokens, cond_token_dim].
            global_cond: global conditioning [B, global_cond_dim] (timing embeddings).
            context_mask: optional [B, tokens], True for tokens to attend to (SAO ignores masks; None
                reproduces it).

        Returns:
            the v prediction, [B, io_channels, frames].
        """
        assert x.dim() == 3 and x.shape[1] == self.config.io_channels, f"{x.shape=} {self.config.io_channels=}"
        assert t.shape == (x.shape[0],), f"{t.shape=} {x.shape=}"
        context = self.to_cond_embed(context)
        prepend = self.to_global_embed(global_cond) + self.to_timestep_embed(self.timestep_features(t))
        x = self.preprocess_conv(x) + x
        out = self.transformer(rearrange(x, "b c n -> b n c"), prepend[:, None], context, context_mask)
        out = rearrange(out, "b n c -> b c n")[:, :, 1:]
        return self.postprocess_conv(out) + out
