"""Moving pictures for the report's sections: a measurement's heatmaps over the snapshots.

A measurement's report section (``Measurement.report_sections``) may carry ``films``:
heatmaps with one frame per snapshot that the page draws at the snapshot its slider
selects (see ``layerwatch/report.py`` for the page format). :func:`heatmap_film` codes
one: the values of every frame quantised to one byte over the film's range (255 marks a
missing value), base64; an optional ``strip`` (a line of labels, such as a sentence's
tokens, coloured by a value per frame) is coded the same way. Numpy only.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Sequence

import numpy as np

__all__ = ["LEVELS", "MISSING", "decode_values", "heatmap_film", "snapshot_entry"]

LEVELS = 254
"""Codes 0..254 span a film's range ``[lo, hi]``: ``v = lo + code * (hi - lo) / 254``."""
MISSING = 255


def snapshot_entry(key: Any) -> dict:
    """A frame's snapshot as the page matches it with the slider's: epoch, step and title."""
    epoch = float(key.epoch)
    return {"epoch": int(epoch) if epoch.is_integer() else epoch, "step": int(key.step), "title": str(key.title)}


def _range(values: np.ndarray, diverging: bool, fixed: Sequence[float] | None) -> tuple[float, float]:
    if fixed is not None:
        lo, hi = float(fixed[0]), float(fixed[1])
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if diverging:
            top = max(abs(lo), abs(hi))
            lo, hi = -top, top
    if not hi > lo:
        hi = lo + 1e-6 if lo != 0 else 1e-6
    return lo, hi


def _codes(values: np.ndarray, lo: float, hi: float) -> str:
    values = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(values)
    q = np.rint((np.where(missing, lo, values) - lo) / (hi - lo) * LEVELS).clip(0, LEVELS).astype(np.uint8)
    q[missing] = MISSING
    return base64.b64encode(np.ascontiguousarray(q).tobytes()).decode("ascii")


def decode_values(text: str, shape: Sequence[int], value_range: Sequence[float]) -> np.ndarray:
    """The values a coded ``values`` string shows (NaN where missing)."""
    q = np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(tuple(shape)).astype(np.float64)
    lo, hi = float(value_range[0]), float(value_range[1])
    out = lo + q * (hi - lo) / LEVELS
    out[q == MISSING] = np.nan
    return out


def heatmap_film(
    title: str,
    keys: Sequence[Any],
    frames: Sequence[np.ndarray],
    ylabels: Sequence[str],
    xlabels: Sequence[str],
    *,
    group: str = "",
    split: str | None = None,
    row: int | None = None,
    diverging: bool = False,
    value_range: Sequence[float] | None = None,
    strip: tuple[Sequence[str], Sequence[np.ndarray]] | None = None,
    unit: str = "",
) -> dict:
    """One heatmap film of a report section.

    Args:
        title: Shown above the heatmap.
        keys: The snapshot key of each frame, in training order.
        frames: Each frame's (len(ylabels), len(xlabels)) values (NaN: missing).
        ylabels, xlabels: Row and column names (layers, heads, tokens, ...).
        group: Films of one group are shown together; the section offers a picker when
            it has several groups.
        split: The split whose rows the film is about (its pinned row lights it up).
        row: The dataset row the film is about, or None.
        diverging: Colour around zero (blue below, red above) instead of a sequential scale.
        value_range: ``(lo, hi)`` of the colour scale (default: the film's finite values).
        strip: ``(labels, values per frame)``: a line of labels under the heatmap, each
            coloured by its value (a sentence's tokens by their attribution), on a
            diverging scale of its own.
        unit: What a value is, for the readout.
    """
    grid = np.stack([np.asarray(f, dtype=np.float64) for f in frames]) if len(frames) else np.zeros((0, len(ylabels), len(xlabels)))
    if len(keys) != len(grid):
        raise ValueError(f"heatmap_film: {len(keys)} keys but {len(grid)} frames; pass one key per frame")
    if grid.shape[1:] != (len(ylabels), len(xlabels)):
        raise ValueError(
            f"heatmap_film: frames of shape {grid.shape[1:]} but {len(ylabels)} ylabels x {len(xlabels)} xlabels"
        )
    lo, hi = _range(grid, diverging, value_range)
    film = {
        "title": str(title), "group": str(group), "split": split, "row": None if row is None else int(row),
        "snapshots": [snapshot_entry(k) for k in keys], "ylabels": [str(v) for v in ylabels],
        "xlabels": [str(v) for v in xlabels], "range": [_finite(lo), _finite(hi)], "diverging": bool(diverging),
        "values": _codes(grid, lo, hi), "unit": str(unit), "strip": None,
    }
    if strip is not None:
        labels, values = strip
        line = np.stack([np.asarray(v, dtype=np.float64) for v in values]) if len(values) else np.zeros((0, len(labels)))
        if line.shape != (len(grid), len(labels)):
            raise ValueError(f"heatmap_film: strip values of shape {line.shape}; expected ({len(grid)}, {len(labels)})")
        slo, shi = _range(line, True, None)
        film["strip"] = {"labels": [str(v) for v in labels], "range": [_finite(slo), _finite(shi)], "values": _codes(line, slo, shi)}
    return film


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0
