"""Tri-Ergon core library: configs, presets, models, audio I/O, checkpoints and generation."""
