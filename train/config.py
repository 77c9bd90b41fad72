"""Training configuration: typed sections, `--set section.key=value` overrides, JSON for checkpoints."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .parallelize import ParallelConfig

TRAINERS = ("dit", "vae", "lufs", "encoders")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Args:
        path: shard folder (VAE, encoders) or cache folder (DiT, T_LUFS).
        split: the manifest split to train on (cache folders; None: all clips).
        crop_seconds: length of the random crops.
        batch_size: samples per rank per micro-batch.
        num_workers: DataLoader worker processes per rank.
        sample_latents: DiT: draw each latent from the cached VAE posterior (mean + std * noise, as training
            on freshly encoded audio does); false trains on the posterior mean.
    """

    path: str = ""
    split: str | None = "train"
    crop_seconds: float = 2.0
    batch_size: int = 4
    num_workers: int = 0
    sample_latents: bool = True


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-3
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0
    accum_steps: int = 1
    ema_decay: float = 0.999


@dataclass(frozen=True, kw_only=True)
class VAELossConfig:
    """The paper's VAE weights (DESIGN.md): STFT 1.0, adversarial 0.1, feature matching 5.0, KL 0.1 (stable-
    audio-tools' Oobleck recipe uses KL 1e-4; the paper's table gives 0.1, which we keep as the default)."""

    stft: float = 1.0
    adversarial: float = 0.1
    feature_matching: float = 5.0
    kl: float = 0.1
    loudness: float = 0.0  # per-channel K-weighted loudness per 1/6 s window (off in the paper's recipes)
    balance: float = 0.0  # L - R loudness per 1/6 s window: the stereo image on its own (off in the paper's recipes)
    spectrum: float = 0.0  # per-channel octave-band levels per 1/6 s window: the timbre (off in the paper's recipes)
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
    perceptual: bool = True  # A-weighting inside the STFT loss (Stable Audio's); costly on a CPU
    # "sum-difference" (Stable Audio's: blind to a left/right swap) or "channels" (L and R each on its own)
    stft_layout: str = "sum-difference"
    # false: the encoder is frozen and only the decoder trains (start such a run from an export with
    # `model.init`): latents cached from that export stay valid, so a DiT can train on them meanwhile
    train_encoder: bool = True
    # decode the posterior mean instead of a draw; with train_encoder=false the decoder learns exactly the latents
    # a DiT trained on posterior means (data.sample_latents=false) gives it
    decode_mean: bool = False
    # a new VAE (no model.init): set each convolution's gains and bias from the first batch (Salimans and Kingma's
    # data-dependent init of weight norm) so that the latent depends on the input from the first step
    data_init: bool = False
    # the spread data_init gives each convolution's output (the decoder's last layer: the audio's), and the residual
    # branches' last convolution this times data_init_residual. At 1 every Snake works on unit-spread input, far in
    # its nonlinear range (x + sin^2 x), and the decoder renders one broadband spectrum whatever the latent
    # (the SynthFoley probes: the demo recipe's values below give each sound its own)
    data_init_scale: float = 1.0
    data_init_residual: float = 1.0
    discriminator_start: int = 0  # steps of reconstruction-only warm-up before the discriminator joins
    discriminator_lr: float = 1e-4
    discriminator_channels: int = 32
    discriminator_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128)


LUFS_LOSSES = ("mse", "l1")


@dataclass(frozen=True, kw_only=True)
class LufsLossConfig:
    """T_LUFS runs. kind: "mse" (the paper's) or "l1" (the absolute error of the normalised curves: the median,
    not the mean, where the sound is uncertain, and the error in LU that the predictor is scored by, over 70)."""

    kind: str = "mse"

    def __post_init__(self) -> None:
        if self.kind not in LUFS_LOSSES:
            raise ValueError(f"lufs_loss.kind must be one of {LUFS_LOSSES}, got {self.kind!r}")


@dataclass(frozen=True, kw_only=True)
class EncoderLossConfig:
    """Encoder runs: the weight of each pair's symmetric InfoNCE loss (CLIP's, over the micro-batch, as
    LanguageBind binds every modality to language; 0 leaves a pair out) and its temperature. The temperature is
    fixed, not learnt as CLIP's: on small data a learnt one falls until every pair scores chance.

    `gather_negatives`: on several ranks, each clip's negatives are the clips of every rank's micro-batch (an
    all-gather of the features, with gradients), so the loss and its gradients are those of one process holding the
    global micro-batch; false keeps each rank's own micro-batch (no communication, fewer negatives)."""

    text_video: float = 1.0
    text_audio: float = 1.0
    video_audio: float = 1.0
    temperature: float = 0.07  # CLIP's initial value
    gather_negatives: bool = True

    def __post_init__(self) -> None:
        weights = (self.text_video, self.text_audio, self.video_audio)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"encoder_loss weights must be >= 0 and one of them > 0, got {weights}")
        if not 0 < self.temperature <= 1:
            raise ValueError(f"encoder_loss.temperature must be in (0, 1], got {self.temperature}")


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """Args:
        preset: Tri-Ergon preset (dit, vae), T_LUFS preset (lufs), or for encoder runs the Tri-Ergon preset whose
            `conditioning.embed_dim` the towers project to (they start as `LanguageBindEncoders.tiny_random`'s).
        init: a Tri-Ergon checkpoint to start from (e.g. converted SAO); its VAE is the frozen VAE of the DiT. Encoder
            runs: a LanguageBind folder (video/ with its text tower, audio/) to start from instead.
        lufs_frame_aligned: DiT runs: add the frame-aligned LUFS path (beyond the paper) to the preset's or the
            init checkpoint's model when it lacks it; zero-initialised, so training starts from the same outputs.
        latent_scale: DiT runs: the model's `latent_scale` (the DiT trains on cached latents divided by it; about
            the spread of the cached posterior means, which `triergon data stats CACHE` prints); 0 keeps the
            preset's or the init checkpoint's.
        init_vae: DiT runs: take the VAE from this checkpoint instead of `model.init`'s (the file the cache was
            made with), e.g. to warm-start a trained DiT and conditioner on a new VAE's latents; the same VAE
            architecture is required.
        dinov2: T_LUFS runs: a DINOv2 folder (`load_dinov2`) to train together with T_LUFS (beyond the paper, which
            keeps DINOv2 frozen): `data.path` is then a shard folder, whose frames go through DINOv2 at every step,
            and the export writes the trained DINOv2 beside T_LUFS. Empty: T_LUFS alone on cached features.
        dinov2_lr_scale: T_LUFS runs with `dinov2`: DINOv2's learning rate as a share of `optim.lr`.
    """

    preset: str = "tiny"
    init: str = ""
    init_vae: str = ""
    lufs_frame_aligned: bool = False
    latent_scale: float = 0.0
    dinov2: str = ""
    dinov2_lr_scale: float = 0.3

    def __post_init__(self) -> None:
        if self.dinov2_lr_scale <= 0:
            raise ValueError(f"model.dinov2_lr_scale must be > 0, got {self.dinov2_lr_scale}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    steps: int = 100
    seed: int = 0
    save_every: int = 500
    keep: int = 3
    log_every: int = 10
    device: str = "auto"
    autocast: str = "auto"  # auto: bf16 on CUDA, off on CPU; or "bf16" / "off"
    threads: int = 0  # torch intra-op threads per rank (0: leave torch's default)
    sample_every: int = 1000  # steps between TensorBoard samples (audio, LUFS plot); 0: none
    sample_steps: int = 10  # DiT samples: sampler steps (few: a sample must stay cheap)
    sample_cfg: float = 7.0  # DiT samples: classifier-free guidance scale


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    recipe: str
    trainer: str
    description: str = ""
    hardware: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    vae_loss: VAELossConfig = field(default_factory=VAELossConfig)
    lufs_loss: LufsLossConfig = field(default_factory=LufsLossConfig)
    encoder_loss: EncoderLossConfig = field(default_factory=EncoderLossConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")

    def effective_batch(self, world_size: int) -> int:
        return self.data.batch_size * world_size * self.optim.accum_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        sub = _section_type(cls, f.name)
        kwargs[f.name] = _build(sub, value) if sub is not None else _coerce_json(value)
    return cls(**kwargs)


def _section_type(cls: type, name: str) -> type | None:
    for f in dataclasses.fields(cls):
        if f.name == name and f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            return type(made) if dataclasses.is_dataclass(made) else None
    return None


def _coerce_json(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply `section.key=value` (or `key=value` for top-level fields) overrides; values parse as JSON
    when they can (numbers, true/false, lists), else as text. Unknown keys are an error listing the valid ones."""
    data = config.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
        *path, last = key.strip().split(".")
        node = data
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown config section {part!r} in {item!r}; sections: "
                                 f"{sorted(k for k, v in data.items() if isinstance(v, dict))}")
            node = node[part]
        if last not in node:
            raise ValueError(f"unknown config key {key!r}; valid keys here: {sorted(node)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        node[last] = value
    return TrainConfig.from_dict(data)
