"""`triergon synth`: write a SynthFoley data set (videos with sound, manifest, fixed splits)."""

from __future__ import annotations

import argparse
import re


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 128x128")
    return int(match[1]), int(match[2])


def _synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .synthfoley.dataset import write_dataset
    from .video import exact_fps

    exact_fps(args.fps)  # a bad rate fails before any work
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be positive, got {args.seconds}")
    width, height = args.size
    with tqdm(total=args.clips, desc="synth", unit="clip", disable=args.quiet) as bar:
        manifest = write_dataset(args.output, clips=args.clips, seconds=args.seconds, fps=args.fps, width=width,
                                 height=height, seed=args.seed, max_scenes=args.max_scenes,
                                 audio_files=not args.no_audio_files, progress=lambda n: bar.update(n - bar.n))
    print(f"wrote {args.clips} clips and {manifest}")
    return 0


def add_synth_parser(sub) -> None:
    syn = sub.add_parser("synth", help="write a SynthFoley data set: procedural videos whose sounds follow "
                         "what is drawn")
    syn.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    syn.add_argument("--clips", type=int, default=100, help="number of clips (default 100); clip i is the same "
                     "for every count, and lands in test (i %% 10 == 0), validation (== 1) or train")
    syn.add_argument("--seconds", type=float, default=5.0, help="clip duration (default 5)")
    syn.add_argument("--fps", default="24", help="frame rate, e.g. 24, 25, 29.97 or 30000/1001 (default 24)")
    syn.add_argument("--size", type=_size, default=(128, 128), metavar="WxH", help="frame size (default 128x128)")
    syn.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    syn.add_argument("--max-scenes", type=int, default=2, help="most scenes sharing a clip (default 2)")
    syn.add_argument("--no-audio-files", action="store_true", help="no separate FLAC per clip (the MP4's AAC "
                     "track is then the only audio)")
    syn.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    syn.set_defaults(func=_synth)
