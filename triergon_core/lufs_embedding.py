"""Inverting E_L: from the LUFS conditioning tokens back to the normalised curve they were built from."""

from __future__ import annotations

import torch
import torch.nn.functional as F

INVERSION_METHODS = ("lstsq", "interpolate")


def invert_lufs_embedding(embedding: torch.Tensor, *, frames: int, max_frames: int, tokens: int, dim: int,
                          method: str = "lstsq") -> torch.Tensor:
    """E_L [2 * tokens, dim] -> the normalised curve [2, frames] in [0, 1] (the inverse of `lufs_embedding`).

    Args:
        embedding: [2 * tokens, dim], left tokens first.
        frames: frames of the curve that was embedded.
        max_frames, tokens, dim: as given to `lufs_embedding`.
        method: "lstsq" solves the interpolation's linear system: exact up to float error when
            tokens * dim >= max_frames. "interpolate" interpolates back to `max_frames`: exact on straight
            stretches, but it cuts corners (up to 14 dB on a random 360-frame curve into 768 values).
    """
    emb = torch.as_tensor(embedding, dtype=torch.float32).detach().cpu()
    if emb.shape != (2 * tokens, dim):
        raise ValueError(f"embedding shape {tuple(emb.shape)} is not (2 * tokens, dim) = {(2 * tokens, dim)}")
    if not 1 <= frames <= max_frames:
        raise ValueError(f"frames must be in [1, max_frames={max_frames}], got {frames}")
    flat = emb.reshape(2, tokens * dim)
    if method == "interpolate":
        norm = F.interpolate(flat[None], size=max_frames, mode="linear", align_corners=True)[0, :, :frames]
    elif method == "lstsq":
        # Row j of `basis` embeds a unit impulse at frame j; the padding frames are known zeros.
        eye = torch.eye(max_frames, dtype=torch.float64)[None]
        basis = F.interpolate(eye, size=tokens * dim, mode="linear", align_corners=True)[0, :frames]
        norm = torch.linalg.lstsq(basis.T, flat.T.double()).solution.T.float()
    else:
        raise ValueError(f"unknown method {method!r}; use one of {INVERSION_METHODS}")
    # Float error can leave a value a hair outside [0, 1]: not worth the curve constructor's warning.
    return norm.clamp(0, 1)
