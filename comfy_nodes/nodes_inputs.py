"""Nodes that bring things in: Load Tri-Ergon Model and Load Video."""

from __future__ import annotations

import os

from ..triergon_core.demo import DemoFiles
from ..triergon_core.video import probe_video
from . import host
from .loading import DEFAULT_CHECKPOINT, NONE, PRECISIONS, PRESET_CHOICES, SHIPPED, TINY_RANDOM, load_model
from .media import file_audio
from .video_type import video_from_file

CATEGORY = "Tri-Ergon"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


def file_signature(path: os.PathLike | str) -> str:
    """Changes when the file is replaced or edited (modification time and size), for IS_CHANGED."""
    try:
        st = os.stat(path)
    except OSError:
        return f"missing:{path}"
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"


class TriErgonModelLoader:
    DESCRIPTION = ("Loads the demo model shipped with the pack or a Tri-Ergon checkpoint from models/triergon/ (or "
                   "builds a preset with random weights), with optional LanguageBind towers, DINOv2 and T_LUFS "
                   "weights. Nothing is downloaded. cfg and steps are the sampling settings the checkpoint recommends "
                   "(the paper's 7 and 100 when it names none; the demo model's CFG is 3): connect them to Sample.")

    @classmethod
    def INPUT_TYPES(cls):
        host.register_model_folder()
        checkpoints = [SHIPPED, *PRESET_CHOICES, *host.checkpoint_files()]
        return {
            "required": {
                "checkpoint": (checkpoints, {"default": DEFAULT_CHECKPOINT, "tooltip": "The demo model shipped with "
                               "the pack (trained on SynthFoley; with its own encoders), a checkpoint in "
                               "models/triergon/, or a preset with random weights (noise-like sound, for trying "
                               "graphs)"}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto: ComfyUI's choice for the "
                              "device (the VAE stays float32)"}),
            },
            "optional": {
                "languagebind": ([NONE, SHIPPED, *host.model_subfolders("languagebind")], {"default": NONE,
                                 "tooltip": "A folder in models/triergon/languagebind/ holding video/ and audio/ "
                                 "towers, or the demo's; none: the model's own (the demo's, the tiny preset's) or no "
                                 "text/audio/video conditions"}),
                "dinov2": ([NONE, SHIPPED, TINY_RANDOM, *host.model_subfolders("dinov2")], {"default": SHIPPED,
                           "tooltip": "A DINOv2 folder in models/triergon/dinov2/, or the demo's, for Predict LUFS"}),
                "lufs_predictor": ([NONE, SHIPPED, TINY_RANDOM, *host.predictor_files()], {"default": SHIPPED,
                                   "tooltip": "T_LUFS weights in models/triergon/lufs_predictor/, or the demo's "
                                   "(on the demo's DINOv2), for Predict LUFS"}),
            },
        }

    RETURN_TYPES = ("TRIERGON_MODEL", "FLOAT", "INT")
    RETURN_NAMES = ("model", "cfg", "steps")
    OUTPUT_TOOLTIPS = ("The model", "The CFG scale the checkpoint recommends (the paper's 7 when it names none)",
                       "The sampling steps the checkpoint recommends (the paper's 100 when it names none)")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, checkpoint, precision="auto", languagebind=NONE, dinov2=NONE, lufs_predictor=NONE):
        model = load_model(checkpoint, precision, languagebind, dinov2, lufs_predictor)
        recommended = model.model.sampling
        return model, float(recommended.cfg_scale), int(recommended.steps)

    @classmethod
    def IS_CHANGED(cls, checkpoint, precision="auto", languagebind=NONE, dinov2=NONE, lufs_predictor=NONE):
        files = [] if checkpoint.startswith("preset: ") else [(checkpoint, None)]
        if lufs_predictor not in (NONE, TINY_RANDOM):
            files.append((lufs_predictor, "lufs_predictor"))
        shipped = {None: DemoFiles().model, "lufs_predictor": DemoFiles().predictor}
        signatures = []
        for name, kind in files:
            try:
                signatures.append(file_signature(shipped[kind] if name == SHIPPED else host.find_model(name, kind)))
            except FileNotFoundError:  # the loader itself reports it, with the folder to use
                signatures.append(f"missing:{name}")
        return "|".join([*signatures, precision, languagebind, dinov2])


class TriErgonLoadVideo:
    DESCRIPTION = ("Loads a video from ComfyUI's input folder as a core VIDEO (frames are read later, by "
                   "timestamps, at the sizes each model needs), with its audio (None when silent), frame rate "
                   "and duration.")

    @classmethod
    def INPUT_TYPES(cls):
        folder = host.input_directory()
        files = sorted(f.name for f in folder.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS) \
            if folder.is_dir() else []
        return {"required": {"video": (files, {"video_upload": True, "tooltip": "A video in ComfyUI's input "
                                                                               "folder"})}}

    RETURN_TYPES = ("VIDEO", "AUDIO", "FLOAT", "FLOAT")
    RETURN_NAMES = ("video", "audio", "fps", "duration")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, video):
        path = host.input_path(video)
        info = probe_video(path)
        return video_from_file(path), file_audio(path), float(info.fps), float(info.duration)

    @classmethod
    def IS_CHANGED(cls, video):
        return file_signature(host.input_path(video))

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        if not host.input_path(video).is_file():
            return f"video file not found in the input folder: {video!r}; upload it or pick another"
        return True
