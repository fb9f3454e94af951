"""Drawing the data map (confidence against variability, coloured by correctness) onto a Figure."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ...render import figure_png
from .compute import REGIONS, RowMeasures

# The paper's three regions, written where they lie on the map.
_REGION_PLACES = {"easy-to-learn": (0.04, 0.93), "ambiguous": (0.6, 0.5), "hard-to-learn": (0.04, 0.07)}


def data_map_points(m: RowMeasures) -> dict[str, np.ndarray]:
    """What the data map plots: x = variability, y = confidence, colour = correctness."""
    return {"x": m.variability, "y": m.confidence, "color": m.correctness}


def draw_data_map(
    fig: Figure, m: RowMeasures, title: str, confidence_threshold: float, variability_threshold: float,
) -> Figure:
    """One data map on ``fig``; axes fixed (variability 0..0.5, confidence 0..1) so frames line up."""
    ax = fig.add_subplot()
    pts = data_map_points(m)
    sc = ax.scatter(pts["x"], pts["y"], c=pts["color"], cmap="RdYlGn", vmin=0.0, vmax=1.0, s=8, alpha=0.75, linewidths=0)
    fig.colorbar(sc, ax=ax, label="correctness")
    ax.axhline(confidence_threshold, color="0.6", lw=0.8, ls="--")
    ax.axvline(variability_threshold, color="0.6", lw=0.8, ls="--")
    counts = np.bincount(m.regions(confidence_threshold, variability_threshold), minlength=len(REGIONS))
    for name, count in zip(REGIONS, counts):
        x, y = _REGION_PLACES[name]
        ax.text(x, y, f"{name} ({count})", transform=ax.transAxes, fontsize=8, color="0.2",
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
    ax.set_xlim(0.0, 0.5)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("variability")
    ax.set_ylabel("confidence")
    ax.set_title(title, fontsize=9)
    return fig


def data_map_png(m: RowMeasures, title: str, settings: Any, dpi: int) -> bytes:
    fig = Figure(figsize=(5, 4), dpi=dpi)
    draw_data_map(fig, m, title, settings.confidence_threshold, settings.variability_threshold)
    return figure_png(fig)
