"""T_LUFS: predict per-channel loudness curves from video (the paper's LUFS prediction module).

Video frames sampled by time at 6 fps -> DINOv2 frame features (transformers `Dinov2Model`, weights from a
local folder) -> a transformer encoder with learned positions (up to 360 frames = 60 s) -> two sigmoid
outputs per frame: the normalised left and right LUFS, (l + 70) / 70. Trained with MSE (train/).

A frame's feature is DINOv2's pooled CLS output (`frame_pooling="cls"`, the paper's presets) or that with the mean
patch token of each quarter of the image appended (`"cls+grid"`: 5 x the hidden size), which keeps where things are,
left or right, for the two channels' loudness.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, check_state_dict, read_state_dict, write_module
from .config import FRAME_POOLINGS, LUFS_RATE, frames_for
from .lufs_curve import LufsCurve

logger = logging.getLogger(__name__)

PREDICTOR_FORMAT = "triergon-lufs-predictor"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class LufsPredictorConfig:
    """Sizes of T_LUFS. `feature_dim` is the size of the frame features it reads (`FrameFeatures.feature_dim`: the
    DINOv2 hidden size, 768 for ViT-B/14, with `frame_pooling="cls"`; 5 times that with `"cls+grid"`)."""

    name: str
    feature_dim: int = 768
    frame_pooling: str = "cls"
    dim: int = 768
    depth: int = 12
    heads: int = 8
    ff_mult: int = 4
    max_frames: int = 360
    rate: float = LUFS_RATE


LUFS_PREDICTOR_PRESETS = {
    "s": LufsPredictorConfig(name="s", depth=12, heads=8),
    "l": LufsPredictorConfig(name="l", depth=14, heads=12),
    "tiny": LufsPredictorConfig(name="tiny", feature_dim=32, dim=32, depth=2, heads=2),
    # the shipped demo model's, on the demo's small DINOv2 (`DEMO_DINOV2`: 64 wide, so 5 x 64 with the grid)
    "demo": LufsPredictorConfig(name="demo", feature_dim=320, frame_pooling="cls+grid", dim=128, depth=4, heads=4),
}

# Sizes of the small DINOv2 the demo model ships (seeded random weights, `save_random_dinov2`) and of the tiny one
# the nodes offer; `resize` / `crop` are its preprocessing (SynthFoley's 128 x 128 frames, centre 112 = 8 x 8 patches).
DEMO_DINOV2 = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 112,
               "patch_size": 14, "resize": 128, "crop": 112}
TINY_DINOV2 = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 56,
               "patch_size": 14, "resize": 64, "crop": 56}


class LufsPredictor(nn.Module):
    """DINOv2 frame features [B, T, feature_dim] -> normalised L/R loudness [B, 2, T] in [0, 1]."""

    def __init__(self, *, config: LufsPredictorConfig) -> None:
        super().__init__()
        _check_pooling(config.frame_pooling)
        self.config = config
        self.proj_in = nn.Linear(config.feature_dim, config.dim)
        self.positions = nn.Parameter(torch.randn(config.max_frames, config.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, config.ff_mult * config.dim, dropout=0.1,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.depth, norm=nn.LayerNorm(config.dim),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(config.dim, 2)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            features: [B, T, feature_dim] DINOv2 features of frames at 6 fps (T <= max_frames).
            padding_mask: [B, T], True at padded frames (ignored by attention).
        """
        t, f = features.shape[1:]
        assert f == self.config.feature_dim, f"{features.shape=} {self.config.feature_dim=}"
        if t > self.config.max_frames:
            raise ValueError(f"{t} frames is more than T_LUFS's {self.config.max_frames} "
                             f"({self.config.max_frames / self.config.rate:g} s at {self.config.rate:g} fps)")
        x = self.proj_in(features) + self.positions[:t]
        x = self.encoder(x, src_key_padding_mask=padding_mask)
        return torch.sigmoid(self.head(x)).transpose(1, 2)


def save_predictor(model: LufsPredictor, path: str | os.PathLike, *,
                   metadata: dict[str, str] | None = None) -> Path:
    """Write T_LUFS weights and config to a safetensors file (atomically), with extra string `metadata`."""
    meta = {**(metadata or {}), "format": PREDICTOR_FORMAT, "config": json.dumps(asdict(model.config))}
    return write_module(model, path, metadata=meta)


def load_predictor(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> LufsPredictor:
    """Load T_LUFS weights written by `save_predictor` (or the trainer)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LUFS predictor weights not found: {path}")
    state, meta = read_state_dict(path)
    if meta.get("format") != PREDICTOR_FORMAT:
        raise CheckpointError(f"{path} is not a Tri-Ergon LUFS predictor checkpoint (format {meta.get('format')!r})")
    model = LufsPredictor(config=LufsPredictorConfig(**json.loads(meta["config"])))
    check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, what=f"LUFS predictor {path}")
    model.load_state_dict(state)
    return model.to(device).eval()


class FrameFeatures(nn.Module):
    """DINOv2 (transformers `Dinov2Model`) over RGB frames: one feature per frame, pooled as `pooling` says:
    "cls", the pooled CLS output (DINOv2's layer-normed CLS token), or "cls+grid", that followed by the mean of the
    patch tokens over each quarter of the image (top left, top right, bottom left, bottom right).

    Preprocessing follows the DINOv2 image processor: resize the short side to `resize` (256), centre-crop
    `crop` (224), ImageNet mean/std; values come from the folder's `preprocessor_config.json` when present.
    `config_json`: the config.json it was loaded from (`save_dinov2` writes it back), or None.
    """

    def __init__(self, model: nn.Module, *, resize: int = 256, crop: int = 224,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 pooling: str = "cls", config_json: dict | None = None) -> None:
        super().__init__()
        _check_pooling(pooling)
        self.model, self.resize, self.crop, self.pooling = model, resize, crop, pooling
        self.config_json = config_json
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.feature_dim_for(self.pooling)

    def feature_dim_for(self, pooling: str) -> int:
        """The size of this DINOv2's frame features pooled as `pooling` says."""
        return self.model.config.hidden_size * FRAME_POOLINGS[_check_pooling(pooling)]

    def pooled(self, pixels: torch.Tensor, pooling: str) -> torch.Tensor:
        """Normalised pixels [N, 3, crop, crop] -> features [N, D] pooled as `pooling` says."""
        out = self.model(pixel_values=pixels)
        if pooling == "cls":
            return out.pooler_output
        side = self.crop // self.model.config.patch_size
        patches = out.last_hidden_state[:, 1:].unflatten(1, (side, side)).permute(0, 3, 1, 2)  # [N, D, h, w]
        quarters = F.adaptive_avg_pool2d(patches, 2).permute(0, 2, 3, 1).flatten(1)  # [N, 4 * D], row by row
        return torch.cat([out.pooler_output, quarters], 1)

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) with the short side scaled to `resize`: what to ask the video reader for."""
        return _frame_size(height, width, self.resize, self.crop)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float frames [T, H, W, 3] -> normalised [T, 3, crop, crop]."""
        return preprocess_frames(frames, resize=self.resize, crop=self.crop, mean=self.mean, std=self.std)

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor, *, batch_size: int = 32, pooling: str | None = None) -> torch.Tensor:
        """Frames [T, H, W, 3] -> features [T, D], in batches of `batch_size` frames; `pooling` (default: this
        instance's) as in the class docstring, D = hidden size x (1 for "cls", 5 for "cls+grid")."""
        pooling = _check_pooling(pooling or self.pooling)
        param = next(self.model.parameters())
        out = []
        for i in range(0, frames.shape[0], batch_size):
            pixels = self.preprocess(frames[i:i + batch_size]).to(device=param.device, dtype=param.dtype)
            out.append(self.pooled(pixels, pooling).float())
        return torch.cat(out)


def _frame_size(height: int, width: int, resize: int, crop: int) -> tuple[int, int]:
    scale = resize / min(height, width)
    return max(crop, round(height * scale)), max(crop, round(width * scale))


def preprocess_frames(frames: torch.Tensor, *, resize: int, crop: int, mean: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:
    """The DINOv2 image processor's steps: uint8 or [0, 1] float frames [T, H, W, 3] -> [T, 3, crop, crop], the short
    side resized (bicubic) to `resize`, centre-cropped to `crop`, normalised by `mean` / `std` ([1, 3, 1, 1])."""
    x = frames.permute(0, 3, 1, 2).float()
    if frames.dtype == torch.uint8:
        x = x / 255.0
    h, w = x.shape[-2:]
    if min(h, w) != resize:
        x = F.interpolate(x, size=_frame_size(h, w, resize, crop), mode="bicubic", align_corners=False).clamp(0, 1)
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    x = x[..., top:top + crop, left:left + crop]
    return (x - mean.to(x.device)) / std.to(x.device)


def _check_pooling(pooling: str) -> str:
    if pooling not in FRAME_POOLINGS:
        raise ValueError(f"unknown frame pooling {pooling!r}; available: {', '.join(FRAME_POOLINGS)}")
    return pooling


def load_dinov2(folder: str | os.PathLike, *, device: torch.device | str = "cpu",
                pooling: str = "cls") -> FrameFeatures:
    """Load DINOv2 from a local folder (a Hugging Face `facebook/dinov2-*` download); nothing is fetched. `pooling`:
    the frame features' default pooling (`FrameFeatures`; `predict_lufs` uses its predictor's).

    Raises a ValueError naming the folder when it is missing, has no config, holds another model type, or has
    weights that do not all load into this transformers version's `Dinov2Model` (transformers itself would only
    warn and leave them random).
    """
    folder = Path(folder).expanduser()
    config_file = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"DINOv2 folder not found: {folder} (download e.g. facebook/dinov2-base there)")
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json: give the folder of a Hugging Face DINOv2 model")
    config_json = json.loads(config_file.read_text())
    kind = config_json.get("model_type")
    if kind != "dinov2":
        raise ValueError(f"{folder} holds a {kind!r} model, not DINOv2 (model_type 'dinov2' expected)")
    from transformers import Dinov2Model

    model, info = Dinov2Model.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ()) + [k for k, *_ in info.get("mismatched_keys") or ()]
    if missing:  # transformers only warns, and leaves these weights random
        import transformers

        raise ValueError(f"{folder}: {len(missing)} DINOv2 weights do not load into transformers "
                         f"{transformers.__version__}'s Dinov2Model (e.g. {missing[0]}; the file has e.g. "
                         f"{sorted(info.get('unexpected_keys') or ['nothing else'])[0]}): a file in another key "
                         "layout? `save_dinov2` writes the released checkpoints' layout, which every version reads")
    model = model.to(device).eval()
    kwargs = {"pooling": pooling, "config_json": config_json}
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        cfg = json.loads(processor.read_text())
        size, crop = cfg.get("size", {}), cfg.get("crop_size", {})
        kwargs |= {"resize": size.get("shortest_edge", 256), "crop": crop.get("height", 224),
                  "mean": tuple(cfg.get("image_mean", IMAGENET_MEAN)), "std": tuple(cfg.get("image_std", IMAGENET_STD))}
    return FrameFeatures(model, **kwargs)


def random_dinov2(*, seed: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                  image_size: int, patch_size: int, resize: int, crop: int, pooling: str = "cls") -> FrameFeatures:
    """DINOv2's architecture (transformers `Dinov2Model`) at the given sizes with seeded random weights
    (`languagebind_towers.init_random_`: the same seed gives the same weights in any process), as `FrameFeatures`
    preprocessing frames to `resize` / `crop`, its `config_json` only the chosen sizes. Its features carry no
    learned meaning."""
    from transformers import Dinov2Config, Dinov2Model

    from .languagebind_towers import init_random_

    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                          num_attention_heads=num_attention_heads, image_size=image_size, patch_size=patch_size)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False):  # the constructor's init draws globally
        model = init_random_(Dinov2Model(config), torch.Generator().manual_seed(seed))
    config_json = {"model_type": "dinov2", "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                   "num_attention_heads": num_attention_heads, "image_size": image_size, "patch_size": patch_size}
    return FrameFeatures(model.eval().requires_grad_(False), resize=resize, crop=crop, pooling=pooling,
                         config_json=config_json)


def save_random_dinov2(folder: str | os.PathLike, *, seed: int, **sizes: int) -> Path:
    """Write `random_dinov2(seed=seed, **sizes)` as a Hugging Face DINOv2 folder (config.json with only the chosen
    sizes, model.safetensors, preprocessor_config.json) that `load_dinov2` reads; the same arguments give the same
    bytes. Returns the folder."""
    return save_dinov2(random_dinov2(seed=seed, **sizes), folder)


_RUNTIME_CONFIG_KEYS = ("transformers_version", "architectures", "torch_dtype", "dtype", "_name_or_path")

# Recent transformers (5.2x) name DINOv2's attention projections q/k/v/o_proj and split the SwiGLU FFN's input
# projection in two, renaming the released checkpoints' keys as it loads them; earlier versions (4.x, early 5.x)
# use the released names and leave unknown keys' weights random, with a warning only. So files are written in
# the released layout, which every version reads (as `save_pretrained` does).
_RELEASED_NAMES = ((".attention.q_proj.", ".attention.attention.query."),
                   (".attention.k_proj.", ".attention.attention.key."),
                   (".attention.v_proj.", ".attention.attention.value."),
                   (".attention.o_proj.", ".attention.output.dense."),
                   (".mlp.down_proj.", ".mlp.weights_out."))


def _released_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` (a transformers `Dinov2Model`, any version) under the released checkpoints' key names."""
    state = {}
    for key, value in model.state_dict().items():
        for name, released in _RELEASED_NAMES:
            key = key.replace(name, released)
        state[key] = value
    for gate in [k for k in state if ".mlp.gate_proj." in k]:  # SwiGLU: weights_in = [gate; up] along dim 0
        up = gate.replace(".gate_proj.", ".up_proj.")
        state[gate.replace(".gate_proj.", ".weights_in.")] = torch.cat([state.pop(gate), state.pop(up)])
    return state


def save_dinov2(features: FrameFeatures, folder: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
    """Write DINOv2 frame features (e.g. one trained with T_LUFS) as a Hugging Face DINOv2 folder that `load_dinov2`
    reads: config.json (its `config_json`, else the model's settings that differ from `Dinov2Config`'s defaults),
    model.safetensors (float32, in the released checkpoints' key layout, which every transformers version loads;
    extra string `metadata` in its header, e.g. `trained_by`) and
    preprocessor_config.json (its resize, crop, mean and std). Files already in the folder are replaced. Returns the
    folder."""
    from safetensors.torch import save_file

    from ._fs import atomic_write_path

    root = Path(folder).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    config = features.config_json
    if config is None:
        config = {k: v for k, v in features.model.config.to_diff_dict().items() if k not in _RUNTIME_CONFIG_KEYS}
        config["model_type"] = "dinov2"
    processor = {"do_resize": True, "size": {"shortest_edge": features.resize}, "do_center_crop": True,
                 "crop_size": {"height": features.crop, "width": features.crop}, "do_normalize": True,
                 "image_mean": [round(float(v), 6) for v in features.mean.flatten()],
                 "image_std": [round(float(v), 6) for v in features.std.flatten()],
                 "image_processor_type": "BitImageProcessor"}
    for name, data in (("config.json", config), ("preprocessor_config.json", processor)):
        with atomic_write_path(root / name) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    state = {k: v.detach().float().contiguous().cpu() for k, v in _released_state_dict(features.model).items()}
    with atomic_write_path(root / "model.safetensors") as tmp:
        save_file(state, tmp, metadata={**(metadata or {}), "format": "pt"})
    return root


@torch.inference_mode()
def predict_lufs(video: str | os.PathLike, *, features: FrameFeatures, predictor: LufsPredictor) -> LufsCurve:
    """Predict the L/R loudness curve of a video (any frame rate; frames sampled by time at 6 fps).

    Args:
        video: path of the video file.
        features: DINOv2 frame features (`load_dinov2`).
        predictor: T_LUFS (`load_predictor`).
    """
    from .video import probe_video, read_frames

    pooling = predictor.config.frame_pooling
    dim = features.feature_dim_for(pooling)
    if dim != predictor.config.feature_dim:
        raise ValueError(f"the predictor reads {predictor.config.feature_dim}-d features but this DINOv2 gives "
                         f"{dim}-d ones ({pooling!r} pooling): use the DINOv2 size it was trained with")
    info = probe_video(video)
    limit = predictor.config.max_frames / predictor.config.rate
    if info.duration > limit:
        raise ValueError(f"{video} is {info.duration:.2f} s long; the LUFS predictor covers at most {limit:g} s")
    frames = read_frames(video, fps=predictor.config.rate, size=features.frame_size(info.height, info.width))
    feats = features(frames.frames, pooling=pooling)
    param = next(predictor.parameters())
    curve = predictor(feats[None].to(device=param.device, dtype=param.dtype))[0].float().cpu()
    expected = frames_for(info.duration, predictor.config.rate)
    assert curve.shape == (2, expected), f"{curve.shape=} {expected=}"
    return LufsCurve.from_normalized(curve, rate=predictor.config.rate)
