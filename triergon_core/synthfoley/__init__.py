"""SynthFoley: procedural videos whose sounds are caused by what is drawn (the demo's data and benchmark)."""

from .clip import SCENE_KINDS, SynthClip, clip_seed, render_clip

__all__ = ["SCENE_KINDS", "SynthClip", "clip_seed", "render_clip"]
