"""Pooled hidden states: every layer's vector per row, laid out in 2-D, measured and filmed.

Front half: each batch's hidden states are pooled over the real tokens (``pooling``) as
they come, so memory grows with rows x layers x hidden, never with tokens.

Back half, per snapshot and split: a 2-D layout of every layer (tied to the previous
frame), the per-layer metrics (see :mod:`layerwatch.metrics`) written to ``metrics.csv``
as soon as they are computed, one frame (a panel per layer, fixed axis limits through
the film), the GIF, and the metric heatmaps. Each of these is a step of its own: one that
fails costs only itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np

from ...config import resolve_jobs
from ...distributed import Part
from ...film import Film, Frame
from ...metrics import cka_norms, layer_cka, layer_metrics, model_accuracy
from ...model_info import ModelInfo
from ...reduce import BACKEND_NAMES, Reducer, is_degenerate, start_layouts, thread_limit
from ...snapshot import SnapshotKey
from ...history import LAYOUTS, METRICS, Layout
from ..base import SENT_KINDS, Accumulator, Context, Measurement, SplitPlan
from . import files
from .frames import FrameData, panel_limits, panel_notes
from .heatmaps import norms_of, write_cka_heatmap, write_metric_heatmaps
from .heatmaps import row_when as _when
from .pool import Pool
from .sends import end_items, snapshot_items

logger = logging.getLogger("layerwatch")

class EmbeddingsMeasurement(Measurement):
    """Pooled hidden states of every monitored layer (always on)."""

    name = "embeddings"
    output_flags = {"output_hidden_states": True}

    def __init__(self, config):
        super().__init__(config)
        self.reducer = Reducer(config.method, seed=config.seed, align=config.align, perplexity=config.perplexity)
        self.films: dict[str, Film] = {}
        self._figures: dict[int, Any] = {}
        # Per split, the vectors of the first and of the latest snapshot (for the drift).
        self._first: dict[str, Any] = {}
        self._latest: dict[str, Any] = {}
        self._rows: dict[str, int] = {}

    def prepare(self, model: Any, info: ModelInfo) -> None:
        self._rows = {name: len(indices) for name, indices in info.indices.items()}
        from ...model_utils import model_device

        # t-SNE lays out on the model's CUDA device where it can (reduce.Reducer.backend_for).
        self.reducer.device = str(model_device(model)) if callable(getattr(model, "parameters", None)) else "cpu"

    def describe(self) -> dict[str, Any]:
        # Which library lays out each split's maps (chosen by its rows and what is installed).
        return {"layout": self.reducer.describe(self._rows)} if self._rows else {}

    # -- front half ---------------------------------------------------------------------
    def start(self, plan: SplitPlan) -> Accumulator:
        return Pool(plan, self.config.pooling, plan.layers or self.config.layers, plan.model_info.model_name)

    def assemble(self, part: Part, snap) -> None:
        snap.results[self.name] = {
            "pooled": np.ascontiguousarray(part.rows["pooled"].transpose(1, 0, 2)),
            "layers": np.asarray(part.meta["layers"], dtype=np.int64),
        }

    def save(self, store, snap, key) -> None:
        # Metrics, drift and layouts use the float32 vectors in memory, never the stored copy.
        files.save_snapshot(store, snap, key, dtype=self.config.store_dtype)
        if self.config.keep_vectors == "drift":
            # Drift needs the first snapshot's vectors and the previous one's: once this one
            # is stored, the vectors of every snapshot between the first and it go.
            keys = [k for k in store.keys(snap.split) if k.name != key.name]
            for k in keys[1:]:
                if files.has_vectors(store, snap.split, k):
                    files.drop_vectors(store, snap.split, k)

    def load(self, store, snap, key) -> None:
        pass  # files.load_snapshot reads these arrays with the snapshot itself

    # -- back half -----------------------------------------------------------------------
    def process(self, ctx: Context, key: SnapshotKey, snaps: dict) -> dict[str, float]:
        order = ctx.drawn(snaps)
        ref = snaps.get(ctx.reference_split) if ctx.reference_split else None
        logs: dict[str, float] = {}
        with self._layout_pool() as pool:
            # Every split's layouts start at once (in the pool, when there is one). Meanwhile
            # every split's metrics are computed and written, and the heatmaps drawn (they
            # need no layout); then each split's layouts are collected, stored and drawn in
            # order.
            started = {s: ctx.guard(f"laying out {s}", key, self._start, snaps[s], key, pool) for s in order}
            values = {s: self._measure(ctx, key, snaps[s], ref if s != ctx.reference_split else None, logs) for s in order}
            if ctx.render and self.config.metrics:
                ctx.guard("drawing the metric heatmaps", key, self.write_heatmaps, ctx)
                ctx.guard("drawing the layer-by-layer CKA", key, self.write_cka_layers, ctx)
            for split in order:
                self._finish(ctx, key, snaps[split], values[split], started[split])
        return logs

    def _layout_pool(self):
        """A thread pool for the t-SNE layouts when more than one job is wanted, else None."""
        jobs = resolve_jobs(self.config)
        if jobs <= 1 or self.config.method != "tsne":
            # PCA takes well under a second; UMAP's numba kernels are not safe to run
            # from several threads at once.
            return contextlib.nullcontext()
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="layerwatch-layout")

    def _film(self, ctx: Context, split: str, rows: int, layers) -> Film:
        film = self.films.get(split)
        previous = film.previous if film is not None else None
        if previous is None or len(previous.data.labels) != rows or not np.array_equal(previous.data.layers, layers):
            film = self.films[split] = Film(
                ctx.store,
                frame_path=lambda k, s=split: ctx.store.frame_path(s, k),
                gif_path=ctx.store.gif_path(split),
                draw=lambda f, scale, s=split, c=ctx: self._draw(c, s, f, scale),
                extent=panel_limits,
                duration=self.config.frame_duration,
                frames_on_disk=lambda s=split: ctx.store.keys(s, "frames"),
            )
        return film

    def _start(self, snap, key: SnapshotKey, pool) -> tuple:
        bad = {j for j in range(snap.num_layers) if not np.isfinite(snap.pooled[j]).all()}
        for j in sorted(bad):
            logger.warning(
                "layerwatch: %s, %s: layer %d holds NaN or infinite values (fp16 overflow?); "
                "its panel is left empty, the other layers are drawn",
                snap.split, key.title, int(snap.layers[j]),
            )
        degenerate = {j for j in range(snap.num_layers) if j not in bad and is_degenerate(snap.pooled[j])}
        for j in sorted(degenerate):
            logger.warning(
                "layerwatch: %s, %s: every row of layer %d holds the same vector; its panel shows them at one point",
                snap.split, key.title, int(snap.layers[j]),
            )
        film = self.films.get(snap.split)
        prev = film.previous if film is not None else None
        previous = None
        if prev is not None and prev.data.layout.shape[:2] == (snap.num_layers, snap.num_rows) and np.array_equal(prev.data.layers, snap.layers):
            previous = prev.data.layout
        collect = start_layouts(snap.pooled, self.reducer, previous, skip=bad | degenerate, pool=pool, threads=self.config.threads)
        return collect, degenerate

    def _measure(self, ctx: Context, key: SnapshotKey, snap, ref, logs: dict) -> dict[str, np.ndarray]:
        """The split's metrics and drift, logged and written to the metrics table."""
        split = snap.split
        values = ctx.guard(f"computing the metrics of {split}", key, self._metrics, ctx, snap, ref) or {}
        if self.config.metrics:
            values.update(ctx.guard(f"computing the drift of {split}", key, self._drift, snap) or {})
        rows = []
        for metric, per_layer in values.items():
            for layer, v in zip(snap.layers, per_layer):
                if np.isfinite(v):
                    logs[f"layerwatch/{split}/{metric}/layer_{int(layer)}"] = float(v)
                    rows.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": int(layer), "metric": metric, "value": float(v)})
        if self.config.metrics:
            # Written now, before anything is drawn: numbers once computed are kept.
            ctx.guard(f"writing the metrics of {split}", key, files.replace_metrics, ctx.store, split, key, rows, [int(l) for l in snap.layers])
            ctx.history.put(METRICS, split, key, rows)
        return values

    def _finish(self, ctx: Context, key: SnapshotKey, snap, values: dict, started) -> None:
        """The split's layouts: collected, stored and drawn."""
        split = snap.split
        if started is None:
            return
        collect, degenerate = started
        ctx.working(f"{self.name}: laying out {split} ({snap.num_layers} layers, {snap.num_rows} rows)")
        began = time.perf_counter()
        tell = None
        if ctx.progress is not None:
            def tell(done: int, running: list[int], total: int) -> None:
                ctx.progress.layouts(self.name, split, [int(snap.layers[j]) for j in running], done, total,
                                     time.perf_counter() - began)
        result = ctx.guard(f"laying out {split}", key, collect, tell)
        if result is None:
            return
        if ctx.progress is not None:
            ctx.progress.done(f"laid out {split} ({snap.num_layers} layers, {snap.num_rows} rows)")
        layout, problems = result
        for j, msg in problems.items():
            logger.warning("layerwatch: %s, %s, layer %d: %s", split, key.title, int(snap.layers[j]), msg)
        for j in degenerate:
            layout[j] = 0.0  # one point: what the vectors are
        ctx.guard(
            f"saving the layout of {split}", key, files.save_layout,
            ctx.store, split, key, layout, snap.layers, self.config.method, self.config.align,
            backend=BACKEND_NAMES[self.reducer.backend_for(snap.num_rows)],
        )
        ctx.history.put(LAYOUTS, split, key, Layout(
            layout=np.asarray(layout, dtype=np.float32), layers=np.asarray(snap.layers, dtype=np.int64),
            indices=np.asarray(snap.indices), labels=np.asarray(snap.labels),
            predictions=None if snap.predictions is None else np.asarray(snap.predictions),
            epoch=float(key.epoch), step=int(key.step),
        ))
        frame = Frame(key, FrameData(layout, snap.labels, snap.layers, self._errors(ctx, snap), panel_notes(values.get("knn_accuracy"), snap.num_layers, degenerate)))
        film = self._film(ctx, snap.split, snap.num_rows, snap.layers)
        if ctx.render:
            film.show(ctx, frame)
        else:
            film.add(frame)

    def _metrics(self, ctx: Context, snap, ref) -> dict[str, np.ndarray]:
        if not self.config.metrics or ctx.regression:
            return {}
        if ref is not None and not np.array_equal(ref.layers, snap.layers):
            ref = None
        if ref is None and snap.split != ctx.reference_split:
            values = {}
        else:
            values = layer_metrics(
                snap.pooled, snap.labels,
                None if ref is None else ref.pooled, None if ref is None else ref.labels,
                seed=self.config.seed,
            )
        acc = model_accuracy(snap.predictions, snap.labels)
        if np.isfinite(acc):
            values["model_accuracy"] = np.full(snap.num_layers, np.nan)
            values["model_accuracy"][-1] = acc  # one number per snapshot, filed under the top layer
        return values

    def _drift(self, snap) -> dict[str, np.ndarray]:
        """CKA of every layer against the split's first and previous snapshot (same rows)."""
        # Each layer's own CKA norm is computed once here and kept with the snapshot: every
        # pair it is in later (against the next snapshots, between layers) reuses it.
        norms = cka_norms(snap.pooled)
        mine = (np.asarray(snap.indices), np.asarray(snap.layers))
        out = {}
        for name, memory in (("cka_first", self._first), ("cka_prev", self._latest)):
            other = memory.get(snap.split)
            if other is not None and np.array_equal(other[0], mine[0]) and np.array_equal(other[1], mine[1]):
                out[name] = layer_cka(snap.pooled, other[2], norms, norms_of(other))
        if "cka_first" not in out:
            self._first[snap.split] = [*mine, snap.pooled, norms]
            out["cka_first"] = np.where(np.isfinite(norms), 1.0, np.nan)  # 1 by definition: the start
        self._latest[snap.split] = [*mine, snap.pooled, norms]
        return out

    def write_cka_layers(self, ctx: Context) -> None:
        """``cka_layers.png``: which layers have become alike, at the latest snapshot (a panel per split)."""
        write_cka_heatmap(ctx, self._latest, self.config.dpi)

    def _errors(self, ctx: Context, snap) -> np.ndarray | None:
        if self.config.highlight_errors is False or snap.predictions is None or ctx.regression:
            return None
        return np.asarray(snap.predictions) != np.asarray(snap.labels)

    # -- drawing -------------------------------------------------------------------------
    def _figure(self, n_panels: int):
        from ...render import new_frame_figure

        fig = self._figures.get(n_panels)
        if fig is None:
            fig = self._figures[n_panels] = new_frame_figure(n_panels, self.config.dpi)
        return fig

    def _draw(self, ctx: Context, split: str, frame: Frame, limits) -> bytes:
        from ...render import draw_frame, figure_png

        d = frame.data
        fig = self._figure(len(d.layers))
        draw_frame(
            fig, d.layout, d.labels, d.layers, ctx.label_names,
            title=f"{split} - {frame.key.title}", limits=limits, errors=d.errors,
            notes=d.notes, regression=ctx.regression,
        )
        return figure_png(fig)

    def render_all(self, ctx: Context) -> None:
        with thread_limit(self.config.threads):
            for film in self.films.values():
                film.redraw(ctx)
            if self.config.metrics:
                ctx.guard("drawing the metric heatmaps", None, self.write_heatmaps, ctx)
                ctx.guard("drawing the layer-by-layer CKA", None, self.write_cka_layers, ctx)

    def write_heatmaps(self, ctx: Context) -> None:
        """``metrics_<metric>.png``: layers x snapshots, one panel per split."""
        write_metric_heatmaps(ctx, self.config.dpi, with_step=self.config.every_n_steps is not None)

    # -- a stored run ------------------------------------------------------------------------
    def restore(self, ctx: Context, snaps: list) -> None:
        # The stored layouts and metrics were filed in ctx.history when the run was read.
        for key, by_split in snaps:
            for split, snap in by_split.items():
                if snap.pooled.shape[-1]:
                    entry = [np.asarray(snap.indices), np.asarray(snap.layers), snap.pooled, None]
                    self._first.setdefault(split, entry)
                    self._latest[split] = entry
                else:
                    # Its vectors were not kept (keep_vectors="drift"; a resume from a middle
                    # snapshot): the next drift from the previous snapshot is unknown, not
                    # a drift from an older one.
                    self._latest.pop(split, None)
        for split in {s for _, by_split in snaps for s in by_split}:
            knn = {(key.name, int(r["layer"])): r["value"] for key, rows in ctx.history.get(METRICS, split)
                   for r in rows if r["metric"] == "knn_accuracy"}
            for key, lay in ctx.history.get(LAYOUTS, split):
                if lay.layout.shape[:2] != (len(lay.layers), len(lay.indices)):
                    continue
                values = np.array([knn.get((key.name, int(l)), np.nan) for l in lay.layers])
                frame = Frame(key, FrameData(lay.layout, lay.labels, lay.layers, self._errors(ctx, lay), panel_notes(values, len(lay.layers))))
                self._film(ctx, split, len(lay.indices), lay.layers).add(frame)

    def sends(self, run, key, snaps=None, logs=None, kinds=SENT_KINDS) -> list:
        if key is None:
            return end_items(run, kinds)
        return snapshot_items(run, key, snaps, logs, kinds)

    def summarize(self, store) -> dict[str, Any]:
        backend = ((store.read_run().get("methods") or {}).get(self.name) or {}).get("layout", {}).get("backend")
        out: dict[str, Any] = {"layout_backend": backend} if backend else {}
        try:
            rows = store.read_metrics()
        except ValueError:
            return out
        last: dict[str, tuple] = {}
        for r in rows:
            if r["metric"] == "knn_accuracy":
                last[r["split"]] = max(_when(r), last.get(r["split"], (-1, -1)))
        best: dict[str, tuple] = {}
        for r in rows:
            if r["metric"] == "knn_accuracy" and _when(r) == last.get(r["split"]):
                if r["split"] not in best or r["value"] > best[r["split"]][1]:
                    best[r["split"]] = (int(r["layer"]), r["value"])
        if best:
            out["best_knn_layer_at_last_snapshot"] = {s: {"layer": l, "knn_accuracy": round(v, 4)} for s, (l, v) in best.items()}
        drift = [r for r in rows if r["metric"] == "cka_first"]
        final: dict[str, tuple] = {}
        for r in drift:
            final[r["split"]] = max(_when(r), final.get(r["split"], (-1, -1)))
        moved: dict[str, dict] = {}
        for split, when in final.items():
            at = sorted((r["value"], int(r["layer"])) for r in drift if r["split"] == split and _when(r) == when)
            if at:
                moved[split] = {
                    "moved_most": {"layer": at[0][1], "cka_first": round(at[0][0], 4)},
                    "moved_least": {"layer": at[-1][1], "cka_first": round(at[-1][0], 4)},
                }
        if moved:
            out["drift_at_last_snapshot"] = moved
        return out

    def info_lines(self, summary: dict[str, Any]) -> list[str]:
        lines = []
        if summary.get("layout_backend"):
            lines.append("layouts: " + ", ".join(f"{split!r} by {name}" for split, name in summary["layout_backend"].items()))
        for split, b in summary.get("best_knn_layer_at_last_snapshot", {}).items():
            lines.append(f"best kNN layer of {split!r} at the last snapshot: {b['layer']} ({b['knn_accuracy']:.3f})")
        for split, d in summary.get("drift_at_last_snapshot", {}).items():
            most, least = d["moved_most"], d["moved_least"]
            lines.append(
                f"drift of {split!r} since the first snapshot (linear CKA, 1 = unchanged): moved most "
                f"{_layer_text(most['layer'])} ({most['cka_first']:.3f}), least {_layer_text(least['layer'])} ({least['cka_first']:.3f})"
            )
        return lines


def _layer_text(layer: int) -> str:
    return "the embeddings" if int(layer) == 0 else f"layer {int(layer)}"
