"""Pictures of the attribution measurements: one conductance frame, the norm-share curves.

Both functions draw onto a ``matplotlib.figure.Figure`` they are given and return it;
they never touch pyplot, so nothing leaks and no GUI backend is needed during training.
Arrays in, pixels out: this module imports numpy and matplotlib only, so ``layerwatch
render`` can rebuild the pictures from stored arrays without torch.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["CONDUCTANCE_CMAP", "conductance_vmax", "draw_conductance", "draw_norm_shares", "sentence_layout"]

CONDUCTANCE_CMAP = "RdBu_r"
"""Diverging: red pushes the explained logit up, blue pulls it down, white is neutral."""
_CHAR_EM = 0.62  # advance of a DejaVu Sans Mono character, in ems (0.602, plus a little air)
_WEIGHT_STYLE = {"color": "#4c72b0", "linestyle": "-", "marker": "o"}
_NORM_STYLE = {"color": "#dd8452", "linestyle": "--", "marker": "s"}


def _layer_label(row: int) -> str:
    return "embeddings" if row == 0 else f"layer {row}"


def conductance_vmax(*arrays: np.ndarray) -> float:
    """The largest finite ``|value|`` over the arrays of a film: one colour scale for all frames.

    Returns:
        A positive float (1.0 when every value is zero or missing).
    """
    values = [np.abs(np.asarray(a, dtype=float)) for a in arrays]
    finite = [v[np.isfinite(v)] for v in values]
    top = max((float(v.max()) for v in finite if v.size), default=0.0)
    return top if top > 0 else 1.0


def _check_vmax(name: str, value: float | None, data: np.ndarray) -> float:
    if value is None:
        return conductance_vmax(data)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive number (conductance_vmax() of the film's arrays)")
    return float(value)


def sentence_layout(tokens: Sequence[str], width_points: float, fontsize: float) -> list[tuple[int, float]]:
    """Where each token of a coloured sentence goes: (line, x in points from the left).

    Widths come from the monospace advance, so no renderer is needed and every frame of a
    film lays its sentence out the same way.

    Args:
        tokens: the texts.
        width_points: the line width available.
        fontsize: in points.

    Returns:
        One (line index, x offset in points) per token.
    """
    out, line, x = [], 0, 0.0
    em = _CHAR_EM * fontsize
    for token in tokens:
        w = (len(token) + 1) * em
        if x > 0 and x + w > width_points:
            line, x = line + 1, 0.0
        out.append((line, x))
        x += w
    return out


def _text_color(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def draw_conductance(
    fig: Figure,
    conductance: np.ndarray,
    tokens: Sequence[str],
    token_attributions: np.ndarray,
    title: str = "",
    vmax: float | None = None,
    *,
    attribution_vmax: float | None = None,
) -> Figure:
    """A layers x tokens heatmap of conductance over the tokens as a coloured sentence.

    The heatmap's rows are the embedding output (bottom) and each transformer layer up to
    the last (top); its columns are the tokens, named below it. Under it, the token
    attributions colour the background of each token of the sentence. Both use a
    symmetric diverging scale, ``[-vmax, vmax]``: pass the same ``vmax`` to every frame
    of a film (:func:`conductance_vmax`) so that colours compare across epochs.

    Args:
        fig: the figure to draw on (cleared first).
        conductance: (layers + 1, tokens).
        tokens: one text per column (shown as typed: ``$`` is not mathtext).
        token_attributions: (tokens,).
        title: the figure's title.
        vmax: the heatmap's colour limit; None uses this frame's largest ``|value|``.
        attribution_vmax: the sentence's colour limit; None uses ``vmax``.

    Returns:
        ``fig``.
    """
    conductance = np.asarray(conductance, dtype=float)
    attributions = np.asarray(token_attributions, dtype=float)
    if conductance.ndim != 2 or conductance.shape[0] < 1:
        raise ValueError(f"conductance has shape {conductance.shape}; pass (layers + 1, tokens)")
    n_rows, n_tokens = conductance.shape
    tokens = [str(t) for t in tokens]
    if len(tokens) != n_tokens:
        raise ValueError(f"tokens has {len(tokens)} texts; conductance has {n_tokens} token columns")
    if attributions.shape != (n_tokens,):
        raise ValueError(f"token_attributions has shape {attributions.shape}; pass ({n_tokens},), one per token")
    vmax = _check_vmax("vmax", vmax, conductance)
    attribution_vmax = vmax if attribution_vmax is None else _check_vmax("attribution_vmax", attribution_vmax,
                                                                         attributions)

    fig.clear()
    width_in, height_in = fig.get_size_inches()
    label_size = float(np.clip(72 * width_in * 0.8 / max(n_tokens, 1) * 0.8, 5.0, 9.0))
    # Every position in inches turned into figure fractions: the layout does not depend on
    # drawing, so every frame of a film is laid out the same way.
    left, right = 0.95 / width_in, 1 - 0.95 / width_in
    top = 1 - 0.45 / height_in
    width_points = (right - left) * width_in * 72

    # The sentence first: the largest size (9 down to 5 pt) whose lines fit in a third of the height.
    fontsize = 9.0
    while True:
        layout = sentence_layout(tokens, width_points, fontsize)
        lines = (layout[-1][0] + 1) if layout else 1
        band_points = (lines + 1) * fontsize * 2.0
        if band_points <= height_in * 72 / 3 or fontsize <= 5.0:
            break
        fontsize -= 0.5
    bottom = 0.1 / height_in
    band = band_points / 72 / height_in
    longest = min(max((len(t) for t in tokens), default=1), 16)
    labels = (longest * label_size * _CHAR_EM + 16) / 72 / height_in
    heat_bottom = min(bottom + band + labels, 0.7)

    ax = fig.add_axes((left, heat_bottom, right - left, top - heat_bottom))
    cax = fig.add_axes((right + 0.12 / width_in, heat_bottom, 0.12 / width_in, top - heat_bottom))
    mesh = ax.pcolormesh(np.arange(n_tokens + 1), np.arange(n_rows + 1), conductance, cmap=CONDUCTANCE_CMAP,
                         vmin=-vmax, vmax=vmax, shading="flat")
    ax.set_xticks(np.arange(n_tokens) + 0.5)
    ax.set_xticklabels(tokens, rotation=90, fontsize=label_size, parse_math=False, family="monospace")
    ax.set_yticks(np.arange(n_rows) + 0.5)
    ax.set_yticklabels([_layer_label(r) for r in range(n_rows)], fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlim(0, n_tokens)
    ax.set_ylim(0, n_rows)
    fig.colorbar(mesh, cax=cax).set_label("conductance", fontsize=8)
    cax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height_in, va="top", parse_math=False)

    # The coloured sentence, under the token labels.
    sax = fig.add_axes((left, bottom, right - left, band))
    sax.set_axis_off()
    sax.set_xlim(0, width_points)
    sax.set_ylim(-band_points, 0)  # in points, downwards from the band's top
    cmap = mesh.get_cmap()
    norm = Normalize(-attribution_vmax, attribution_vmax)
    sax.text(0, -0.5 * fontsize, "token attributions", fontsize=8, va="center", color="0.3")
    for i, (token, value, (line, x)) in enumerate(zip(tokens, attributions, layout)):
        color = cmap(norm(value)) if np.isfinite(value) else (0.85, 0.85, 0.85, 1.0)
        sax.text(
            x, -(line + 1.5) * fontsize * 2.0, token, fontsize=fontsize, family="monospace", parse_math=False,
            va="center", color=_text_color(color), gid=f"token-{i}",
            bbox={"boxstyle": "square,pad=0.15", "facecolor": color, "edgecolor": "none"},
        )
    return fig


def draw_norm_shares(
    fig: Figure,
    epochs: Sequence[float],
    weight_share: np.ndarray,
    norm_share: np.ndarray,
    classes: Sequence[str],
    title: str = "",
) -> Figure:
    """Attention-weight share against norm share per token class, over training.

    One panel per token class: the share of attention weight ``alpha`` (solid) and the
    share of ``||alpha f(x)||`` (dashed) that goes to the class, at each snapshot. With a
    layer axis, one row of panels per layer, the last layer on top.

    Args:
        fig: the figure to draw on (cleared first).
        epochs: (snapshots,) the x positions (epoch of each snapshot).
        weight_share: (snapshots, classes), or (snapshots, layers, classes).
        norm_share: the same shape as ``weight_share``.
        classes: the class names, one per last-axis entry.
        title: the figure's title.

    Returns:
        ``fig``.
    """
    weight = np.asarray(weight_share, dtype=float)
    normed = np.asarray(norm_share, dtype=float)
    x = np.asarray(epochs, dtype=float)
    if weight.ndim not in (2, 3):
        raise ValueError(f"weight_share has shape {weight.shape}; pass (snapshots, classes) or "
                         "(snapshots, layers, classes)")
    if normed.shape != weight.shape:
        raise ValueError(f"norm_share has shape {normed.shape}; it must match weight_share's {weight.shape}")
    if x.shape != (weight.shape[0],):
        raise ValueError(f"epochs has shape {x.shape}; pass one x value per snapshot, ({weight.shape[0]},)")
    classes = [str(c) for c in classes]
    if len(classes) != weight.shape[-1]:
        raise ValueError(f"classes has {len(classes)} names; the shares have {weight.shape[-1]} classes")
    if weight.ndim == 2:
        weight, normed = weight[:, None, :], normed[:, None, :]
    n_layers = weight.shape[1]

    fig.clear()
    axes = fig.subplots(n_layers, len(classes), sharex=True, sharey=True, squeeze=False)
    for r in range(n_layers):
        layer = n_layers - 1 - r  # the last layer on top, as in the conductance heatmap
        for c, name in enumerate(classes):
            ax = axes[r, c]
            ax.plot(x, weight[:, layer, c], label="attention weight", **_WEIGHT_STYLE)
            ax.plot(x, normed[:, layer, c], label="norm", **_NORM_STYLE)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(name, fontsize=10, parse_math=False)
            if c == 0 and n_layers > 1:
                ax.set_ylabel(f"layer {layer + 1}", fontsize=9)  # attention lives in layers 1..L
            if r == n_layers - 1:
                ax.set_xlabel("epoch")
    axes[0, 0].set_ylim(0, 1)
    if n_layers == 1:
        axes[0, 0].set_ylabel("share")
    handles = [Line2D([], [], **_WEIGHT_STYLE), Line2D([], [], **_NORM_STYLE)]
    fig.legend(handles, ["attention weight share (\u03b1)", "norm share (\u2016\u03b1 f(x)\u2016)"],
               loc="lower center", ncol=2, frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    # Margins in inches (ticks, axis label and legend below; title above), whatever the size.
    _, height_in = fig.get_size_inches()
    fig.subplots_adjust(bottom=0.95 / height_in, top=1 - (0.75 if title else 0.4) / height_in, wspace=0.08,
                        hspace=0.15)
    if title:
        fig.suptitle(title, parse_math=False, y=1 - 0.1 / height_in, va="top")
    return fig
