"""Plots of LUFS curves: L and R loudness over time, optionally a measured curve over a target.

Rendering uses matplotlib's Agg canvas on a private `Figure` (no pyplot state), so it works headless and
from worker threads. The RGB array form feeds image outputs (e.g. a ComfyUI IMAGE).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from ._fs import atomic_write_path
from .checks import check_output_path

if TYPE_CHECKING:
    from .lufs_curve import LufsCurve

logger = logging.getLogger(__name__)

__all__ = ["PLOT_FORMATS", "plot_curves"]

# Extension -> matplotlib format. Raster formats are written from the returned array (the file is exactly that
# image); vector formats are drawn from the figure.
PLOT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}
_VECTOR = ("svg", "pdf")

# One colour per channel position (L blue, R red, as most meters); target and measured share it.
_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def plot_curves(curve: LufsCurve, *, overlay: LufsCurve | None = None, path: str | os.PathLike | None = None,
                title: str | None = None, labels: tuple[str, str] = ("target", "measured"),
                size: tuple[float, float] = (8.0, 3.5), dpi: int = 100) -> np.ndarray:
    """Draws each channel's loudness over time; returns the image as RGB uint8 [H, W, 3].

    The y axis is always [-70, 0] LUFS so that plots compare at a glance. Each frame's value is drawn as a
    step over the frame's 1 / rate seconds. With `overlay`, both curves share a colour per channel: the
    curve solid, the overlay dashed, and the legend says which is which.

    Args:
        curve: the curve (the target, when overlaid).
        overlay: a second curve drawn dashed over the first (e.g. the loudness measured on generated audio);
            its channels are matched to `curve`'s by name.
        path: also write the image there (atomically), in the format its extension names (`PLOT_FORMATS`: .png,
            .jpg/.jpeg, .svg, .pdf); checked before anything is drawn.
        title: the plot's title; None = a summary of the curve.
        labels: legend names of `curve` and `overlay` when overlaid.
        size: figure size in inches.
        dpi: pixels per inch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if path is not None:
        path = check_output_path(path, formats=PLOT_FORMATS, what="plot")

    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = [(curve, "-", None)] if overlay is None else [(curve, "-", labels[0]), (overlay, "--", labels[1])]
    names = dict.fromkeys(name for which, _, _ in drawn for name in which.channels)
    colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
    for which, style, label in drawn:
        values = which.values.numpy()
        times = np.append(which.times, which.duration)  # the last frame's step ends at the duration
        for name, row in zip(which.channels, values, strict=True):
            # clip_on=False keeps a line at exactly -70 or 0 LUFS visible on the frame of the axes.
            ax.plot(times, np.append(row, row[-1]), drawstyle="steps-post", linestyle=style, color=colours[name],
                    linewidth=1.6 if style == "-" else 1.3, clip_on=False,
                    label=name if label is None else f"{name} {label}")
    ax.set_xlim(0, max(curve.duration, overlay.duration if overlay is not None else 0.0))
    ax.set_ylim(-70, 0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("loudness (LUFS)")
    ax.grid(True, alpha=0.35)
    fig.legend(loc="outside right upper", fontsize="small")  # outside the axes: never hides the curves
    ax.set_title(title if title is not None else f"LUFS curve, {curve.duration:.2f} s at {curve.rate:g} frames/s")
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        from matplotlib.image import imsave

        fmt = PLOT_FORMATS[path.suffix.lower()]
        with atomic_write_path(path) as tmp:
            if fmt in _VECTOR:
                fig.savefig(tmp, format=fmt)
            else:
                imsave(tmp, image, format=fmt)
        logger.debug("wrote LUFS plot %s", path)
    return image
