"""A frame of the embeddings' film: its data, the notes under its panels, its axis limits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...film import Frame


@dataclass
class FrameData:
    """What one frame draws: a layout per layer, the rows' labels, the wrong ones, notes."""

    layout: np.ndarray
    labels: np.ndarray
    layers: np.ndarray
    errors: np.ndarray | None
    notes: list[str]


def panel_notes(knn: np.ndarray | None, n_layers: int, degenerate: set[int] = frozenset()) -> list[str]:
    """The text under each panel's title: its kNN accuracy, or why it shows one point."""
    notes = []
    for j in range(n_layers):
        if j in degenerate:
            notes.append("all vectors identical")
        elif knn is not None and np.isfinite(knn[j]):
            notes.append(f"kNN acc {knn[j]:.2f}")
        else:
            notes.append("")
    return notes


def panel_limits(frame: Frame) -> list:
    """Each panel's axis limits (the film keeps the widest seen); matplotlib loads when drawing."""
    from ...render import limits_of

    return [limits_of(frame.data.layout[j]) for j in range(len(frame.data.layout))]
