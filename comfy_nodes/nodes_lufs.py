"""Loudness-curve nodes: Predict LUFS, Measure LUFS, Edit LUFS Curve, Plot LUFS Curve."""

from __future__ import annotations

import torch

from ..triergon_core.lufs_curve import LufsCurve
from ..triergon_core.lufs_edit_text import apply_edits, parse_edits, widget_edits
from ..triergon_core.lufs_plot import plot_curves
from ..triergon_core.lufs_predictor import predict_lufs
from ..triergon_core.video import MAX_FPS
from .media import audio_stereo, resolve_video

CATEGORY = "Tri-Ergon"
FPS = ("FLOAT", {"default": 0.0, "min": 0.0, "max": MAX_FPS, "step": 0.001, "tooltip": "Frame rate of the IMAGE "
                 "frames (e.g. VideoHelperSuite's loaded_fps); needed with images"})
TAKE = ("INT", {"default": 0, "min": 0, "max": 63, "tooltip": "Which take of a batch of audio to use"})
SPAN = {"min": 0.0, "max": 3600.0, "step": 0.01}


def check_fps(fps) -> str | bool:
    """VALIDATE_INPUTS' check of an fps widget (a linked fps arrives only at run time)."""
    if fps is not None and not (0 <= float(fps) <= MAX_FPS):
        return f"fps must be positive (0 = not given with images), got {fps}"
    return True


class TriErgonPredictLUFS:
    DESCRIPTION = ("Predicts the left/right loudness curve of a video with T_LUFS over DINOv2 features of frames "
                   "sampled at 6 per second by timestamps.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("TRIERGON_MODEL",)},
                "optional": {"video": ("VIDEO",), "images": ("IMAGE",), "fps": FPS}}

    RETURN_TYPES = ("LUFS_CURVE",)
    RETURN_NAMES = ("curve",)
    FUNCTION = "predict"
    CATEGORY = CATEGORY

    def predict(self, model, video=None, images=None, fps=0.0):
        if model.dinov2 is None or model.predictor is None:
            raise ValueError("Predict LUFS needs DINOv2 and T_LUFS weights: choose them in Load Tri-Ergon Model "
                             "(folders in models/triergon/dinov2/, files in models/triergon/lufs_predictor/), or "
                             "measure a curve from audio with Measure LUFS")
        source = resolve_video(video, images, fps)
        if source is None:
            raise ValueError("connect a video (VIDEO, or IMAGE frames with their fps) to predict its loudness")
        model.use("lufs")
        return (predict_lufs(source.as_file(), features=model.dinov2, predictor=model.predictor),)

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None):
        return check_fps(fps)


class TriErgonMeasureLUFS:
    DESCRIPTION = "Measures the momentary left/right loudness (BS.1770, 6 values per second) of an AUDIO."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("AUDIO",)}, "optional": {"take": TAKE}}

    RETURN_TYPES = ("LUFS_CURVE",)
    RETURN_NAMES = ("curve",)
    FUNCTION = "measure"
    CATEGORY = CATEGORY

    def measure(self, audio, take=0):
        return (LufsCurve.measure(audio_stereo(audio, take=take)),)


class TriErgonEditLUFSCurve:
    DESCRIPTION = ("Edits a loudness curve: the widgets (offset, pan over start..end, smoothing, fades), then the "
                   "lines of the edits text in order, e.g. `offset -6 start=2 end=4 channels=L`.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "curve": ("LUFS_CURVE",),
                "offset_db": ("FLOAT", {"default": 0.0, "min": -70.0, "max": 70.0, "step": 0.5,
                                        "tooltip": "dB added over start..end (negative: quieter)"}),
                "start": ("FLOAT", {"default": 0.0, **SPAN, "tooltip": "Start of the edited range, seconds"}),
                "end": ("FLOAT", {"default": 0.0, **SPAN, "tooltip": "End of the edited range; 0 = the end"}),
                "channels": (["both", "L", "R"], {"default": "both"}),
                "pan": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                  "tooltip": "-1 all left .. 1 all right, over start..end"}),
                "smooth": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.05,
                                     "tooltip": "Moving-average window, seconds"}),
                "fade_in": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.05}),
                "fade_out": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.05}),
                "edits": ("STRING", {"default": "", "multiline": True, "tooltip": "One edit per line, after the "
                                     "widgets: offset DB, set_level LUFS, pan AMOUNT, fade_in S, fade_out S, smooth "
                                     "S, swap, copy L R, clamp LO HI, resample S; options start= end= channels="}),
            },
        }

    RETURN_TYPES = ("LUFS_CURVE",)
    RETURN_NAMES = ("curve",)
    FUNCTION = "edit"
    CATEGORY = CATEGORY

    def edit(self, curve, offset_db=0.0, start=0.0, end=0.0, channels="both", pan=0.0, smooth=0.0, fade_in=0.0,
             fade_out=0.0, edits=""):
        steps = widget_edits(offset_db=offset_db, start=start, end=end, channels=channels, pan=pan, smooth=smooth,
                             fade_in=fade_in, fade_out=fade_out)
        return (apply_edits(curve, steps + parse_edits(edits)),)

    @classmethod
    def VALIDATE_INPUTS(cls, edits=""):
        try:
            parse_edits(edits or "")
        except ValueError as e:
            return str(e)
        return True


class TriErgonPlotLUFS:
    DESCRIPTION = "Draws a loudness curve, optionally with a second one dashed over it (target vs measured)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"curve": ("LUFS_CURVE",)},
                "optional": {"overlay": ("LUFS_CURVE",), "title": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "plot"
    CATEGORY = CATEGORY

    def plot(self, curve, overlay=None, title=""):
        image = plot_curves(curve, overlay=overlay, title=title or None)
        return (torch.from_numpy(image).float().div(255.0)[None],)
