"""Pictures of attention statistics: a layers x heads heatmap per frame, and a summary.

Like :mod:`layerwatch.render`, every function draws onto a ``matplotlib.figure.Figure``
it is given (cleared first) and returns it; pyplot is never used. Text that may hold
user-chosen names is drawn with ``parse_math=False``, so a ``$`` stays a dollar sign.

Layers are shown as numbered by the caller (1..L for the transformer layers, matching
the embedding films); heads are numbered 1..H unless ``head_numbers`` says otherwise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .drift import PATTERNS

__all__ = ["PATTERN_ABBREVIATIONS", "draw_head_heatmap", "draw_head_summary", "head_figure"]

PATTERN_ABBREVIATIONS = {"positional": "P", "to-special": "S", "broad": "B", "mixed": "M"}

# Cells are annotated with their values up to this many (a 12 x 12 model still reads).
MAX_ANNOTATED_CELLS = 144
CELL_INCHES = 0.55


def head_figure(layers: int, heads: int, dpi: int = 80) -> Figure:
    """A figure sized for a layers x heads grid; the same size for every frame of a film."""
    width = max(4.0, heads * CELL_INCHES + 2.2)
    height = max(3.0, layers * CELL_INCHES + 1.6)
    return Figure(figsize=(width, height), dpi=dpi)


def _check_grid(name: str, values: np.ndarray, layer_numbers: Sequence[int], head_numbers) -> tuple:
    if values.ndim != 2:
        raise ValueError(f"{name} has shape {values.shape}; expected (layers, heads); pass one value per head")
    layers, heads = values.shape
    if len(layer_numbers) != layers:
        raise ValueError(
            f"layer_numbers has {len(layer_numbers)} entries for {layers} layers in {name}; pass one number per layer"
        )
    heads_shown = list(range(1, heads + 1)) if head_numbers is None else list(head_numbers)
    if len(heads_shown) != heads:
        raise ValueError(f"head_numbers has {len(heads_shown)} entries for {heads} heads; pass one per head")
    return layers, heads, heads_shown


def _grid_axes(fig: Figure, values: np.ndarray, layer_numbers, heads_shown, norm: Normalize, cmap: str):
    """A pcolormesh of ``values`` with layer 1 on top, ticks on cell centres."""
    fig.clear()
    ax = fig.add_subplot(1, 1, 1)
    layers, heads = values.shape
    mesh = ax.pcolormesh(
        np.arange(heads + 1), np.arange(layers + 1), np.ma.masked_invalid(values),
        cmap=cmap, norm=norm, edgecolors="white", linewidth=0.5,
    )
    ax.set_xlim(0, heads)
    ax.set_ylim(layers, 0)  # first layer at the top, as a model is read
    ax.set_xticks(np.arange(heads) + 0.5, labels=[str(h) for h in heads_shown])
    ax.set_yticks(np.arange(layers) + 0.5, labels=[str(n) for n in layer_numbers])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax, mesh


def _text_color(mesh, value: float) -> str:
    r, g, b, _ = mesh.cmap(mesh.norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def draw_head_heatmap(
    fig: Figure,
    values: np.ndarray,
    layer_numbers: Sequence[int],
    stat: str,
    title: str,
    vmin: float,
    vmax: float,
    head_numbers: Sequence[int] | None = None,
    cmap: str = "viridis",
    annotate: bool | None = None,
) -> Figure:
    """One frame of a statistic's film: a layers x heads heatmap.

    Args:
        fig: The figure to draw on (cleared first); :func:`head_figure` sizes one.
        values: (layers, heads) statistic of each head; NaN cells are left blank.
        layer_numbers: The number shown for each layer (1..L for transformer layers).
        stat: The statistic's name, for the colour bar.
        title: Figure title (for example the split and epoch).
        vmin: Lower end of the colour scale, fixed across the frames of a film.
        vmax: Upper end of the colour scale.
        head_numbers: The number shown for each head; defaults to 1..H.
        cmap: A matplotlib colour map name.
        annotate: Write each cell's value; by default when the grid has at most
            ``MAX_ANNOTATED_CELLS`` cells.

    Returns:
        ``fig``.
    """
    values = np.asarray(values, dtype=np.float64)
    layers, heads, heads_shown = _check_grid("values", values, layer_numbers, head_numbers)
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"vmin={vmin!r}, vmax={vmax!r}: expected finite numbers with vmin < vmax; pass the film's range")
    ax, mesh = _grid_axes(fig, values, layer_numbers, heads_shown, Normalize(vmin=vmin, vmax=vmax), cmap)
    if annotate is None:
        annotate = layers * heads <= MAX_ANNOTATED_CELLS
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j + 0.5, i + 0.5, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color=_text_color(mesh, v), parse_math=False)
    bar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label(stat, parse_math=False)
    ax.set_title(title, parse_math=False)
    return fig


def _abbreviation(start: str, end: str) -> str:
    a, b = PATTERN_ABBREVIATIONS[start], PATTERN_ABBREVIATIONS[end]
    return a if a == b else f"{a}\u2192{b}"


def draw_head_summary(
    fig: Figure,
    drift: np.ndarray,
    start_labels: np.ndarray,
    end_labels: np.ndarray,
    layer_numbers: Sequence[int],
    title: str,
    head_numbers: Sequence[int] | None = None,
    vmax: float | None = None,
) -> Figure:
    """How far each head moved over training, with its dominant pattern at both ends.

    Each cell's colour is the head's drift (Jensen-Shannon divergence of its maps between
    the first and the last snapshot, nats); its text is the pattern label abbreviated
    (P positional, S to-special, B broad, M mixed): one letter when the label stayed,
    ``start→end`` when it changed.

    Args:
        fig: The figure to draw on (cleared first).
        drift: (layers, heads) drift of each head, in ``[0, log 2]``.
        start_labels: (layers, heads) labels at the first snapshot (from ``pattern_labels``).
        end_labels: (layers, heads) labels at the last snapshot.
        layer_numbers: The number shown for each layer.
        title: Figure title.
        head_numbers: The number shown for each head; defaults to 1..H.
        vmax: Upper end of the colour scale; defaults to the largest drift.

    Returns:
        ``fig``.
    """
    drift = np.asarray(drift, dtype=np.float64)
    layers, heads, heads_shown = _check_grid("drift", drift, layer_numbers, head_numbers)
    labels = []
    for name, value in (("start_labels", start_labels), ("end_labels", end_labels)):
        value = np.asarray(value)
        if value.shape != drift.shape:
            raise ValueError(f"{name} has shape {value.shape}; expected {drift.shape} like drift; pass one label per head")
        unknown = sorted(set(value.ravel().tolist()) - set(PATTERNS))
        if unknown:
            raise ValueError(f"{name} holds {unknown}, not among {list(PATTERNS)}; pass labels from pattern_labels")
        labels.append(value)
    if vmax is None:
        finite = drift[np.isfinite(drift)]
        vmax = float(finite.max()) if finite.size else 0.0
    vmax = max(float(vmax), 1e-6)  # a run without any drift still gets a valid scale
    ax, mesh = _grid_axes(fig, drift, layer_numbers, heads_shown, Normalize(vmin=0.0, vmax=vmax), "magma_r")
    for (i, j), v in np.ndenumerate(drift):
        ax.text(j + 0.5, i + 0.5, _abbreviation(labels[0][i, j], labels[1][i, j]), ha="center", va="center",
                fontsize=7, color=_text_color(mesh, v if np.isfinite(v) else 0.0), parse_math=False)
    bar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label("drift (Jensen-Shannon, nats)", parse_math=False)
    ax.set_title(title, parse_math=False)
    fig.text(0.01, 0.01, "P positional, S to-special, B broad, M mixed; P\u2192B: positional at the start, broad at the end",
             fontsize=7, ha="left", va="bottom", parse_math=False)
    return fig

