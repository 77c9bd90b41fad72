"""--steps, --cfg-scale and --sampler of the commands that generate: the checkpoint's recommendation by default."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .checkpoint import checkpoint_sampling_of
from .sampling import PAPER_SAMPLING, SAMPLERS, SamplingSettings

logger = logging.getLogger("triergon")


def add_sampling_arguments(parser: argparse.ArgumentParser, *, sampler: bool = True) -> None:
    """Add --steps, --cfg-scale (and --sampler); each left out is the checkpoint's recommendation, else the
    paper's."""
    default = "the checkpoint's recommended setting, else the paper's"
    parser.add_argument("--steps", type=int, help=f"sampling steps (default: {default}, {PAPER_SAMPLING.steps})")
    parser.add_argument("--cfg-scale", type=float, help=f"classifier-free guidance scale (default: {default}, "
                        f"{PAPER_SAMPLING.cfg_scale:g}; the demo model recommends 3)")
    if sampler:
        parser.add_argument("--sampler", choices=list(SAMPLERS), help=f"sampler (default: {default}, "
                            f"{PAPER_SAMPLING.sampler})")


def sampling_from_args(args: argparse.Namespace, checkpoint: str | None = None) -> SamplingSettings:
    """The settings a command samples with: --steps / --cfg-scale / --sampler where given, the rest what
    `checkpoint` recommends (its header is read, no weights are loaded), else the paper's. Checked; logged when
    the checkpoint recommends other settings than the paper's."""
    recommended = checkpoint_sampling_of(checkpoint) if checkpoint else PAPER_SAMPLING
    settings = recommended.override(steps=args.steps, cfg_scale=args.cfg_scale,
                                    sampler=getattr(args, "sampler", None))
    if recommended != PAPER_SAMPLING:
        differ = [text for text, own, paper in (
            (f"{recommended.steps} steps", recommended.steps, PAPER_SAMPLING.steps),
            (f"CFG {recommended.cfg_scale:g}", recommended.cfg_scale, PAPER_SAMPLING.cfg_scale),
            (recommended.sampler, recommended.sampler, PAPER_SAMPLING.sampler)) if own != paper]
        logger.info("sampling: %d steps, CFG %g, %s (%s recommends %s)", settings.steps, settings.cfg_scale,
                    settings.sampler, Path(checkpoint).name, ", ".join(differ))
    return settings
