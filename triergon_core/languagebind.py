"""LanguageBind condition encoders: e_L (text), e_A (reference audio) and e_V (video) from local checkpoints.

`load_languagebind(folder)` returns `LanguageBindEncoders`, a `ConditionEncoders` for `prepare_conditions` /
`generate` (`encoders=`). Each embedding is what LanguageBind's towers give: the pooled output, projected
(`get_text_features` / `get_image_features`), L2-normalised, as `[B, 1, D]` float32 (D = 768 for the released
checkpoints); preprocessing follows the package's processors (`languagebind_preprocess`).

Folder layout (Hugging Face downloads, e.g. `huggingface-cli download LanguageBind/LanguageBind_Video_FT
--local-dir <folder>/video`); nothing is ever fetched (`local_files_only=True`):

    <folder>/video/  LanguageBind/LanguageBind_Video_FT: config.json, model.safetensors or pytorch_model.bin
                     (or a sharded *.index.json), vocab.json + merges.txt (+ tokenizer_config.json,
                     special_tokens_map.json). Gives e_V, and e_L (its text tower, see below).
    <folder>/audio/  LanguageBind/LanguageBind_Audio_FT: config.json and the weights. Gives e_A.

A sub-folder may also keep the repository's name (`LanguageBind_Video_FT`, `LanguageBind_Audio_FT`). Towers
load on first use, so a folder with only `video/` serves text and video conditions.

Text tower: every LanguageBind checkpoint carries a text tower and a modality tower trained against it.
e_L comes from the video checkpoint's (`text_tower="video"`): Tri-Ergon pairs text with video, so e_L and
e_V then share the space of one contrastive model, and text-only / video runs never load the audio weights.
LanguageBind's own multi-modal wrapper treats the text towers as interchangeable (it keeps whichever
checkpoint loaded last); `text_tower="audio"` takes the audio checkpoint's instead.

Towers: our own PyTorch modules (`languagebind_towers`) with the package's parameter names; the checkpoints are
read by `languagebind_checkpoint` (safetensors, `pytorch_model.bin` with `weights_only=True`, or shards; LoRA
weights merged at load). The tokenizer is CLIP's BPE (`transformers.CLIPTokenizer`) on the folder's `vocab.json`
/ `merges.txt`, as the package's tokenizer classes (which only set <|endoftext|> as the padding token). The
`languagebind` package is not used at run time; the tests compare these towers with its classes.

Tiny random towers: `LanguageBindEncoders.tiny_random(embed_dim=..., seed=...)` builds the same towers at tiny
sizes (`TINY_CONFIGS`) with seeded random weights and a byte-level tokenizer, in memory: the `tiny` preset's
encoders (`encoders.build_encoders`), so every conditioning path runs without any download. `save_tiny_random` writes
them as a folder in the released layout (the demo model's encoders, `weights/demo/languagebind`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from .config import SAMPLE_RATE
from .languagebind_checkpoint import TOWERS, check_tower_files, load_tower, tower_from_config
from .languagebind_preprocess import (
    AUDIO_MEAN,
    AUDIO_SAMPLE_RATE,
    AUDIO_STD,
    CONTEXT_LENGTH,
    frame_times,
    preprocess_audio,
    preprocess_video,
)
from .languagebind_towers import LanguageBindTower

logger = logging.getLogger(__name__)

__all__ = ["TINY_CONFIGS", "TINY_SEED", "LanguageBindEncoders", "load_languagebind", "save_tiny_random", "save_towers",
           "tiny_random_towers", "towers_from_folder"]

# `LanguageBindEncoders.tiny_random`: the package's config values at tiny sizes (the released towers: width 768
# or 1024, 12 or 24 layers, 224 x 224 frames in 14 x 14 patches, 112 mel bins x 1036 frames). LoRA off, as in
# the fully fine-tuned (_FT) checkpoints; the audio normalisation constants are Audio_FT's.
TINY_SEED = 1234
_TINY_WIDTH = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_CONFIGS = {
    "text": {**_TINY_WIDTH, "max_position_embeddings": CONTEXT_LENGTH, "hidden_act": "gelu"},
    "video": {**_TINY_WIDTH, "image_size": 32, "patch_size": 8, "add_time_attn": True, "num_frames": 8,
              "lora_r": 0, "hidden_act": "gelu"},
    "audio": {**_TINY_WIDTH, "image_size": 32, "patch_size": 8, "num_frames": 1, "lora_r": 0, "num_mel_bins": 32,
              "target_length": 128, "audio_sample_rate": AUDIO_SAMPLE_RATE, "audio_mean": AUDIO_MEAN,
              "audio_std": AUDIO_STD, "hidden_act": "gelu"},
}
_TINY_CACHE: dict[tuple[int, int], LanguageBindEncoders] = {}
_TINY_LOCK = threading.Lock()


# --- towers -------------------------------------------------------------------------------------------------


def _tower_dir(root: Path, kind: str) -> Path:
    """The first existing accepted sub-folder of `root` for tower `kind` (else the canonical one)."""
    names = TOWERS[kind][1]
    return next((root / n for n in names if (root / n).is_dir()), root / names[0])


class _Tower:
    """A loaded checkpoint (`LanguageBindTower`, eval, frozen) and, for the text tower, its tokenizer."""

    def __init__(self, model: LanguageBindTower, *, tokenizer, attn_implementation: str) -> None:
        model.set_attention(attn_implementation)
        self.model, self.tokenizer = model, tokenizer
        self.vision_config = model.vision_config
        self.projection_dim = model.projection_dim

    def cast(self, x: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        return x.to(device=p.device, dtype=p.dtype)


def _clip_tokenizer(folder: Path):
    """CLIP's BPE tokenizer from the folder's vocab.json / merges.txt (and tokenizer_config.json if present), padding
    with <|endoftext|> as LanguageBind's tokenizer classes do. `from_pretrained` reads these files alike under
    transformers 4.x (Python BPE) and 5.x (the `tokenizers` backend)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, pad_token="<|endoftext|>")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte -> printable character table of byte-level BPE (transformers 5 no longer exports it)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)  # the n-th byte left out maps to chr(256 + n)
    return dict(zip(bs, map(chr, cs), strict=True))


def _load_tower(path: Path, kind: str, *, text: bool, device: torch.device, dtype: torch.dtype,
                attn_implementation: str) -> _Tower:
    """One checkpoint from its folder (validated first; see `languagebind_checkpoint.load_tower`)."""
    with torch.inference_mode(False):  # built lazily, maybe inside inference_mode: keep ordinary parameters
        model = load_tower(path, kind, text=text, device=device, dtype=dtype)
    tokenizer = _clip_tokenizer(path) if text else None
    return _Tower(model, tokenizer=tokenizer, attn_implementation=attn_implementation)


def _folder_signature(path: Path | None) -> str:
    """Names a tower folder's contents cheaply, for `LanguageBindEncoders.identity`: its resolved path and each
    file's name, size and modification time (a re-download or an edited config gives another signature)."""
    if path is None:
        return "none"
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    else:
        h.update(b"missing")
    return f"{path.resolve()}@{h.hexdigest()[:16]}"


def _write_tiny_vocabulary(folder: Path) -> None:
    """vocab.json / merges.txt of the tiny towers' tokenizer: a byte-level vocabulary (each byte alone and
    word-final, then <|startoftext|> and <|endoftext|>, the largest id, as CLIP's EOT pooling needs), no merges."""
    chars = list(bytes_to_unicode().values())
    vocab = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    Path(folder, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    Path(folder, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _tiny_tokenizer():
    """CLIP's BPE tokenizer on the tiny byte-level vocabulary (`_write_tiny_vocabulary`). The tokenizer reads only
    files: they exist in a temporary folder just while it is constructed."""
    with tempfile.TemporaryDirectory(prefix="triergon-tiny-tokenizer-") as folder:
        _write_tiny_vocabulary(Path(folder))
        return _clip_tokenizer(Path(folder))


def _tiny_towers(embed_dim: int, seed: int, *, text_tower: str,
                 vocab_size: int) -> dict[str, tuple[dict, LanguageBindTower]]:
    """kind -> (config.json's dict, tower) of the tiny random towers, weights drawn from a generator seeded with
    `seed` (video first, then audio); the text tower goes with `text_tower`. The global random state is left as it
    was; the towers are CPU, float32, eval and frozen."""
    if embed_dim < 1:
        raise ValueError(f"embed_dim must be positive, got {embed_dim}")
    text = {**TINY_CONFIGS["text"], "vocab_size": vocab_size}
    generator = torch.Generator().manual_seed(seed)
    towers = {}
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False):  # modules' default init draws globally
        for kind in ("video", "audio"):
            has_text = kind == text_tower
            config = {"model_type": TOWERS[kind][0], "projection_dim": embed_dim,
                      **({"text_config": text} if has_text else {}), "vision_config": TINY_CONFIGS[kind]}
            model = tower_from_config(config, kind, text=has_text).init_random_(generator)
            towers[kind] = config, model.eval().requires_grad_(False)
    return towers


def tiny_random_towers(embed_dim: int, seed: int = TINY_SEED) -> dict[str, tuple[dict, LanguageBindTower]]:
    """kind ("video" with the text tower, "audio") -> (config.json's dict, tower): new modules with the weights of
    `LanguageBindEncoders.tiny_random(embed_dim=..., seed=...)`, not shared with it (e.g. to train them; they come
    eval and frozen)."""
    return _tiny_towers(embed_dim, seed, text_tower="video", vocab_size=len(_tiny_tokenizer()))


def towers_from_folder(folder: str | os.PathLike) -> dict[str, tuple[dict, LanguageBindTower]]:
    """kind -> (config.json's dict, tower) of a LanguageBind folder (video tower with its text tower, audio tower):
    new float32 CPU modules, eval and frozen, as `tiny_random_towers` gives them."""
    root = Path(folder).expanduser()
    return {kind: (json.loads((_tower_dir(root, kind) / "config.json").read_text(encoding="utf-8")),
                   load_tower(_tower_dir(root, kind), kind, text=kind == "video", device=torch.device("cpu"),
                              dtype=torch.float32)) for kind in ("video", "audio")}


def save_towers(folder: str | os.PathLike, towers: dict[str, tuple[dict, LanguageBindTower]], *,
                tokenizer_from: str | os.PathLike | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write `towers` (kind -> (config.json's dict, tower), e.g. trained ones) as a LanguageBind folder in the
    released layout (`video/`: config.json, model.safetensors, tokenizer files; `audio/`: config.json,
    model.safetensors), which `load_languagebind` loads. The tokenizer files are copied from the video tower folder
    `tokenizer_from` (None: the tiny byte-level vocabulary); `metadata` goes into each model.safetensors. The same
    towers give the same bytes (with more than one metadata entry, safetensors may order the header's entries
    differently). Returns the folder."""
    import shutil

    from safetensors.torch import save_file

    from ._fs import atomic_write_path

    root = Path(folder).expanduser()
    source = None if tokenizer_from is None else _tower_dir(Path(tokenizer_from).expanduser(), "video")
    for kind, (config, model) in towers.items():
        path = root / TOWERS[kind][1][0]
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
        with atomic_write_path(path / "model.safetensors") as tmp:
            save_file(state, tmp, metadata={"format": "pt", **(metadata or {})})
        if model.has_text and source is None:
            _write_tiny_vocabulary(path)
        elif model.has_text:
            for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
                if (source / name).is_file() and (source / name).resolve() != (path / name).resolve():
                    shutil.copyfile(source / name, path / name)
    return root


def save_tiny_random(folder: str | os.PathLike, *, embed_dim: int, seed: int = TINY_SEED) -> Path:
    """Write the towers `LanguageBindEncoders.tiny_random(embed_dim=..., seed=...)` builds as a LanguageBind folder
    in the released layout (`video/`: config.json, model.safetensors, vocab.json, merges.txt; `audio/`: config.json,
    model.safetensors), so that `load_languagebind(folder)` loads them as real towers and gives the same
    embeddings. The same arguments give the same bytes. Returns the folder."""
    return save_towers(folder, tiny_random_towers(embed_dim, seed))


def _tiny_spec() -> str:
    """`TINY_CONFIGS` in short: layers x width per tower, frames x size / patch, mel bins x frames / patch."""
    t, v, a = TINY_CONFIGS["text"], TINY_CONFIGS["video"], TINY_CONFIGS["audio"]
    return (f"text={t['num_hidden_layers']}x{t['hidden_size']},"
            f"video={v['num_hidden_layers']}x{v['hidden_size']}:{v['num_frames']}x{v['image_size']}/{v['patch_size']},"
            f"audio={a['num_hidden_layers']}x{a['hidden_size']}:{a['num_mel_bins']}x{a['target_length']}/"
            f"{a['patch_size']}")


def _embed(features: torch.Tensor) -> torch.Tensor:
    """Projected pooled features [B, D] -> unit-norm float32 [B, 1, D]."""
    return F.normalize(features.float(), dim=-1)[:, None, :]


class LanguageBindEncoders:
    """LanguageBind's text, audio and video towers as `ConditionEncoders` (each tower loads on first use).

    Args:
        video_dir: the LanguageBind_Video_FT folder (video and, by default, text); None: no video/text.
        audio_dir: the LanguageBind_Audio_FT folder; None: no audio.
        device, dtype: where and in which dtype the towers run (default: CPU, float32). Outputs are float32.
        text_tower: "video" (default) or "audio": whose checkpoint's text tower gives e_L.
        attn_implementation: "sdpa" (default) or "eager" (the original's arithmetic; same results within
            float rounding).
    """

    def __init__(self, *, video_dir: str | os.PathLike | None, audio_dir: str | os.PathLike | None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 text_tower: Literal["video", "audio"] = "video", attn_implementation: str = "sdpa") -> None:
        if text_tower not in ("video", "audio"):
            raise ValueError(f"text_tower must be 'video' or 'audio', got {text_tower!r}")
        if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        if attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
        self.dirs = {"video": None if video_dir is None else Path(video_dir),
                     "audio": None if audio_dir is None else Path(audio_dir)}
        self.device, self.dtype = torch.device(device), dtype or torch.float32
        self.text_tower, self.attn_implementation = text_tower, attn_implementation
        self._towers: dict[str, _Tower] = {}
        self._lock = threading.RLock()
        self._tiny: str | None = None  # set by `tiny_random`: its identity

    @classmethod
    def tiny_random(cls, *, embed_dim: int, seed: int = TINY_SEED) -> LanguageBindEncoders:
        """LanguageBind's video (with its text) and audio towers at tiny size, with seeded random weights: the
        `tiny` preset's encoders. Built in memory (nothing is downloaded or kept on disk; the tokenizer reads its
        vocabulary from files, which live in a temporary folder while it is constructed), once per process for
        each (`embed_dim`, `seed`), and shared; CPU, float32, sdpa attention.

        The models are the released towers' classes (`LanguageBindTower`) at the sizes of `TINY_CONFIGS` (2
        layers of width 32 with 2 heads in every tower; video: 8 frames of 32 x 32 in 8 x 8 patches, with time
        attention; audio: 32 mel bins x 128 frames), projected to `embed_dim`, with weights drawn from a
        generator seeded with `seed`; the tokenizer is CLIP's BPE tokenizer on a byte-level vocabulary without merges
        (one token per character, so a prompt keeps its first 75 or so non-space characters). Preprocessing is
        LanguageBind's at these sizes. Same seed, same weights in every process (`identity` names them: the
        seed, the sizes and a digest of the weights). The embeddings carry no meaning.
        """
        key = (int(embed_dim), int(seed))
        with _TINY_LOCK:
            if key not in _TINY_CACHE:
                _TINY_CACHE[key] = cls._build_tiny(*key)
            return _TINY_CACHE[key]

    @classmethod
    def _build_tiny(cls, embed_dim: int, seed: int) -> LanguageBindEncoders:
        """A new `tiny_random` instance (uncached); the global random state is left as it was."""
        enc = cls(video_dir=None, audio_dir=None)
        tokenizer = _tiny_tokenizer()
        digest = hashlib.sha256()
        towers = _tiny_towers(embed_dim, seed, text_tower=enc.text_tower, vocab_size=len(tokenizer))
        for kind, (_, model) in towers.items():
            model = model.to(device=enc.device, dtype=enc.dtype)
            tower = _Tower(model, tokenizer=tokenizer if model.has_text else None,
                           attn_implementation=enc.attn_implementation)
            for name, value in sorted(model.state_dict().items()):
                digest.update(f"{kind}.{name}{tuple(value.shape)}".encode())
                digest.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            enc._towers[kind] = tower
        enc._tiny = (f"languagebind-tiny-random:seed={seed}:embed_dim={embed_dim}:vocab={len(tokenizer)}:"
                     f"{_tiny_spec()}:weights={digest.hexdigest()[:16]}")
        return enc

    @property
    def identity(self) -> str:
        """Names these encoders and their weights (it keys the embedding cache): for folders, each tower
        folder's path and a signature of its files, the text tower and the dtype; for `tiny_random`, the seed,
        sizes and a digest of the weights."""
        if self._tiny is not None:
            return self._tiny
        dirs = ":".join(f"{k}={_folder_signature(v)}" for k, v in self.dirs.items())
        return f"languagebind:{dirs}:text={self.text_tower}:dtype={str(self.dtype).removeprefix('torch.')}"

    def __repr__(self) -> str:
        if self._tiny is not None:
            return f"LanguageBindEncoders({self._tiny!r})"
        dirs = ", ".join(f"{k}={str(v) if v else None!r}" for k, v in self.dirs.items())
        return (f"LanguageBindEncoders({dirs}, text_tower={self.text_tower!r}, device={self.device}, "
                f"loaded={sorted(self._towers)})")

    def _tower(self, kind: str) -> _Tower:
        with self._lock:
            if kind not in self._towers:
                path = self.dirs[kind]
                if path is None:
                    raise FileNotFoundError(f"no LanguageBind {kind} tower was given (pass {kind}_dir=, or a folder "
                                            f"with a {kind}/ sub-folder to load_languagebind)")
                self._towers[kind] = _load_tower(path, kind, text=kind == self.text_tower, device=self.device,
                                                 dtype=self.dtype, attn_implementation=self.attn_implementation)
            return self._towers[kind]

    def to(self, device: torch.device | str) -> LanguageBindEncoders:
        """Move the loaded towers to `device`, where later ones load too (`generate(offload=True)` moves them to
        the GPU for encoding only)."""
        with self._lock:
            self.device = torch.device(device)
            for tower in self._towers.values():
                tower.model.to(self.device)
        return self

    @property
    def loaded(self) -> tuple[str, ...]:
        """The towers loaded so far ("video", "audio")."""
        return tuple(sorted(self._towers))

    @property
    def embed_dim(self) -> int:
        """D, the projection size (768 for the released checkpoints), from a loaded tower or a tower folder's
        config.json (`projection_dim`; no weights are read); a model's `conditioning.embed_dim` must equal it."""
        for tower in self._towers.values():
            return tower.projection_dim
        kinds = [self.text_tower, *(k for k in TOWERS if k != self.text_tower)]
        paths = [self.dirs[k] for k in kinds if self.dirs[k] is not None and (self.dirs[k] / "config.json").is_file()]
        if not paths:
            raise FileNotFoundError(f"no LanguageBind tower folder with a config.json to read the embedding size from "
                                    f"(looked for {', '.join(str(p) for p in self.dirs.values() if p) or 'none'})")
        dim = json.loads((paths[0] / "config.json").read_text()).get("projection_dim")
        if not isinstance(dim, int):
            raise ValueError(f"{paths[0] / 'config.json'} has no projection_dim: not a LanguageBind tower")
        return dim

    def require(self, modalities) -> None:
        """Raise (FileNotFoundError / ValueError naming the tower and its folder) unless each of `modalities`
        ("text", "audio", "video") can be encoded; checks the towers' files, loads no weights."""
        for kind in dict.fromkeys(self.text_tower if m == "text" else m for m in modalities):
            if kind not in self._towers:
                if self.dirs[kind] is None:
                    raise FileNotFoundError(f"no LanguageBind {kind} tower was given (pass {kind}_dir=, or a "
                                            f"folder with a {kind}/ sub-folder to load_languagebind)")
                check_tower_files(self.dirs[kind], kind, text=kind == self.text_tower)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Prompts -> `input_ids` / `attention_mask` [B, 77], as the processors' text path (CLIP BPE, lower-cased,
        <|startoftext|> ... <|endoftext|>, truncated to 77 tokens, padded with <|endoftext|>)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"encode_text needs a non-empty list of strings, got {texts!r}")
        tokenizer = self._tower(self.text_tower).tokenizer
        enc = tokenizer(texts, max_length=CONTEXT_LENGTH, padding="max_length", truncation=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> e_L `[B, 1, D]` (`tokenize`, then the text tower, EOT-pooled and projected)."""
        enc = self.tokenize(texts)
        tower = self._tower(self.text_tower)
        device = next(tower.model.parameters()).device
        feats = tower.model.get_text_features(input_ids=enc["input_ids"].to(device),
                                              attention_mask=enc["attention_mask"].to(device))
        return _embed(feats)

    @torch.inference_mode()
    def encode_audio(self, audio: torch.Tensor, *, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Reference audio `[B, channels, samples]` (44.1 kHz by default) -> e_A `[B, 1, D]`.

        As LanguageBind's processor: resampled to 16 kHz, mean removed, filter bank of the FIRST channel (left),
        tiled or cut into 3 chunks of `target_length` frames (see `languagebind_preprocess`)."""
        if audio.dim() != 3 or audio.shape[0] < 1 or audio.shape[1] < 1:
            raise ValueError(f"expected audio [batch, channels, samples], got shape {tuple(audio.shape)}")
        tower = self._tower("audio")
        cfg = tower.vision_config
        pixels = torch.stack([
            preprocess_audio(wave, sample_rate, target_rate=int(cfg.audio_sample_rate),
                             num_mel_bins=int(cfg.num_mel_bins), target_length=int(cfg.target_length),
                             audio_mean=float(cfg.audio_mean), audio_std=float(cfg.audio_std)) for wave in audio])
        return _embed(tower.model.get_image_features(pixel_values=tower.cast(pixels)))

    def encode_audio_file(self, path: str | os.PathLike) -> torch.Tensor:
        """e_A `[1, 1, D]` of an audio (or video) file, decoded and resampled straight to the tower's rate (16 kHz),
        as LanguageBind's processor does with the file (mono and stereo files give its exact input)."""
        from .audio import load_audio

        rate = int(self._tower("audio").vision_config.audio_sample_rate)
        return self.encode_audio(load_audio(path, target_rate=rate)[None], sample_rate=rate)

    @torch.inference_mode()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Video frames `[B, T, H, W, 3]` (float in [0, 1], or uint8) -> e_V `[B, 1, D]`.

        As LanguageBind's processor: frames `linspace(0, T - 1, 8)` (truncated), normalised, short side scaled
        to 224, centre crop 224 (the processor's random horizontal flip is left out)."""
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise ValueError(f"expected video frames [B, T, H, W, 3], got shape {tuple(frames.shape)}")
        tower = self._tower("video")
        cfg = tower.vision_config
        pixels = torch.stack([preprocess_video(clip, num_frames=int(cfg.num_frames), size=int(cfg.image_size))
                              for clip in frames])  # [B, 3, T, S, S]
        return _embed(tower.model.get_image_features(pixel_values=tower.cast(pixels)))

    def read_video_frames(self, path: str | os.PathLike, *, start: float = 0.0, end: float | None = None,
                          sampling: Literal["languagebind", "centres"] = "languagebind"):
        """The `num_frames` (8) frames `encode_video_file` uses, read with our by-time reader (`video.py`).

        sampling: "languagebind" (default): the frames LanguageBind's decord loader takes, i.e. frame indices
            linspace(0, n - 1, 8) of the n frames in [start, end], first and last included (`frame_times`);
            "centres": the instants at the centres of 8 equal segments (`read_frames(num_frames=8)`).
        Frames come at full size (the resize is LanguageBind's own bilinear, done by `encode_video`).
        Returns a `VideoFrames` (uint8 frames [8, H, W, 3], requested instants, source timestamps).
        """
        from .video import probe_video, read_frames

        n = int(self._tower("video").vision_config.num_frames)
        info = probe_video(path)
        count = info.num_frames or (round(info.duration * info.fps) if info.fps > 0 else 0)
        if sampling == "centres" or count < 1:
            return read_frames(path, num_frames=n, start=start, end=end)
        if sampling != "languagebind":
            raise ValueError(f"sampling must be 'languagebind' or 'centres', got {sampling!r}")
        return read_frames(path, times=frame_times(info.duration, count, n, start=start, end=end))

    def encode_video_file(self, path: str | os.PathLike, *, start: float = 0.0, end: float | None = None,
                          sampling: Literal["languagebind", "centres"] = "languagebind") -> torch.Tensor:
        """e_V `[1, 1, D]` of a video file: `read_video_frames` (decoded with PyAV, never decord / OpenCV),
        then `encode_video`. `start` / `end` (seconds) restrict it to a clip."""
        frames = self.read_video_frames(path, start=start, end=end, sampling=sampling).frames
        return self.encode_video(frames[None])


def load_languagebind(folder: str | os.PathLike, *, device: torch.device | str = "cpu",
                      dtype: torch.dtype | None = None, text_tower: Literal["video", "audio"] = "video",
                      attn_implementation: str = "sdpa") -> LanguageBindEncoders:
    """LanguageBind encoders from `folder` (layout in the module doc: `video/`, `audio/`); nothing is fetched.

    Towers load lazily: a missing `audio/` only matters once reference audio is encoded, and then the error
    names the tower and the path it was looked for at.

    Args:
        folder: the folder holding the towers' sub-folders.
        device, dtype: where / in which dtype the towers run (default CPU, float32).
        text_tower: whose text tower gives e_L: "video" (default) or "audio".
        attn_implementation: "sdpa" (default) or "eager".

    Raises:
        FileNotFoundError: `folder` does not exist or holds neither tower.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"LanguageBind folder not found: {root} (it should hold video/ = "
                                f"{TOWERS['video'][2]} and audio/ = {TOWERS['audio'][2]})")
    dirs = {kind: _tower_dir(root, kind) for kind in TOWERS}
    if not any(d.is_dir() for d in dirs.values()):
        raise FileNotFoundError(f"{root} holds no LanguageBind tower: expected {dirs['video']} "
                                f"({TOWERS['video'][2]}) and/or {dirs['audio']} ({TOWERS['audio'][2]})")
    return LanguageBindEncoders(video_dir=dirs["video"], audio_dir=dirs["audio"], device=device, dtype=dtype,
                                text_tower=text_tower, attn_implementation=attn_implementation)
