"""Frames to a looping GIF with a fixed frame order and duration."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def read_png(path: str) -> np.ndarray:
    """A PNG file as an RGB array."""
    import imageio.v3 as iio

    img = iio.imread(path)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def _same_size(frames: list[np.ndarray]) -> list[np.ndarray]:
    # Frames of one run share a size; pad with white if a user mixed runs or dpis.
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    out = []
    for f in frames:
        if f.shape[:2] != (h, w):
            canvas = np.full((h, w, 3), 255, dtype=f.dtype)
            canvas[: f.shape[0], : f.shape[1]] = f
            f = canvas
        out.append(f)
    return out


def gif_bytes(frames: Sequence[np.ndarray], duration: float = 1.0) -> bytes:
    """Encode RGB frames as a GIF that loops forever, ``duration`` seconds per frame."""
    import imageio.v3 as iio

    frames = _same_size([np.asarray(f, dtype=np.uint8) for f in frames])
    return iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=int(round(duration * 1000)), loop=0)


