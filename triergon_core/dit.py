"""The diffusion transformer: Stable Audio Open's DiT, with its parameter names and behaviour.

Cross-attention to the conditioning tokens E in every block, rotary positions on the first 32 channels of
each head, timestep Fourier features, global conditioning (timing) prepended as one token, SwiGLU
feed-forward. Keys equal stable-audio-tools' `DiffusionTransformer`, so SAO's DiT loads unchanged.

With `frame_cond_dim` > 0 (beyond the paper) a frame-aligned condition [B, frame_cond_dim, frames], e.g. the LUFS
curves at the latent rate, is projected and added to the input projection; off, nothing of it exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    """t -> [cos(2 pi t W), sin(2 pi t W)] (cosine first, as SAO's timestep features).

    Computed in float32 whatever the weights' dtype (a bf16 angle of 2 pi t W is off by up to a few tenths of
    a radian); the result is returned in the weights' dtype for the next linear layer."""

    def __init__(self, *, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, 1) * std)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # An elementwise outer product, not `@`: autocast would run a matmul in bf16. With one inner term the
        # two give the same float32 products.
        f = (2 * math.pi * t.float())[:, None] * self.weight.float()[:, 0]
        return torch.cat([f.cos(), f.sin()], dim=-1).to(self.weight.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary angles for the first `dim` channels of a head; channel i pairs with i + dim/2.

    `inv_freq` stays float32 when the model is cast to 16 bits (`.to(torch.bfloat16)`, `.half()`): in bf16 the
    angle of position 1300 would be off by about 0.2 rad. (float64 casts follow.)"""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", ROTARY_BASE ** -(torch.arange(0, dim, 2).float() / dim))

    def _apply(self, fn, recurse=True):
        before = self.inv_freq
        super()._apply(fn, recurse)
        if before.is_floating_point() and torch.finfo(self.inv_freq.dtype).bits < 32:
            kept = self.inv_freq.float() if before.is_meta else before.to(self.inv_freq.device)
            self.inv_freq = kept
        return self

    def forward(self, length: int) -> torch.Tensor:
        t = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.float())
        return torch.cat([freqs, freqs], dim=-1)

    def cos_sin(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of the angles of positions 0..length-1, float32 [length, dim]: once per forward."""
        freqs = self(length)
        return freqs.cos(), freqs.sin()


def apply_rotary(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the first cos.shape[-1] channels of x [B, H, L, D] (in float32), pass the rest through.

    Args:
        x: queries or keys, [B, H, L, D].
        rotary: (cos, sin) from `RotaryEmbedding.cos_sin`, float32 [L, rot].
    """
    cos, sin = rotary
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:]
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = x_rot * cos + torch.cat([-x2, x1], dim=-1) * sin
    return torch.cat([rotated.to(x.dtype), x_pass], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, *, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = attention(apply_rotary(q, rotary), apply_rotary(k, rotary), v)
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
        return self.attend(x, *self.keys_values(context), context_mask)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, kv_heads, tokens, head_dim] of the context: constant across sampling steps."""
        k, v = self.to_kv(context).chunk(2, -1)
        return (rearrange(k, "b n (h d) -> b h n d", h=self.kv_heads),
                rearrange(v, "b n (h d) -> b h n d", h=self.kv_heads))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               context_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        out = attention(q, k, v, key_padding_mask=context_mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    def zero_for_zero_context(self) -> bool:
        """Whether an all-zero context gives an exactly zero output (no biases on the way)."""
        return self.to_kv.bias is None and self.to_out.bias is None


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

    def forward(self, x: torch.Tensor, context: torch.Tensor | CrossKV, rotary: tuple[torch.Tensor, torch.Tensor],
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One block; `context` is the context tokens, or their cached keys and values (`CrossKV`)."""
        x = x + self.self_attn(self.pre_norm(x), rotary)
        if not isinstance(context, CrossKV):
            x = x + self.cross_attn(self.cross_attend_norm(x), context, context_mask)
        elif context.rows is None:
            x = x + self.cross_attn.attend(self.cross_attend_norm(x), context.k, context.v, context.mask)
        elif context.rows.numel():
            # Only the rows whose context is not all zero: the others' cross-attention is exactly zero.
            rows = context.rows
            out = self.cross_attn.attend(self.cross_attend_norm(x.index_select(0, rows)), context.k, context.v,
                                         context.mask)
            x = x.index_add(0, rows, out)
        return x + self.ff(self.ff_norm(x))


@dataclass(frozen=True)
class CrossKV:
    """One block's cross-attention keys and values, for the batch rows `rows` (None: every row)."""

    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    rows: torch.Tensor | None


@dataclass
class PreparedConditioning:
    """What stays constant across the sampling steps of one generation, computed once by `DiT.prepare`:
    the projected global conditioning, every block's cross-attention keys and values, the projected
    frame-aligned condition (when the DiT takes one) and the rotary tables (per sequence length, filled on first
    use)."""

    global_embed: torch.Tensor
    cross: list[CrossKV]
    batch_size: int
    frame_embed: torch.Tensor | None = None
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


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
                context_mask: torch.Tensor | None = None, frame_embed: torch.Tensor | None = None) -> torch.Tensor:
        x = self._input(x, prepend, frame_embed)
        rotary = self.rotary_pos_emb.cos_sin(x.shape[1])
        for layer in self.layers:
            x = layer(x, context, rotary, context_mask)
        return self.project_out(x)

    def rotary_for(self, prepared: PreparedConditioning, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables of `length` positions, computed on first use and kept in `prepared`."""
        if length not in prepared.rotary:
            prepared.rotary[length] = self.rotary_pos_emb.cos_sin(length)
        return prepared.rotary[length]

    def forward_prepared(self, x: torch.Tensor, prepend: torch.Tensor,
                         prepared: PreparedConditioning) -> torch.Tensor:
        x = self._input(x, prepend, prepared.frame_embed)
        rotary = self.rotary_for(prepared, x.shape[1])
        for layer, cross in zip(self.layers, prepared.cross, strict=True):
            x = layer(x, cross, rotary)
        return self.project_out(x)

    def _input(self, x: torch.Tensor, prepend: torch.Tensor, frame_embed: torch.Tensor | None) -> torch.Tensor:
        """The prepended token, then the projected frames with the first frames of `frame_embed` added."""
        x = self.project_in(x)
        if frame_embed is not None:
            assert frame_embed.shape[1] >= x.shape[1], f"{frame_embed.shape=} {x.shape=}"
            x = x + frame_embed[:, :x.shape[1]]
        return torch.cat([prepend, x], dim=1)


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
        # SAO's input concatenation, [x; c] through one wider input projection, is W_x x + W_c c: a separate
        # bias-free W_c keeps SAO's keys and shapes (its weights load unchanged), can start at zero, and gives
        # exactly nothing for a zero (dropped) condition. Unlike SAO, c bypasses the 1x1 preprocess conv.
        self.to_frame_embed = (nn.Linear(config.frame_cond_dim, dim, bias=False) if config.frame_cond_dim
                               else None)
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
        # a frame-aligned input starts as a no-op, also when it is added to an already trained model
        if self.to_frame_embed is not None:
            nn.init.zeros_(self.to_frame_embed.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                global_cond: torch.Tensor | None = None, context_mask: torch.Tensor | None = None, *,
                frame_cond: torch.Tensor | None = None,
                prepared: PreparedConditioning | None = None) -> torch.Tensor:
        """One denoiser evaluation.

        Args:
            x: noisy latents [B, io_channels, frames].
            t: diffusion times in [0, 1], [B].
            context: conditioning tokens E [B, tokens, cond_token_dim].
            global_cond: global conditioning [B, global_cond_dim] (timing embeddings).
            context_mask: optional [B, tokens], True for tokens to attend to (SAO ignores masks; None
                reproduces it).
            frame_cond: the frame-aligned condition [B, frame_cond_dim, >= frames] (its first frames are used),
                only when `config.frame_cond_dim` > 0; None: none (as an all-zero one).
            prepared: instead of context / global_cond / context_mask / frame_cond, what `prepare` computed from
                them once (the sampler's path: the same result without recomputing the constant parts every step).

        Returns:
            the v prediction, [B, io_channels, frames].
        """
        assert x.dim() == 3 and x.shape[1] == self.config.io_channels, f"{x.shape=} {self.config.io_channels=}"
        assert t.shape == (x.shape[0],), f"{t.shape=} {x.shape=}"
        if prepared is None:
            assert context is not None and global_cond is not None, "give context and global_cond, or prepared"
            global_embed = self.to_global_embed(global_cond)
            frame_embed = self._embed_frames(frame_cond, x.shape[0], x.shape[-1])
        else:
            assert context is None and global_cond is None and context_mask is None and frame_cond is None, \
                "prepared replaces them"
            assert prepared.batch_size == x.shape[0], f"{prepared.batch_size=} {x.shape=}"
            global_embed = prepared.global_embed
        prepend = global_embed + self.to_timestep_embed(self.timestep_features(t))
        x = self.preprocess_conv(x) + x
        x = rearrange(x, "b c n -> b n c")
        if prepared is None:
            out = self.transformer(x, prepend[:, None], self.to_cond_embed(context), context_mask, frame_embed)
        else:
            out = self.transformer.forward_prepared(x, prepend[:, None], prepared)
        out = rearrange(out, "b n c -> b c n")[:, :, 1:]
        return self.postprocess_conv(out) + out

    def prepare(self, context: torch.Tensor, global_cond: torch.Tensor, context_mask: torch.Tensor | None = None,
                *, frame_cond: torch.Tensor | None = None, skip_zero_context: bool = True) -> PreparedConditioning:
        """Compute once what every sampling step of a generation shares (inference only; no autograd).

        Args:
            context, global_cond, context_mask, frame_cond: as `forward`'s. The frame-aligned embedding is
                added to every row (a zero row's, the unconditional half's, is exactly zero: no bias).
            skip_zero_context: rows whose E is exactly zero (the unconditional half of CFG) skip the
                cross-attention, whose output is then exactly zero (when the layers have no biases).
                Deciding this reads the context once on the host, here, never inside the sampling loop.
        """
        batch = context.shape[0]
        embedded = self.to_cond_embed(context)
        rows = None
        if skip_zero_context and self._zero_context_is_zero():
            nonzero = context.flatten(1).ne(0).any(dim=1)
            if not bool(nonzero.all()):
                rows = nonzero.nonzero()[:, 0]
                embedded = embedded.index_select(0, rows)
                context_mask = None if context_mask is None else context_mask.index_select(0, rows)
        cross = [CrossKV(*block.cross_attn.keys_values(embedded), context_mask, rows)
                 for block in self.transformer.layers]
        return PreparedConditioning(global_embed=self.to_global_embed(global_cond), cross=cross, batch_size=batch,
                                    frame_embed=self._embed_frames(frame_cond, batch))

    def _embed_frames(self, frame_cond: torch.Tensor | None, batch: int,
                      frames: int | None = None) -> torch.Tensor | None:
        """[B, frame_cond_dim, >= frames] -> [B, frames (default: all), embed_dim], or None without one."""
        if frame_cond is None:
            return None
        assert self.to_frame_embed is not None, "this DiT takes no frame-aligned condition (config.frame_cond_dim 0)"
        assert frame_cond.dim() == 3 and frame_cond.shape[:2] == (batch, self.config.frame_cond_dim), \
            f"{frame_cond.shape=} {batch=} {self.config.frame_cond_dim=}"
        if frames is not None:
            assert frame_cond.shape[-1] >= frames, f"{frame_cond.shape=} {frames=}"
            frame_cond = frame_cond[..., :frames]
        return self.to_frame_embed(rearrange(frame_cond, "b c n -> b n c"))

    def _zero_context_is_zero(self) -> bool:
        no_bias = all(layer.bias is None for layer in self.to_cond_embed if isinstance(layer, nn.Linear))
        return no_bias and all(block.cross_attn.zero_for_zero_context() for block in self.transformer.layers)
