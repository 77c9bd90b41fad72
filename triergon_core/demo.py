"""The shipped `demo` model: where its files are, whether they are trained, and `run_demo`, the README's main job.

The files live in the package (`weights/demo/`, also in the wheel); nothing is downloaded:

    triergon-demo.safetensors    VAE + DiT + conditioner of the `demo` preset (float16)
    languagebind/video, audio/   the condition encoders: LanguageBind's towers at small size (`TINY_CONFIGS`),
                                 128-wide, trained on SynthFoley from the seeded random towers (`synthfoley-encoders`),
                                 in the released folder layout
    dinov2/                      DINOv2 at small size (`DEMO_DINOV2`), trained with T_LUFS from seeded random weights
                                 (`synthfoley-lufs-frames`): T_LUFS's features
    lufs-predictor.safetensors   T_LUFS (`demo` preset)
    MODEL_CARD.md                data, recipes, training time, scores, limits

A weights file whose safetensors metadata says `"trained": "false"` holds seeded random placeholder weights (see
`train/demo_bundle.py`); loading one logs a warning. `write_demo_encoders` rebuilds, byte for byte, the seeded random
DINOv2 and LanguageBind towers that their trainings started from.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .languagebind import TINY_SEED, save_tiny_random
from .lufs_predictor import DEMO_DINOV2, save_random_dinov2
from .presets import get_preset

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "weights" / "demo"
MODEL_FILE = "triergon-demo.safetensors"
PREDICTOR_FILE = "lufs-predictor.safetensors"
LANGUAGEBIND_DIR = "languagebind"
DINOV2_DIR = "dinov2"
MODEL_CARD = "MODEL_CARD.md"
ENCODER_SEED = TINY_SEED  # the demo's LanguageBind towers: those of `tiny_random(embed_dim=128)`
DINOV2_SEED = 0


@dataclass(frozen=True)
class DemoFiles:
    """The paths of a demo weights folder (default: the shipped one)."""

    root: Path = DEMO_DIR

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def languagebind(self) -> Path:
        return self.root / LANGUAGEBIND_DIR

    @property
    def dinov2(self) -> Path:
        return self.root / DINOV2_DIR

    @property
    def predictor(self) -> Path:
        return self.root / PREDICTOR_FILE

    @property
    def card(self) -> Path:
        return self.root / MODEL_CARD

    def check(self) -> DemoFiles:
        """Raise a FileNotFoundError naming the first missing file; return self."""
        for path in (self.model, self.languagebind, self.dinov2, self.predictor):
            if not path.exists():
                raise FileNotFoundError(f"the demo model's {path.name} is missing from {self.root}: reinstall "
                                        "triergon, or rebuild the folder with `triergon demo bundle`")
        return self


def is_demo_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is the shipped demo checkpoint (so its shipped encoders go with it)."""
    return Path(path).expanduser().resolve() == DemoFiles().model.resolve()


def is_trained(path: str | os.PathLike, part: str | None = None) -> bool:
    """False when the safetensors metadata of `path` says `"trained": "false"` (placeholder weights), or, with
    `part` (e.g. "vae"), when its `"trained_parts"` list leaves that part out; files without those fields (every
    checkpoint not made by `triergon demo bundle`) count as trained."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError):
        return True  # not ours to judge: the loader reports unreadable files
    parts = meta.get("trained_parts")
    return meta.get("trained", "true") != "false" and (part is None or parts is None or part in parts.split(","))


def apply_demo_defaults(args: Any, *, lufs_models: bool = False) -> None:
    """The command line's defaults, set on its parsed `args`: without --checkpoint and --preset, the shipped demo
    model (with `lufs_models`, also its DINOv2 and T_LUFS where not given); the demo checkpoint brings the
    LanguageBind towers it was trained with when --languagebind is not given."""
    demo = DemoFiles()
    if args.checkpoint is None and args.preset is None:
        args.checkpoint = str(demo.check().model)
        if lufs_models:
            args.dinov2 = args.dinov2 or str(demo.dinov2)
            args.lufs_predictor = args.lufs_predictor or str(demo.predictor)
    if args.checkpoint and args.languagebind is None and is_demo_checkpoint(args.checkpoint):
        args.languagebind = str(demo.languagebind)


def warn_if_untrained(path: str | os.PathLike, what: str = "model") -> bool:
    """Log one warning line when `path` holds placeholder weights; returns whether it does."""
    if is_trained(path):
        return False
    logger.warning("the %s weights %s are untrained placeholders (seeded random): the output is noise-like until "
                   "trained demo weights ship (see %s)", what, Path(path).name, DemoFiles().card)
    return True


def write_demo_encoders(root: str | os.PathLike, *, languagebind: bool = True, dinov2: bool = True) -> DemoFiles:
    """(Re)build the demo's seeded random encoders under `root`, where the demo's training starts: with `dinov2`,
    `dinov2/` (`DEMO_DINOV2`), and with `languagebind`, `languagebind/` (the towers of
    `LanguageBindEncoders.tiny_random(embed_dim=128)`). Deterministic: the same bytes every time."""
    files = DemoFiles(root)
    if languagebind:
        save_tiny_random(files.languagebind, embed_dim=get_preset("demo").conditioning.embed_dim, seed=ENCODER_SEED)
    if dinov2:
        save_random_dinov2(files.dinov2, seed=DINOV2_SEED, **DEMO_DINOV2)
    return files


# --- the main job ------------------------------------------------------------------------------------------------

DEMO_OUTPUTS = {"video": "synthfoley.mp4", "curve": "lufs_predicted.json", "audio": "generated.wav",
                "muxed": "generated.mp4", "plot": "lufs_predicted_vs_measured.png"}


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` wrote, and how well the sound followed the curves (MAE in LU per channel, L and R)."""

    paths: dict[str, Path]
    caption: str
    seconds: float
    prediction_mae: tuple[float, ...]  # T_LUFS's curve against the loudness of the clip's own sound
    generation_mae: tuple[float, ...]  # the generated audio's loudness against T_LUFS's curve (its request)
    trained: bool
    elapsed: float


def run_demo(output: str | os.PathLike, *, seed: int = 0, seconds: float = 5.0, steps: int | None = None,
             cfg_scale: float | None = None, files: DemoFiles | None = None,
             callback: Callable[[int, int, object], None] | None = None) -> DemoResult:
    """The whole pipeline on the demo model: render a SynthFoley clip, predict its loudness curve with T_LUFS,
    generate stereo audio for it (video, caption and the predicted curve as conditions), and write it as WAV and
    muxed into the video, with a plot of the predicted against the measured curves.

    Files in `output` (`DEMO_OUTPUTS`): synthfoley.mp4 (the rendered clip with its own sound), lufs_predicted.json,
    generated.wav, generated.mp4 (the clip with the generated sound) and lufs_predicted_vs_measured.png (the
    predicted curve, solid, against the loudness measured on the generated audio, dashed).

    Args:
        output: the folder to write into (created).
        seed: the SynthFoley clip's seed and the sampling seed.
        seconds: the clip's duration (at most the demo preset's 10 s window).
        steps, cfg_scale: sampling settings; None: the demo model's recommended ones (`TriErgon.sampling`).
        files: the demo weights (default: the shipped ones).
        callback: called after each sampling step as callback(step, steps, predicted_x0).
    """
    from .audio import write_audio
    from .checkpoint import load_checkpoint
    from .checks import check_output_path
    from .generate import generate
    from .languagebind import load_languagebind
    from .lufs_curve import LufsCurve
    from .lufs_plot import plot_curves
    from .lufs_predictor import load_dinov2, load_predictor, predict_lufs
    from .metrics import lufs_tracking
    from .mux import mux_audio
    from .synthfoley import render_clip
    from .synthfoley.dataset import write_clip

    start = time.perf_counter()
    files = (files or DemoFiles()).check()
    get_preset("demo").sequence.check_seconds(seconds)
    folder = Path(output).expanduser()
    paths = {key: check_output_path(folder / name, formats=(Path(name).suffix,), what="-o")
             for key, name in DEMO_OUTPUTS.items()}
    clip = render_clip(seed=seed, seconds=seconds)
    write_clip(clip, paths["video"])
    predicted = predict_lufs(paths["video"], features=load_dinov2(files.dinov2),
                             predictor=load_predictor(files.predictor))
    predicted.save(paths["curve"])
    trained = not any([warn_if_untrained(files.predictor, "T_LUFS"), warn_if_untrained(files.model, "demo model")])
    model = load_checkpoint(files.model)
    audio = generate(model, video=paths["video"], text=clip.caption, lufs=predicted,
                     encoders=load_languagebind(files.languagebind), seed=seed, steps=steps, cfg_scale=cfg_scale,
                     callback=callback)[0]
    rate = model.config.sequence.sample_rate
    write_audio(paths["audio"], audio, sample_rate=rate)
    mux_audio(paths["video"], audio, paths["muxed"], sample_rate=rate)
    generated = LufsCurve.measure(audio)
    plot_curves(predicted, overlay=generated, path=paths["plot"], labels=("predicted", "measured"),
                title=f"SynthFoley clip {seed}: T_LUFS's curve vs the generated sound")
    return DemoResult(paths=paths, caption=clip.caption, seconds=audio.shape[-1] / rate,
                      prediction_mae=lufs_tracking(predicted, LufsCurve.measure(torch.from_numpy(clip.audio))).mae,
                      generation_mae=lufs_tracking(predicted, generated).mae, trained=trained,
                      elapsed=time.perf_counter() - start)
