"""LanguageBind's towers in plain PyTorch: the CLIP text transformer and the CLIP ViT with LanguageBind's
temporal attention (video) or its resized position grid over the filter-bank image (audio).

Module and parameter names are those of the `languagebind` package (0.1.0) so that the released checkpoints'
keys map one to one (`languagebind_checkpoint.map_checkpoint_keys` handles the rest: LoRA, buffers). What the
towers compute is the package's `get_text_features` / `get_image_features`:

- text: token + position embeddings, pre-LN transformer layers under a causal and a padding mask, final
  LayerNorm, the hidden state at the largest token id (<|endoftext|>) pooled, `text_projection`.
- vision: patch convolution (no bias), class token, learned positions over the (h / p) x (w / p) grid, `pre_layrnorm`,
  layers, `post_layernorm` of each frame's class token, mean over frames, `visual_projection`. With `add_time_attn`
  each layer first adds a per-frame `temporal_embedding`, then attends across frames at every token
  (`temporal_layer_norm1`, `temporal_attn`, residual; the audio code's variant adds `temporal_mlp`), then runs the
  usual spatial attention and MLP on each frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LanguageBindTower", "TextConfig", "VisionConfig", "init_random_"]

_ACTIVATIONS = {
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass(frozen=True)
class TextConfig:
    """The CLIP text transformer's sizes (the package's `CLIPTextConfig` defaults)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class VisionConfig:
    """The ViT's sizes (the package's `CLIPVisionConfig` defaults). `num_mel_bins` x `target_length`, when both
    are set on an audio tower, replace the square `image_size` (the package's `resize_pos`)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    add_time_attn: bool = False
    num_frames: int = 1
    lora_r: int = 2
    lora_alpha: float = 16.0
    num_mel_bins: int = 0
    target_length: int = 0
    audio_sample_rate: int = 16000
    audio_mean: float = 0.5
    audio_std: float = 0.5
    temporal_mlp: bool = False  # the audio code's temporal block has an MLP too (used only with add_time_attn)
    audio_grid: bool = False  # audio code: the position grid is num_mel_bins x target_length when both are set

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the tower's input image."""
        if self.audio_grid and self.num_mel_bins and self.target_length:
            return int(self.num_mel_bins), int(self.target_length)
        return int(self.image_size), int(self.image_size)

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.input_size
        return h // self.patch_size, w // self.patch_size


def _check_heads(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")


class Attention(nn.Module):
    """CLIP's multi-head attention (q/k/v/out projections with bias, scale head_dim ** -0.5)."""

    def __init__(self, *, hidden: int, heads: int) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        self.heads, self.head_dim = heads, hidden // heads
        self.q_proj, self.k_proj = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.v_proj, self.out_proj = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.eager = False  # True: explicit softmax (the package's "eager" arithmetic) instead of SDPA

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, D]; mask: bool [B, 1, L, L] (True = attend) or None."""
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        scale = self.head_dim ** -0.5
        if self.eager:
            w = (q @ k.transpose(-1, -2)) * scale
            if mask is not None:
                w = w.masked_fill(~mask, torch.finfo(w.dtype).min)
            out = w.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, *, hidden: int, intermediate: int, act: str) -> None:
        super().__init__()
        if act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {act!r}; LanguageBind towers use one of {sorted(_ACTIVATIONS)}")
        self.act = _ACTIVATIONS[act]
        self.fc1, self.fc2 = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """A pre-LN CLIP layer; with `frames` > 0 LanguageBind's temporal attention (and MLP) runs first."""

    def __init__(self, *, hidden: int, heads: int, intermediate: int, act: str, eps: float, frames: int = 0,
                 temporal_mlp: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(hidden=hidden, heads=heads)
        self.layer_norm1 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = MLP(hidden=hidden, intermediate=intermediate, act=act)
        self.layer_norm2 = nn.LayerNorm(hidden, eps=eps)
        self.frames = frames
        if frames:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, hidden))
            self.temporal_attn = Attention(hidden=hidden, heads=heads)
            self.temporal_layer_norm1 = nn.LayerNorm(hidden, eps=eps)
            if temporal_mlp:
                self.temporal_mlp = MLP(hidden=hidden, intermediate=intermediate, act=act)
                self.temporal_layer_norm2 = nn.LayerNorm(hidden, eps=eps)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        bt, n, d = x.shape
        t = self.frames
        x = x.view(bt // t, t, n, d).transpose(1, 2).reshape(-1, t, d)  # (b t) n d -> (b n) t d
        if t != 1:
            x = x + self.temporal_embedding[:, :t]
        x = x + self.temporal_attn(self.temporal_layer_norm1(x))
        if hasattr(self, "temporal_mlp"):
            x = x + self.temporal_mlp(self.temporal_layer_norm2(x))
        return x.view(bt // t, n, t, d).transpose(1, 2).reshape(bt, n, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.frames:
            x = self._temporal(x)
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder([EncoderLayer(hidden=cfg.hidden_size, heads=cfg.num_attention_heads,
                                             intermediate=cfg.intermediate_size, act=cfg.hidden_act,
                                             eps=cfg.layer_norm_eps) for _ in range(cfg.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids [B, L] -> the pooled hidden state [B, D] at each row's largest id (<|endoftext|>)."""
        x = self.embeddings(input_ids)
        n = input_ids.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]
        x = self.final_layer_norm(self.encoder(x, mask))
        return x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(dim=-1)]


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        gh, gw = cfg.grid
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size,
                                         stride=cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(gh * gw + 1, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [N, grid, D]
        if x.shape[1] + 1 != self.position_embedding.num_embeddings:
            raise ValueError(f"input of {tuple(pixels.shape[-2:])} gives {x.shape[1]} patches; this tower's position "
                             f"grid has {self.position_embedding.num_embeddings - 1}")
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.frames = int(cfg.num_frames) if cfg.add_time_attn else 0
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder([EncoderLayer(hidden=cfg.hidden_size, heads=cfg.num_attention_heads,
                                             intermediate=cfg.intermediate_size, act=cfg.hidden_act,
                                             eps=cfg.layer_norm_eps, frames=self.frames,
                                             temporal_mlp=cfg.temporal_mlp) for _ in range(cfg.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] (video) or [B, C, H, W] -> pooled [B, D] (class tokens, mean over frames)."""
        if pixel_values.dim() == 5:
            b, c, t, h, w = pixel_values.shape
            pixel_values = pixel_values.transpose(1, 2).reshape(b * t, c, h, w)
        elif pixel_values.dim() == 4:
            b, t = pixel_values.shape[0], 1
        else:
            raise ValueError(f"expected pixel values [B, C, T, H, W] or [B, C, H, W], got {tuple(pixel_values.shape)}")
        if self.frames and t != self.frames:
            raise ValueError(f"this video tower's temporal attention takes {self.frames} frames, got {t}")
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return self.post_layernorm(x[:, 0]).view(b, t, -1).mean(1)


class LanguageBindTower(nn.Module):
    """One LanguageBind checkpoint: `text_model` (optional) and `vision_model`, each with its projection.

    `text=None` builds no text tower (its checkpoint weights are then skipped on load)."""

    def __init__(self, *, text: TextConfig | None, vision: VisionConfig, projection_dim: int) -> None:
        super().__init__()
        self.text_config, self.vision_config, self.projection_dim = text, vision, int(projection_dim)
        if text is not None:
            self.text_model = TextTransformer(text)
            self.text_projection = nn.Linear(text.hidden_size, projection_dim, bias=False)
        self.vision_model = VisionTransformer(vision)
        self.visual_projection = nn.Linear(vision.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def has_text(self) -> bool:
        return self.text_config is not None

    def set_attention(self, implementation: str) -> None:
        """"sdpa" (fused) or "eager" (explicit softmax) in every attention."""
        if implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {implementation!r}")
        for m in self.modules():
            if isinstance(m, Attention):
                m.eager = implementation == "eager"

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.has_text:
            raise RuntimeError("this tower was built without its text model")
        return self.text_projection(self.text_model(input_ids, attention_mask))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values))

    def init_random_(self, generator: torch.Generator) -> LanguageBindTower:
        """CLIP-style random weights from `generator` (`init_random_`). For the tiny random towers."""
        return init_random_(self, generator)


@torch.no_grad()
def init_random_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """CLIP-style random weights drawn from `generator`, parameter by parameter in `named_parameters` order:
    embeddings N(0, 0.02^2), other matrices and kernels N(0, 1 / fan_in), LayerNorms at identity, biases zero;
    other vectors (e.g. layer scales) and scalars (`logit_scale`) keep the value the module was built with. Draws
    nothing from the global random state, so the same generator seed gives the same weights in any process."""
    norms = {id(p) for m in module.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    for name, p in module.named_parameters():
        if id(p) in norms or name.endswith(".bias"):
            p.copy_(torch.ones_like(p) if id(p) in norms and name.endswith(".weight") else torch.zeros_like(p))
            continue
        if "embedding" not in name and p.dim() < 2:
            continue
        std = 0.02 if "embedding" in name else p[0].numel() ** -0.5
        p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module
