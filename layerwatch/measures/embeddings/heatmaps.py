"""The embeddings' heatmaps: each metric over layers and snapshots (from ``metrics.csv``), and
the linear CKA between layers at the latest snapshot. matplotlib loads when one is drawn."""

from __future__ import annotations

import re

import numpy as np

from ...history import METRICS
from ...metrics import cka_matrix, cka_norms
from ...snapshot import SnapshotKey, epoch_value
from ..base import Context

# Metric names that become file names.
METRIC_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def row_when(row: dict) -> tuple:
    """A table row's snapshot: (step, epoch); file names may lack the step."""
    return int(row["step"]), epoch_value(row["epoch"])


def norms_of(entry: list) -> np.ndarray:
    """The CKA norms of a remembered snapshot ``[indices, layers, pooled, norms]``, computed
    on first use for one read back from disk."""
    if entry[3] is None:
        entry[3] = cka_norms(entry[2])
    return entry[3]


def write_metric_heatmaps(ctx: Context, dpi: int, with_step: bool) -> None:
    """``metrics_<metric>.png``: layers x snapshots, one panel per split (``with_step``: the
    snapshots are named by their step too)."""
    from matplotlib.figure import Figure

    from ...render import draw_heatmap, figure_png

    # From the history (every snapshot's rows, as metrics.csv holds them), not the file.
    rows = [r for split in ctx.history.splits(METRICS) for _, mine in ctx.history.get(METRICS, split) for r in mine]
    if not rows:
        return
    for metric in sorted({r["metric"] for r in rows}):
        if not METRIC_NAME.match(str(metric)):
            continue
        sel = [r for r in rows if r["metric"] == metric]
        splits = sorted({r["split"] for r in sel}, key=lambda s: (s != ctx.reference_split, s))
        # A snapshot is known by its step in every table (names may lack it).
        keys = sorted({row_when(r): SnapshotKey(r["epoch"], r["step"], with_step) for r in sel}.values(), key=lambda k: (k.step, k.epoch))
        col = {(k.step, k.epoch): i for i, k in enumerate(keys)}
        layers = sorted({int(r["layer"]) for r in sel})
        tables = {}
        for split in splits:
            t = np.full((len(layers), len(keys)), np.nan)
            for r in sel:
                if r["split"] == split:
                    t[layers.index(int(r["layer"])), col[row_when(r)]] = r["value"]
            tables[split] = t
        fig = Figure(figsize=(1.5 + len(splits) * (1.2 + 0.45 * len(keys)), 1.2 + 0.35 * len(layers)), dpi=dpi)
        draw_heatmap(fig, tables, layers, [k.column for k in keys], metric)
        fig.tight_layout()
        ctx.store.write_bytes(ctx.store.file_path(f"metrics_{metric}.png"), figure_png(fig))


def write_cka_heatmap(ctx: Context, latest: dict[str, list], dpi: int) -> None:
    """``cka_layers.png``: which layers have become alike, at the latest snapshot (a panel per
    split); ``latest``: per split, the remembered snapshot ``[indices, layers, pooled, norms]``."""
    from matplotlib.figure import Figure

    from ...render import draw_heatmap, figure_png, layer_name

    latest = {s: v for s, v in latest.items() if ctx.draw_splits is None or s in ctx.draw_splits}
    if not latest:
        return
    splits = sorted(latest, key=lambda s: (s != ctx.reference_split, s))
    layers = [int(l) for l in latest[splits[0]][1]]
    tables = {s: cka_matrix(latest[s][2], norms_of(latest[s])) for s in splits if [int(l) for l in latest[s][1]] == layers}
    n = len(layers)
    fig = Figure(figsize=(1.5 + len(tables) * (1.2 + 0.5 * n), 1.4 + 0.4 * n), dpi=dpi)
    draw_heatmap(fig, tables, layers, [layer_name(l) for l in layers], "linear CKA between layers (latest snapshot)", xlabel="layer")
    fig.tight_layout()
    ctx.store.write_bytes(ctx.store.file_path("cka_layers.png"), figure_png(fig))
