"""Reading the released LanguageBind checkpoints into `languagebind_towers.LanguageBindTower`.

A tower folder (`LanguageBind/LanguageBind_Video_FT`, `LanguageBind/LanguageBind_Audio_FT`) holds `config.json`
and the weights as `model.safetensors`, `pytorch_model.bin` (read with `torch.load(weights_only=True)`) or shards
named by `model.safetensors.index.json` / `pytorch_model.bin.index.json`. `config.json` may leave out values equal
to the package's defaults (transformers writes only the differences), so missing values take those defaults.

`map_checkpoint_keys` is the one place where checkpoint names become ours: buffers (`position_ids`) are dropped,
the `peft` wrapping of a LoRA-tuned encoder (`encoder.base_model.model.`, `.base_layer.`) is removed and each LoRA
pair is merged into its base weight (W + lora_alpha / r * B @ A, as peft's merge).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import fields
from pathlib import Path

import torch

from .languagebind_towers import LanguageBindTower, TextConfig, VisionConfig

logger = logging.getLogger(__name__)

__all__ = ["TOWERS", "WEIGHT_FILES", "check_tower_files", "load_tower", "map_checkpoint_keys", "read_tower_config",
           "read_weights", "tower_from_config"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
# tower -> (model_type in config.json, accepted sub-folder names, Hugging Face repository)
TOWERS = {
    "video": ("LanguageBindVideo", ("video", "LanguageBind_Video_FT"), "LanguageBind/LanguageBind_Video_FT"),
    "audio": ("LanguageBindAudio", ("audio", "LanguageBind_Audio_FT"), "LanguageBind/LanguageBind_Audio_FT"),
}
_PEFT = re.compile(r"\.base_model\.model\.")
_LORA = re.compile(r"^(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")  # `.default` is peft's adapter name


def check_tower_files(path: Path, kind: str, *, text: bool) -> dict:
    """Validate a tower folder; return its config.json. Errors name the tower, its use and the path."""
    model_type, _, repo = TOWERS[kind]
    use = {"video": "video conditions (e_V)", "audio": "reference-audio conditions (e_A)"}[kind]
    use += " and text conditions (e_L)" if text else ""
    hint = f"download {repo} there, e.g. `huggingface-cli download {repo} --local-dir {path}`"
    if not path.is_dir():
        raise FileNotFoundError(f"LanguageBind {kind} tower not found: no folder {path} (needed for {use}); {hint}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"LanguageBind {kind} tower at {path} has no config.json (needed for {use}); {hint}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{config_file} is not readable JSON ({err}); re-download {repo}") from err
    if config.get("model_type") != model_type:
        raise ValueError(f"{config_file} is a {config.get('model_type')!r} model, not {model_type!r}: the {kind} "
                         f"tower folder must hold {repo}")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"LanguageBind {kind} tower at {path} has no weights (one of {', '.join(WEIGHT_FILES)}"
                                f"; needed for {use}); {hint}")
    missing = [f for f in TOKENIZER_FILES if not (path / f).is_file()] if text else []
    if missing:
        raise FileNotFoundError(f"LanguageBind {kind} tower at {path} has no tokenizer files ({', '.join(missing)}; "
                                f"needed for {use}); {hint}")
    return config


def _pick(cls, values: dict, **extra):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)


def read_tower_config(config: dict, kind: str) -> tuple[TextConfig, VisionConfig, int]:
    """config.json's dict -> (text config, vision config, projection_dim), with the package's defaults."""
    vision = dict(config.get("vision_config") or {})
    for key in ("num_mel_bins", "target_length", "image_size", "patch_size", "num_frames", "lora_r"):
        if key in vision and isinstance(vision[key], float):
            vision[key] = int(vision[key])  # the package's defaults are floats (0.0)
    if isinstance(vision.get("image_size"), list | tuple):  # a config saved after the audio model rewrote it
        vision["image_size"] = int(vision["image_size"][0])
    vcfg = _pick(VisionConfig, vision, temporal_mlp=kind == "audio", audio_grid=kind == "audio")
    if vision.get("clip_type", "vl") != "vl":
        raise ValueError(f"config.json: clip_type {vision['clip_type']!r} (3D patch embeddings) is not supported; the "
                         f"released checkpoints ({TOWERS[kind][2]}) use 'vl'")
    if kind == "video" and not vcfg.add_time_attn:  # the package's video code builds no embeddings then
        raise ValueError("config.json has add_time_attn false: not a LanguageBind video tower "
                         f"({TOWERS['video'][2]} expected)")
    if vcfg.add_time_attn and vcfg.num_frames < 1:
        raise ValueError(f"config.json: num_frames must be positive with add_time_attn, got {vcfg.num_frames}")
    return _pick(TextConfig, dict(config.get("text_config") or {})), vcfg, int(config.get("projection_dim", 512))


def tower_from_config(config: dict, kind: str, *, text: bool, device: torch.device | str = "cpu") -> LanguageBindTower:
    """An uninitialised tower of config.json's shapes (on `device`; "meta" allocates nothing)."""
    tcfg, vcfg, dim = read_tower_config(config, kind)
    with torch.device(device):
        return LanguageBindTower(text=tcfg if text else None, vision=vcfg, projection_dim=dim)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's checkpoint (safetensors first; `.bin` through `torch.load(weights_only=True)`)."""
    from .checkpoint import load_tensors

    def one(file: Path) -> dict[str, torch.Tensor]:
        try:
            if file.suffix == ".safetensors":
                return load_tensors(file)
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot read LanguageBind weights {file}: {err}") from err

    for name in WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return one(file)
        weight_map = json.loads(file.read_text()).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        if not shards:
            raise ValueError(f"{file} names no shards")
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            if not (path / shard).is_file():
                raise FileNotFoundError(f"{file} names the shard {shard}, which is missing from {path}")
            out.update(one(path / shard))
        return out
    raise FileNotFoundError(f"no weights in {path} (one of {', '.join(WEIGHT_FILES)})")


def map_checkpoint_keys(state: dict[str, torch.Tensor], *, lora_alpha: float) -> dict[str, torch.Tensor]:
    """Checkpoint names -> `LanguageBindTower` names (see the module doc); LoRA pairs merged in float32."""
    plain: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = _PEFT.sub(".", key).replace(".base_layer.", ".")
        if key.endswith("position_ids"):
            continue  # a buffer of the package's embeddings: our positions are implied
        m = _LORA.match(key)
        if m:
            lora.setdefault(m["base"] + ".weight", {})[m["ab"]] = value
        else:
            plain[key] = value
    for key, pair in lora.items():
        if set(pair) != {"A", "B"} or key not in plain:
            raise ValueError(f"incomplete LoRA weights for {key} (have {sorted(pair)}, base present: {key in plain})")
        a, b = pair["A"].float(), pair["B"].float()
        base = plain[key]
        plain[key] = (base.float() + (lora_alpha / a.shape[0]) * (b @ a)).to(base.dtype)
    return plain


def load_tower(path: Path, kind: str, *, text: bool, device: torch.device, dtype: torch.dtype) -> LanguageBindTower:
    """One checkpoint folder (validated first) as a `LanguageBindTower` on `device` in `dtype`, eval, frozen."""
    config = check_tower_files(path, kind, text=text)
    model = tower_from_config(config, kind, text=text, device="meta")
    state = map_checkpoint_keys(read_weights(path), lora_alpha=float(model.vision_config.lora_alpha))
    if not text:  # e_L comes from the other checkpoint: its text weights are not needed
        state = {k: v for k, v in state.items() if not k.startswith(("text_model.", "text_projection."))}
    load_state(model, state, source=path, kind=kind)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    logger.info("loaded the LanguageBind %s tower from %s", kind, path)
    return model


def load_state(model: LanguageBindTower, state: dict[str, torch.Tensor], *, source: Path | str, kind: str) -> None:
    """Mapped tensors into `model` (built on any device, "meta" included: tensors are assigned); every parameter
    must be present with its shape, and nothing else."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items()
             if k in state and state[k].shape != s]
    if missing or unexpected or wrong:
        problems = "; ".join(f"{what} ({len(keys)}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                             for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("wrong shape", wrong)) if keys)
        raise ValueError(f"the LanguageBind {kind} checkpoint at {source} does not fit its config.json's model: "
                         f"{problems}; is it {TOWERS[kind][2]}?")
    model.load_state_dict(state, strict=True, assign=True)
