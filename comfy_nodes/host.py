"""What the nodes need from ComfyUI, imported only at call time: folders, model management, progress, Cancel.

Every function works without ComfyUI too (tests, plain Python): folders then come from environment variables
(`TRIERGON_MODELS_DIR`, `TRIERGON_INPUT_DIR`, `TRIERGON_TEMP_DIR`), models go to the plain device (CUDA when
available), and progress and Cancel are no-ops. Nothing here changes `sys.path`.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

logger = logging.getLogger(__name__)

FOLDER = "triergon"  # models/triergon/, the folder_paths name
SUBFOLDERS = {"languagebind": "languagebind", "dinov2": "dinov2", "lufs_predictor": "lufs_predictor"}
MODEL_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".pth"}


def comfy(name: str) -> ModuleType | None:
    """ComfyUI's module `name` when ComfyUI is running (importable), else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --- folders -------------------------------------------------------------------------------------------------


def register_model_folder() -> None:
    """Register `models/triergon/` with folder_paths, with its extensions set (an empty set lists every file),
    keeping the paths a user gave in `extra_model_paths.yaml` and adding the default folder after them."""
    fp = comfy("folder_paths")
    if fp is None:
        return
    paths, _ = fp.folder_names_and_paths.get(FOLDER, ([], set()))
    default = os.path.join(fp.models_dir, FOLDER)
    paths = list(paths) + ([default] if default not in paths else [])
    fp.folder_names_and_paths[FOLDER] = (paths, set(MODEL_EXTENSIONS))


def model_roots() -> list[Path]:
    """The folders searched for Tri-Ergon models, in order."""
    fp = comfy("folder_paths")
    if fp is not None:
        register_model_folder()
        return [Path(p) for p in fp.get_folder_paths(FOLDER)]
    env = os.environ.get("TRIERGON_MODELS_DIR", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def checkpoint_files() -> list[str]:
    """Checkpoint files under the model roots (relative names), without the encoder and predictor sub-folders."""
    skip = tuple(f"{sub}/" for sub in SUBFOLDERS.values())
    return [f for f in _files(model_roots(), MODEL_EXTENSIONS) if not f.replace(os.sep, "/").startswith(skip)]


def predictor_files() -> list[str]:
    """T_LUFS weight files under `<root>/lufs_predictor/` (relative names)."""
    return _files([r / SUBFOLDERS["lufs_predictor"] for r in model_roots()], MODEL_EXTENSIONS)


def model_subfolders(kind: str) -> list[str]:
    """Folders under `<root>/<kind>/` (one per downloaded LanguageBind or DINOv2 model)."""
    names = set()
    for root in model_roots():
        base = root / SUBFOLDERS[kind]
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


def find_model(name: str, kind: str | None = None, *, folder: bool = False) -> Path:
    """The path of model file (or folder) `name`, from the first root that has it; a FileNotFoundError names
    the folder to put it in."""
    roots = model_roots()
    for root in roots:
        path = (root / SUBFOLDERS[kind] if kind else root) / name
        if path.is_dir() if folder else path.is_file():
            return path
    where = " or ".join(str(r / SUBFOLDERS[kind] if kind else r) for r in roots) or "models/triergon/"
    what = "folder" if folder else "file"
    raise FileNotFoundError(f"Tri-Ergon model {what} {name!r} not found: put it in {where} (nothing is downloaded)")


def _files(roots: Iterable[Path], extensions: set[str]) -> list[str]:
    found = set()
    for root in roots:
        if root.is_dir():
            for path in root.rglob("*"):
                if path.suffix.lower() in extensions and path.is_file():
                    found.add(path.relative_to(root).as_posix())
    return sorted(found)


def input_directory() -> Path:
    fp = comfy("folder_paths")
    if fp is not None:
        return Path(fp.get_input_directory())
    return Path(os.environ.get("TRIERGON_INPUT_DIR", "input"))


def input_path(name: str) -> Path:
    """The path of an input file as ComfyUI names it (`clip.mp4`, `clip.mp4 [input]`, `sub/clip.mp4`)."""
    fp = comfy("folder_paths")
    if fp is not None:
        return Path(fp.get_annotated_filepath(name))
    return input_directory() / name


def temp_directory() -> Path:
    """Where intermediate media (muxed videos, frames encoded to a file) are written."""
    fp = comfy("folder_paths")
    base = Path(fp.get_temp_directory()) if fp is not None else Path(
        os.environ.get("TRIERGON_TEMP_DIR", Path(tempfile.gettempdir()) / "triergon-comfy"))
    path = base / "triergon"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- model management ----------------------------------------------------------------------------------------


class _Holder(nn.Module):
    """What the patcher manages: ComfyUI sets `.device` on it, which Hugging Face models refuse (a read-only
    property), so every module is held by this plain container."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module
        self.device = next(module.parameters()).device


class Managed:
    """A module under ComfyUI's model management (its model patcher, loaded with `load_models_gpu`, so it leaves
    the GPU when other models need the room and "unload models" frees it); without ComfyUI, the plain device."""

    def __init__(self, module: nn.Module, *, name: str) -> None:
        self.module, self.name = module, name
        self._patcher = None

    def patcher(self):
        if self._patcher is None:
            mm, mp = comfy("comfy.model_management"), comfy("comfy.model_patcher")
            cls = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
            # ComfyUI logs the holder's class name ("Requested to load DiT"): name it after the module's class.
            holder = type(type(self.module).__name__, (_Holder,), {})(self.module)
            self._patcher = cls(holder, load_device=mm.get_torch_device(),
                                offload_device=mm.unet_offload_device())
        return self._patcher

    def __repr__(self) -> str:
        return f"Managed({self.name})"


def plain_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(managed: Iterable[Managed]) -> torch.device:
    """Put `managed` modules on the compute device (through ComfyUI when it runs) and return that device."""
    managed = list(managed)
    mm = comfy("comfy.model_management")
    if mm is None or comfy("comfy.model_patcher") is None:
        device = plain_device()
        for m in managed:
            m.module.to(device)
        return device
    patchers = [m.patcher() for m in managed]
    mm.load_models_gpu(patchers)
    return patchers[0].load_device if patchers else mm.get_torch_device()


def offload_device() -> torch.device:
    mm = comfy("comfy.model_management")
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def auto_dtype(device: torch.device) -> torch.dtype:
    """The precision "auto" picks: ComfyUI's choice for diffusion models, else bf16 on CUDA when supported,
    float32 otherwise."""
    mm = comfy("comfy.model_management")
    if mm is not None:
        return mm.unet_dtype(device, supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# --- progress and Cancel -------------------------------------------------------------------------------------


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel (no-op without ComfyUI)."""
    mm = comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def progress(total: int) -> Callable[[int, int], None]:
    """A callback(done, total) that moves ComfyUI's progress bar of the running node and honours Cancel."""
    utils = comfy("comfy.utils")
    bar = utils.ProgressBar(total) if utils is not None else None

    def update(done: int, total: int) -> None:
        check_interrupted()
        if bar is not None:
            bar.update_absolute(done, total)

    return update
