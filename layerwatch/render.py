"""Drawing: one frame (a grid of per-layer scatter panels) and the metric heatmaps.

Functions draw onto a ``matplotlib.figure.Figure`` they are given and return it. They
never touch pyplot's global state, so nothing leaks and no GUI backend is needed during
training.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

PANEL_INCHES = 3.0
MAX_COLUMNS = 4
ERROR_MARKER = "X"
# A legend longer than this would cover the panels: the largest classes are named, the
# others counted in one entry.
MAX_LEGEND = 20
# Longer class names are shortened in the middle in the legend; the legend takes at most
# this share of the frame's height before its font shrinks.
MAX_LEGEND_CHARS = 40
MAX_LEGEND_HEIGHT = 0.3


def class_name(c: int, label_names: Sequence[str] | None) -> str:
    """Legend text of class id ``c``."""
    return str(label_names[c]) if label_names is not None and 0 <= c < len(label_names) else str(int(c))


def plain(text: Any) -> Any:
    """Text artists that show user text (label and split names) as it is: ``$`` is no
    mathtext there."""
    text.set_parse_math(False)
    return text


def layer_name(index: int) -> str:
    return "embeddings" if int(index) == 0 else f"layer {int(index)}"


def grid_shape(n_panels: int) -> tuple[int, int]:
    cols = min(MAX_COLUMNS, max(1, math.ceil(math.sqrt(n_panels))))
    return math.ceil(n_panels / cols), cols


def new_frame_figure(n_panels: int, dpi: int = 80) -> Figure:
    """A figure sized for ``n_panels`` panels; same size for every frame of a film."""
    rows, cols = grid_shape(n_panels)
    return Figure(figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES + 1.1), dpi=dpi)


def point_style(n_points: int) -> tuple[float, float]:
    """Marker area and alpha that keep 100 to 10,000 points readable."""
    size = float(np.clip(3000.0 / max(n_points, 1), 2.0, 30.0))
    alpha = float(np.clip(1.2 - 0.2 * math.log10(max(n_points, 10)), 0.35, 0.9))
    return size, alpha


def class_colors(n_classes: int) -> list:
    import seaborn as sns

    return sns.color_palette("tab10" if n_classes <= 10 else "husl", n_classes)


def limits_of(layout: np.ndarray, margin: float = 0.08) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits that hold every finite point of ``layout`` with a margin."""
    pts = layout[np.isfinite(layout).all(axis=1)]
    if len(pts) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def draw_frame(
    fig: Figure,
    layouts: np.ndarray,
    labels: np.ndarray,
    layers: Sequence[int],
    label_names: Sequence[str] | None = None,
    title: str = "",
    limits: Sequence | None = None,
    errors: np.ndarray | None = None,
    notes: Sequence[str] | None = None,
    regression: bool = False,
) -> Figure:
    """Draw one scatter panel per layer onto ``fig`` and return it.

    Args:
        fig: The figure to draw on (cleared first).
        layouts: (layers, rows, 2) positions.
        labels: (rows,) class ids (or float targets when ``regression``).
        layers: hidden-state index of each panel, for its title.
        label_names: legend text per class id; defaults to the ids.
        title: figure title (split and epoch).
        limits: per panel ``((x0, x1), (y0, y1))``, fixed across a film; default: the data's.
        errors: (rows,) bool, rows the model misclassifies, drawn with a distinct marker.
        notes: per panel text added to its title (for example its kNN accuracy).
        regression: colour by a colormap with a colour bar instead of a legend.
    """
    fig.clear()
    n = layouts.shape[0]
    rows, cols = grid_shape(n)
    size, alpha = point_style(layouts.shape[1])
    labels = np.asarray(labels)
    classes = np.unique(labels) if not regression else np.array([])
    n_colors = int(max(classes.max() + 1, len(label_names or []))) if len(classes) else 0
    colors = class_colors(max(n_colors, 1))
    err = np.asarray(errors, dtype=bool) if errors is not None else None
    mappable = None
    bottom_in = 0.0
    for j in range(n):
        ax = fig.add_subplot(rows, cols, j + 1)
        xy = layouts[j]
        if regression:
            ok = ~err if err is not None else slice(None)
            mappable = ax.scatter(xy[ok, 0], xy[ok, 1], c=labels[ok], cmap="viridis", s=size, alpha=alpha, linewidths=0)
        else:
            for c in classes:
                sel = labels == c
                if err is not None:
                    sel = sel & ~err
                ax.scatter(xy[sel, 0], xy[sel, 1], color=colors[int(c)], s=size, alpha=alpha, linewidths=0, label=class_name(int(c), label_names))
        if err is not None and err.any():
            face = [colors[int(c)] for c in labels[err]] if not regression else "none"
            ax.scatter(
                xy[err, 0], xy[err, 1], c=face, marker=ERROR_MARKER, s=size * 2.5, alpha=min(1.0, alpha + 0.2),
                edgecolors="black", linewidths=0.5, label="misclassified",
            )
        head = layer_name(layers[j])
        if notes is not None and notes[j]:
            head = f"{head}\n{notes[j]}"
        if not np.isfinite(xy).all():
            ax.text(0.5, 0.5, "not finite", ha="center", va="center", transform=ax.transAxes, color="red")
        ax.set_title(head, fontsize=9, parse_math=False)
        if limits is not None:
            ax.set_xlim(*limits[j][0])
            ax.set_ylim(*limits[j][1])
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=12, parse_math=False)
    if regression and mappable is not None:
        fig.colorbar(mappable, ax=fig.axes, shrink=0.6, label="target")
    elif len(classes):
        shown = legend_classes(labels, n_colors)
        handles = [Line2D([], [], linestyle="", marker="o", color=colors[c], label=class_name(c, label_names)) for c in shown]
        if len(shown) < n_colors:
            handles.append(Line2D([], [], linestyle="", label=f"+ {n_colors - len(shown)} more classes"))
        if err is not None:
            handles.append(Line2D([], [], linestyle="", marker=ERROR_MARKER, color="grey", markeredgecolor="black", label="misclassified"))
        for h in handles:
            h.set_label(_short(h.get_label()))
        bottom_in = place_legend(fig, handles) + 0.15
    fig.subplots_adjust(left=0.03, right=0.97, top=1 - 0.8 / fig.get_figheight(), bottom=max(0.45, bottom_in) / fig.get_figheight(),
                        hspace=0.3, wspace=0.08)
    return fig


def _short(name: str, limit: int = MAX_LEGEND_CHARS) -> str:
    """``name``, or its start and end around an ellipsis when longer than ``limit`` (names
    that differ at the end, "... number 1" and "... number 2", stay apart)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "\u2026" + name[len(name) - (limit - 1 - head):]


def _renderer(fig: Figure):
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):  # a bare Figure: measure text as the saved PNG will
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    return canvas.get_renderer()


def place_legend(fig: Figure, handles: Sequence[Any]) -> float:
    """The figure's legend, under the panels and inside the figure, never over a panel.

    As many columns as the figure's width holds (measured, not guessed), in the largest
    font of 9, 8 or 7 points whose legend takes at most :data:`MAX_LEGEND_HEIGHT` of the
    figure; the caller moves the panels up by the height returned.

    Returns:
        The legend's height in inches.
    """
    renderer = _renderer(fig)
    width, height = fig.bbox.width, fig.bbox.height
    legend = None
    for size in (9, 8, 7):
        for ncol in range(min(len(handles), 10), 0, -1):
            if legend is not None:
                legend.remove()
            legend = fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                                frameon=False, fontsize=size, borderaxespad=0.2)
            for text in legend.get_texts():
                plain(text)
            box = legend.get_window_extent(renderer)
            if box.width <= 0.98 * width:
                break
        if box.height <= MAX_LEGEND_HEIGHT * height:
            break
    return float(box.height / fig.dpi)


def legend_classes(labels: np.ndarray, n_classes: int, limit: int = MAX_LEGEND) -> list[int]:
    """Class ids named in the legend: all of them, or the ``limit - 1`` largest (by rows
    shown) when there are more than ``limit``, in id order."""
    if n_classes <= limit:
        return list(range(n_classes))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    top = np.argsort(-counts, kind="stable")[: limit - 1]
    return sorted(int(c) for c in top)


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (fixed size: no tight bounding box, so frames line up)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def draw_heatmap(
    fig: Figure,
    tables: dict[str, np.ndarray],
    layers: Sequence[int],
    columns: Sequence[str],
    metric: str,
    xlabel: str = "snapshot",
) -> Figure:
    """One heatmap panel per split: layers (rows) x snapshots (columns) of ``metric``."""
    import seaborn as sns

    fig.clear()
    names = list(tables)
    finite = [t[np.isfinite(t)] for t in tables.values()]
    values = np.concatenate(finite) if finite else np.array([])
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    for i, split in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        sns.heatmap(
            tables[split], ax=ax, vmin=vmin, vmax=vmax, cmap="viridis", annot=len(columns) <= 12 and len(layers) <= 13,
            fmt=".2f", annot_kws={"fontsize": 7}, cbar=i == len(names) - 1,
            xticklabels=list(columns), yticklabels=[layer_name(l) for l in layers],
        )
        ax.set_title(split, parse_math=False)
        ax.set_xlabel(xlabel)
        if i:
            ax.set_yticklabels([])
    fig.suptitle(metric.replace("_", " "))
    return fig
