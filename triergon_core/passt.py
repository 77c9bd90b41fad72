"""PaSST (Koutini et al. 2022) AudioSet tagger from a user's weights file, for KL_passt.

The network and its state-dict keys are those of the `hear21passt` package (`passt_s_swa_p16_128_ap476`, a
DeiT-style transformer): 128 Kaldi mel bands of 32 kHz audio (pre-emphasis, 800-sample Hann window in a 1024-point
FFT, hop 320, log(x + 1e-5), then (x + 4.5) / 5), 16x16 patches every 10 bins and 10 frames, separate frequency
and time position embeddings, class and distillation tokens; the features are the mean of the two tokens after
the last norm and the logits are `head` (LayerNorm + Linear) of them. The package itself is not needed (it needs
timm, hence torchvision). Files hold either the bare network (PaSST's own checkpoints) or hear21passt's wrapper
(`net.` prefix, `device_proxy`).

Clips are read as stable-audio-metrics reads them for KL_passt: mono, peak-normalised to -1 dBFS, 10 s windows
every 5 s, each zero-padded to 10 s (stable-audio-metrics leaves a clip under 1.5 s unpadded); logits and features
are averaged over a clip's windows. Probabilities are the sigmoid of the mean logits (AudioSet is multi-label) or,
with `activation="softmax"`, their softmax, stable-audio-metrics' and MusicGen's choice: its KL_passt is then
`metrics.kl_divergence(generated, reference, mode="categorical")`, i.e. KL(generated || reference).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .audio_embedders import AudioEmbedder, load_weights, peak_normalise
from .checkpoint import CheckpointError, read_state_dict
from .languagebind_audio_features import mel_banks

logger = logging.getLogger(__name__)

__all__ = ["PasstConfig", "PasstEmbedder", "load_passt"]

SAMPLE_RATE = 32000
_CHUNK = 8  # windows per network call: attention over ~1200 patches is memory-hungry


@dataclass(frozen=True)
class PasstConfig:
    """The transformer's size (AudioSet PaSST-S: 768 wide, 12 blocks of 12 heads, 527 classes, a grid of 12
    frequency by 99 time patches) and how clips are read."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    classes: int = 527
    time_patches: int = 99
    activation: str = "sigmoid"
    window_seconds: float = 10.0
    step_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"PaSST width {self.dim} is not a multiple of its {self.heads} heads; pass heads=")
        if self.activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {self.activation!r}")
        if not 0 < self.step_seconds <= self.window_seconds:
            raise ValueError(f"PaSST needs 0 < step_seconds <= window_seconds, got {self.step_seconds} and "
                             f"{self.window_seconds}")


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=16, stride=10)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = _Attention(dim, heads), _Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PasstEmbedder(AudioEmbedder):
    """PaSST with hear21passt's parameter names; `embed` -> (features `[B, dim]`, probabilities `[B, classes]`)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, *, config: PasstConfig) -> None:
        super().__init__()
        self.config, self.dim = config, config.dim
        self.labels = tuple(f"class_{i}" for i in range(config.classes))  # AudioSet's order, by index
        self.register_buffer("window", torch.hann_window(800, periodic=False), persistent=False)
        banks = mel_banks(128, 1024, SAMPLE_RATE, low_freq=0.0, high_freq=15000.0)
        self.register_buffer("banks", banks, persistent=False)
        d = config.dim
        self.patch_embed = _PatchEmbed(d)
        self.cls_token, self.dist_token = nn.Parameter(torch.zeros(1, 1, d)), nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, 12, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, config.time_patches))
        self.blocks = nn.Sequential(*(_Block(d, config.heads) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.classes))
        self.head_dist = nn.Linear(d, config.classes)  # trained, unused at inference (as in PaSST)

    def mel(self, mono: torch.Tensor) -> torch.Tensor:
        """Mono `[B, N]` at 32 kHz -> normalised log-mel `[B, 128, frames]` (AugmentMelSTFT in eval mode)."""
        x = mono[:, 1:] - 0.97 * mono[:, :-1]
        spec = torch.stft(x, 1024, hop_length=320, win_length=800, window=self.window, center=True,
                          return_complex=True)
        return ((self.banks @ spec.abs().pow(2) + 1e-5).log() + 4.5) / 5

    def network(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel `[B, 128, frames]` -> (features `[B, dim]`, logits `[B, classes]`)."""
        x = self.patch_embed.proj(mel[:, None])
        if x.shape[-1] > self.time_new_pos_embed.shape[-1]:
            raise ValueError(f"{x.shape[-1]} time patches are more than this PaSST's {self.config.time_patches}; "
                             "use shorter windows")
        x = (x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token, self.dist_token], dim=1) + self.new_pos_embed
        x = self.norm(self.blocks(torch.cat([tokens.expand(x.shape[0], -1, -1), x], dim=1)))
        features = (x[:, 0] + x[:, 1]) / 2
        return features, self.head(features)

    def forward(self, mono: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        size, step = round(c.window_seconds * SAMPLE_RATE), round(c.step_seconds * SAMPLE_RATE)
        mono = peak_normalise(mono)
        starts = range(0, max(step, mono.shape[-1] - step), step)
        windows = torch.stack([F.pad(mono[:, s:s + size], (0, size - mono[:, s:s + size].shape[-1]))
                               for s in starts], dim=1)  # [B, W, size]
        b, w = windows.shape[:2]
        outputs = [self.network(self.mel(chunk)) for chunk in windows.reshape(b * w, size).split(_CHUNK)]
        features, logits = (torch.cat(parts) for parts in zip(*outputs, strict=True))
        features, logits = features.view(b, w, -1).mean(1), logits.view(b, w, -1).mean(1)
        probs = logits.sigmoid() if c.activation == "sigmoid" else logits.softmax(-1)
        return features, probs


def _adapt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # hear21passt's wrapper: the network under "net.", plus a device marker and the (buffer-only) mel module
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state


def load_passt(path: str | os.PathLike, *, heads: int = 12, activation: str = "sigmoid",
               window_seconds: float = 10.0, step_seconds: float = 5.0) -> PasstEmbedder:
    """PaSST from a hear21passt / PaSST state dict (e.g. `passt-s-f128-p16-s10-ap.476-swa.pt`, or the same
    tensors as safetensors). Width, depth, class count and time grid are read from the tensors' shapes.

    Args:
        path: the weights file.
        heads: attention heads (not visible in the weights; 12 for PaSST-S).
        activation: "sigmoid" or "softmax" for the probabilities (see the module doc).
        window_seconds, step_seconds: the analysis windows.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a file that is not a PaSST state dict (one line).
    """
    state = _adapt(read_state_dict(path)[0])
    try:
        dim = state["cls_token"].shape[-1]
        classes = state["head.1.weight"].shape[0]
        time_patches = state["time_new_pos_embed"].shape[-1]
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"{path} is not a PaSST state dict (hear21passt layout): no {e} entry") from None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    config = PasstConfig(dim=dim, depth=depth, heads=heads, classes=classes, time_patches=time_patches,
                         activation=activation, window_seconds=window_seconds, step_seconds=step_seconds)
    model = load_weights(PasstEmbedder(config=config), path, what="a PaSST state dict (hear21passt layout)",
                         adapt=_adapt)
    logger.info("loaded PaSST (%d wide, %d blocks, %d classes) from %s", dim, depth, classes, path)
    return model
