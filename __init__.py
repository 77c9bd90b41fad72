"""Tri-Ergon: video-to-audio generation with multi-modal conditions and per-channel LUFS control.

This folder is both the `triergon` Python package and a ComfyUI custom-node pack (ComfyUI imports this file
and reads `NODE_CLASS_MAPPINGS`). Importing it loads neither ComfyUI nor Triton.
"""

from .comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .triergon_core.audio import AudioError, load_audio, write_audio
from .triergon_core.cache import EmbeddingCache
from .triergon_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .triergon_core.conditioning import Conditions
from .triergon_core.config import ConditioningConfig, DiTConfig, ModelConfig, SequenceConfig, VAEConfig
from .triergon_core.generate import generate, prepare_conditions
from .triergon_core.languagebind import load_languagebind
from .triergon_core.lufs_curve import LufsCurve
from .triergon_core.model import TriErgon, build_model, parameter_counts
from .triergon_core.mux import mux_audio
from .triergon_core.presets import PRESETS, get_preset
from .triergon_core.video import VideoError, probe_video, read_frames

__version__ = "0.1.0"

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "PRESETS",
    "AudioError",
    "CheckpointError",
    "ConditioningConfig",
    "Conditions",
    "DiTConfig",
    "EmbeddingCache",
    "LufsCurve",
    "ModelConfig",
    "SequenceConfig",
    "TriErgon",
    "VAEConfig",
    "VideoError",
    "build_model",
    "generate",
    "get_preset",
    "load_audio",
    "load_checkpoint",
    "load_languagebind",
    "mux_audio",
    "parameter_counts",
    "prepare_conditions",
    "probe_video",
    "read_frames",
    "save_checkpoint",
    "write_audio",
]
