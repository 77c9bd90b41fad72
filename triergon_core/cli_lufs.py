"""`triergon lufs ...`: measure, edit, plot and predict loudness curves (the predict -> edit -> generate flow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checks import check_device, check_output_path
from .lufs_curve import LufsCurve, plot_curves
from .lufs_plot import PLOT_FORMATS

CURVE_FORMATS = (".json", ".csv")  # what LufsCurve.save writes


def _check_outputs(args: argparse.Namespace, *, curve_output: bool = True) -> None:
    """Check -o (a curve, or for `lufs plot` an image) and --plot before any work."""
    if getattr(args, "output", None):
        check_output_path(args.output, formats=CURVE_FORMATS if curve_output else PLOT_FORMATS, what="-o")
    if getattr(args, "plot", None):
        check_output_path(args.plot, formats=PLOT_FORMATS, what="--plot")


def _write_curve(curve: LufsCurve, args: argparse.Namespace) -> None:
    """Save to -o (format by extension), print JSON/CSV to stdout when asked, plot when asked."""
    if getattr(args, "output", None):
        curve.save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    if getattr(args, "csv", False):
        sys.stdout.write(curve.to_csv())
    elif getattr(args, "json", False) or not getattr(args, "output", None):
        print(curve.to_json())
    if getattr(args, "plot", None):
        plot_curves(curve, path=args.plot, title=getattr(args, "title", None))
        print(f"wrote {args.plot}", file=sys.stderr)


def _measure(args: argparse.Namespace) -> int:
    from .audio import load_audio

    _check_outputs(args)
    curve = LufsCurve.measure(load_audio(args.audio))
    args.title = args.title or f"momentary loudness of {Path(args.audio).name}"
    _write_curve(curve, args)
    return 0


# The `lufs edit` operations that take the --start/--end range; the last three work across both channels,
# so --channels cannot narrow them.
_RANGED = ("offset", "set_level", "smooth", "fade_in", "fade_out", "pan", "swap", "copy")
_BOTH_CHANNELS = ("pan", "swap", "copy")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_edit(args: argparse.Namespace) -> None:
    """Refuses the combinations whose meaning is unclear, before reading anything."""
    given = [name for name in _RANGED if getattr(args, name) not in (None, False)]
    if (args.start is not None or args.end is not None or args.channels) and not given:
        raise ValueError(f"--start, --end and --channels select what {', '.join(map(_option, _RANGED))} change; "
                         "give one of them (--resample always works on the whole curve)")
    if args.channels and (across := [_option(n) for n in given if n in _BOTH_CHANNELS]):
        raise ValueError(f"--channels cannot narrow {', '.join(across)}: they work on both channels; run "
                         "them in a separate `triergon lufs edit` without --channels")
    if args.copy and (len(args.copy.split(":")) != 2 or not all(args.copy.split(":"))):
        raise ValueError(f"--copy takes SRC:DST, e.g. L:R, got {args.copy!r}")


def _edit(args: argparse.Namespace) -> int:
    _check_edit(args)
    _check_outputs(args)
    curve = LufsCurve.load(args.curve)
    span = {"start": args.start, "end": args.end}
    selection = {**span, "channels": args.channels}
    # applied in this fixed order, whatever the order on the command line
    if args.resample is not None:
        curve = curve.resample(args.resample)
    if args.offset is not None:
        curve = curve.offset(args.offset, **selection)
    if args.set_level is not None:
        curve = curve.set_level(args.set_level, **selection)
    if args.pan is not None:
        curve = curve.pan(args.pan, **span)
    if args.swap:
        curve = curve.swap_channels(**span)
    if args.copy:
        src, dst = args.copy.split(":")
        curve = curve.copy_channel(src, dst, **span)
    if args.smooth is not None:
        curve = curve.smooth(args.smooth, **selection)
    if args.fade_in is not None:
        curve = curve.fade_in(args.fade_in, **selection)
    if args.fade_out is not None:
        curve = curve.fade_out(args.fade_out, **selection)
    _write_curve(curve, args)
    return 0


def _plot(args: argparse.Namespace) -> int:
    _check_outputs(args, curve_output=False)
    curve = LufsCurve.load(args.curve)
    overlay = LufsCurve.load(args.overlay) if args.overlay else None
    plot_curves(curve, overlay=overlay, path=args.output, title=args.title or Path(args.curve).name)
    print(f"wrote {args.output}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .lufs_predictor import load_dinov2, load_predictor, predict_lufs

    _check_outputs(args)
    device = check_device(args.device)
    features = load_dinov2(args.dinov2, device=device)
    predictor = load_predictor(args.weights, device=device)
    curve = predict_lufs(args.video, features=features, predictor=predictor)
    args.title = args.title or f"predicted loudness of {Path(args.video).name}"
    _write_curve(curve, args)
    return 0


def _add_output(p: argparse.ArgumentParser, *, formats: bool = True) -> None:
    p.add_argument("-o", "--output", help="write the curve to this .json or .csv file")
    if formats:
        fmt = p.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true", help="print the curve as JSON (default without -o)")
        fmt.add_argument("--csv", action="store_true", help="print the curve as CSV")
    p.add_argument("--plot", metavar="IMAGE", help="also plot the curve to this .png / .jpg / .svg / .pdf")
    p.add_argument("--title", help="plot title")


def add_lufs_parser(sub: argparse._SubParsersAction) -> None:
    lufs = sub.add_parser("lufs", help="loudness curves: measure, edit, plot, predict")
    cmds = lufs.add_subparsers(dest="lufs_command", required=True)

    measure = cmds.add_parser("measure", help="momentary L/R loudness of an audio file (6 values per second)")
    measure.add_argument("audio", help="audio file (any format ffmpeg reads; resampled to 44.1 kHz stereo)")
    _add_output(measure)
    measure.set_defaults(func=_measure)

    edit = cmds.add_parser("edit", help="edit a curve; operations apply in the order listed here")
    edit.add_argument("curve", help="input curve (.json or .csv)")
    edit.add_argument("--resample", type=float, metavar="SECONDS", help="stretch to a new duration")
    edit.add_argument("--offset", type=float, metavar="DB", help="add DB (negative: quieter) over --start/--end")
    edit.add_argument("--set-level", type=float, metavar="LUFS", help="set a level over --start/--end")
    edit.add_argument("--pan", type=float, metavar="AMOUNT", help="move loudness: -1 all left .. 1 all right")
    edit.add_argument("--swap", action="store_true", help="swap left and right")
    edit.add_argument("--copy", metavar="SRC:DST", help="copy one channel onto the other, e.g. L:R")
    edit.add_argument("--smooth", type=float, metavar="SECONDS", help="moving-average smoothing")
    edit.add_argument("--fade-in", type=float, metavar="SECONDS", help="fade in from silence at --start")
    edit.add_argument("--fade-out", type=float, metavar="SECONDS", help="fade out to silence at --end")
    edit.add_argument("--start", type=float, help="start of the range every operation but --resample edits, in "
                      "seconds (default: 0)")
    edit.add_argument("--end", type=float, help="end of that range in seconds (default: the end)")
    edit.add_argument("--channels", choices=("L", "R"), help="edit one channel only (default: both); not with "
                      "--pan, --swap, --copy")
    _add_output(edit)
    edit.set_defaults(func=_edit)

    plot = cmds.add_parser("plot", help="plot a curve (optionally against a second one) to an image")
    plot.add_argument("curve", help="curve (.json or .csv)")
    plot.add_argument("--overlay", metavar="CURVE", help="a second curve drawn dashed, e.g. the measured one")
    plot.add_argument("-o", "--output", required=True, help="output image: .png, .jpg, .svg or .pdf (by extension)")
    plot.add_argument("--title", help="plot title")
    plot.set_defaults(func=_plot)

    predict = cmds.add_parser("predict", help="predict the loudness curve of a video with T_LUFS")
    predict.add_argument("video", help="video file (any frame rate, up to 60 s)")
    predict.add_argument("--dinov2", required=True, metavar="DIR", help="local DINOv2 folder (Hugging Face format)")
    predict.add_argument("--weights", required=True, metavar="FILE", help="T_LUFS weights (.safetensors)")
    predict.add_argument("--device", default="cpu", help="torch device")
    _add_output(predict)
    predict.set_defaults(func=_predict)
