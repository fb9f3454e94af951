"""The back half of the flow: stored snapshots -> layouts, metrics, frames, GIFs.

The callback feeds it fresh snapshots during training; ``layerwatch render`` feeds it
snapshots read back from a run directory. Both go through :class:`Pipeline`, so a
re-rendered run looks exactly like one drawn live.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .animate import write_gif
from .capture import Snapshot
from .config import LayerwatchConfig, resolve_jobs
from .metrics import layer_metrics, model_accuracy
from .reduce import Reducer, start_layouts, thread_limit
from .render import draw_frame, draw_heatmap, figure_png, limits_of, new_frame_figure
from .store import RunStore, SnapshotKey, atomic_write

logger = logging.getLogger("layerwatch")


# Axis limits grow by this much more than needed, so that a film rarely has to redraw
# its earlier frames with wider limits.
LIMIT_HEADROOM = 0.15


@dataclass
class _Frame:
    key: SnapshotKey
    layout: np.ndarray
    errors: np.ndarray | None
    notes: list[str]


@dataclass
class _Film:
    """What one split's film remembers between snapshots."""

    layers: np.ndarray
    labels: np.ndarray
    frames: list[_Frame] = field(default_factory=list)
    limits: list | None = None

    @property
    def previous(self) -> np.ndarray | None:
        return self.frames[-1].layout if self.frames else None


def _union(a, b):
    return (min(a[0], b[0]), max(a[1], b[1]))


def _contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] >= inner[1]


def _widen(lim, frac):
    pad = (lim[1] - lim[0]) * frac / 2
    return (lim[0] - pad, lim[1] + pad)


class Pipeline:
    """Turns snapshots into layouts, metrics, frames and GIFs inside one run directory.

    Args:
        store: The run directory.
        config: The run's settings (method, alignment, metrics, ...).
        label_names: Legend text per class id.
        regression: Labels are float targets (coloured by a colormap).
        reference_split: The split whose vectors other splits are measured against.
    """

    def __init__(
        self,
        store: RunStore,
        config: LayerwatchConfig,
        label_names: Sequence[str] | None = None,
        regression: bool = False,
        reference_split: str | None = None,
    ):
        self.store = store
        self.config = config
        self.label_names = list(label_names) if label_names is not None else None
        self.regression = regression
        self.reference_split = reference_split
        self.reducer = Reducer(config.method, seed=config.seed, align=config.align, perplexity=config.perplexity)
        self.films: dict[str, _Film] = {}
        self._figures: dict[int, object] = {}

    # -- one snapshot --------------------------------------------------------
    def process(self, snaps: dict[str, Snapshot], key: SnapshotKey, render: bool = True) -> dict[str, float]:
        """Lay out, measure and (optionally) draw one snapshot of every split.

        Returns the metrics as flat ``{"layerwatch/<split>/<metric>/layer_<i>": value}``.
        """
        order = sorted(snaps, key=lambda s: s != self.reference_split)
        ref = snaps.get(self.reference_split) if self.reference_split else None
        logs: dict[str, float] = {}
        rows: dict[str, list[dict]] = {}
        bar = None
        if self.config.progress and render:
            from tqdm.auto import tqdm

            bar = tqdm(order, desc=f"layerwatch {key.title}: layouts, metrics, frames", unit="split", leave=False)
        with thread_limit(self.config.threads), self._layout_pool() as pool:
            # Every split's layouts start at once (in the pool, when there is one); the
            # metrics are computed meanwhile, then each split's layouts are collected,
            # stored and drawn in order.
            started = {split: self._start_split(snaps[split], split, key, pool) for split in order}
            for split in bar if bar is not None else order:
                self._finish_split(snaps[split], split, key, ref, render, logs, rows, started[split])
            if self.config.metrics and rows:
                for split, r in rows.items():
                    self.store.replace_metrics(split, key, r)
                if render:
                    self.write_heatmaps()
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

    def _start_split(self, snap: Snapshot, split: str, key: SnapshotKey, pool) -> tuple:
        bad = [j for j in range(snap.num_layers) if not np.isfinite(snap.pooled[j]).all()]
        for j in bad:
            logger.warning(
                "layerwatch: %s, %s: layer %d holds NaN or infinite values (fp16 overflow?); "
                "its panel is left empty, the other layers are drawn",
                split, key.title, int(snap.layers[j]),
            )
        film = self.films.get(split)
        if film is None or len(film.labels) != snap.num_rows or not np.array_equal(film.layers, snap.layers):
            film = self.films[split] = _Film(layers=snap.layers, labels=snap.labels)
        collect = start_layouts(snap.pooled, self.reducer, film.previous, skip=set(bad), pool=pool, threads=self.config.threads)
        return film, collect

    def _finish_split(
        self, snap: Snapshot, split: str, key: SnapshotKey, ref: Snapshot | None, render: bool,
        logs: dict[str, float], rows: dict[str, list[dict]], started: tuple,
    ) -> None:
        film, collect = started
        values = self._metrics(snap, ref if split != self.reference_split else None)
        rows[split] = []
        for metric, per_layer in values.items():
            for layer, v in zip(snap.layers, per_layer):
                if np.isfinite(v):
                    logs[f"layerwatch/{split}/{metric}/layer_{int(layer)}"] = float(v)
                    rows[split].append(
                        {"split": split, "epoch": key.epoch, "step": key.step, "layer": int(layer), "metric": metric, "value": float(v)}
                    )
        layout, problems = collect()
        for j, msg in problems.items():
            logger.warning("layerwatch: %s, %s, %s: %s", split, key.title, int(snap.layers[j]), msg)
        self.store.save_layout(split, key, layout, snap.layers, self.config.method, self.config.align)
        knn = values.get("knn_accuracy")
        notes = [f"kNN acc {v:.2f}" if knn is not None and np.isfinite(v) else "" for v in (knn if knn is not None else [np.nan] * snap.num_layers)]
        film.frames.append(_Frame(key, layout, self._errors(snap), notes))
        if render:
            self._render_latest(split)

    def _metrics(self, snap: Snapshot, ref: Snapshot | None) -> dict[str, np.ndarray]:
        if not self.config.metrics or self.regression:
            return {}
        if ref is not None and not np.array_equal(ref.layers, snap.layers):
            ref = None
        if ref is None and snap.split != self.reference_split:
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

    def _errors(self, snap: Snapshot) -> np.ndarray | None:
        want = self.config.highlight_errors
        if want is False or snap.predictions is None or self.regression:
            return None
        return np.asarray(snap.predictions) != np.asarray(snap.labels)

    # -- drawing -------------------------------------------------------------
    def _figure(self, n_panels: int):
        fig = self._figures.get(n_panels)
        if fig is None:
            fig = self._figures[n_panels] = new_frame_figure(n_panels, self.config.dpi)
        return fig

    def _update_limits(self, film: _Film, layout: np.ndarray) -> bool:
        """Grow the film's axis limits to hold ``layout``; True if they changed."""
        new = [limits_of(layout[j]) for j in range(len(layout))]
        if film.limits is None:
            film.limits = [(_widen(x, LIMIT_HEADROOM), _widen(y, LIMIT_HEADROOM)) for x, y in new]
            return True
        changed = False
        for j, (x, y) in enumerate(new):
            ox, oy = film.limits[j]
            if not (_contains(ox, x) and _contains(oy, y)):
                film.limits[j] = (_widen(_union(ox, x), LIMIT_HEADROOM), _widen(_union(oy, y), LIMIT_HEADROOM))
                changed = True
        return changed

    def _draw(self, split: str, film: _Film, frame: _Frame) -> None:
        fig = self._figure(len(film.layers))
        draw_frame(
            fig, frame.layout, film.labels, film.layers, self.label_names,
            title=f"{split} - {frame.key.title}", limits=film.limits, errors=frame.errors,
            notes=frame.notes, regression=self.regression,
        )
        png = figure_png(fig)
        atomic_write(self.store.frame_path(split, frame.key), lambda fh: fh.write(png))

    def _render_latest(self, split: str) -> None:
        film = self.films[split]
        latest = film.frames[-1]
        if self._update_limits(film, latest.layout):
            # Limits widened: redraw the earlier frames so the whole film shares them.
            for frame in film.frames:
                self._draw(split, film, frame)
        else:
            self._draw(split, film, latest)
        self.write_gif(split)

    def render_all(self) -> None:
        """Draw every remembered frame with limits that hold the whole film, then the GIFs."""
        with thread_limit(self.config.threads):
            for split, film in self.films.items():
                film.limits = None
                for frame in film.frames:
                    self._update_limits(film, frame.layout)
                for frame in film.frames:
                    self._draw(split, film, frame)
                self.write_gif(split)
            if self.config.metrics:
                self.write_heatmaps()

    def write_gif(self, split: str) -> None:
        keys = [f.key for f in self.films[split].frames]
        write_gif([self.store.frame_path(split, k) for k in keys], self.store.gif_path(split), self.config.frame_duration)

    def write_heatmaps(self) -> None:
        """``metrics_<metric>.png``: layers x snapshots, one panel per split."""
        from matplotlib.figure import Figure

        rows = self.store.read_metrics()
        if not rows:
            return
        for metric in sorted({r["metric"] for r in rows}):
            sel = [r for r in rows if r["metric"] == metric]
            splits = sorted({r["split"] for r in sel}, key=lambda s: s != self.reference_split)
            snaps = sorted({(r["epoch"], r["step"]) for r in sel}, key=lambda es: (es[1], es[0]))
            layers = sorted({r["layer"] for r in sel})
            tables = {}
            for split in splits:
                t = np.full((len(layers), len(snaps)), np.nan)
                for r in sel:
                    if r["split"] == split:
                        t[layers.index(r["layer"]), snaps.index((r["epoch"], r["step"]))] = r["value"]
                tables[split] = t
            with_step = self.config.every_n_steps is not None
            cols = [f"{e}/{s}" if with_step else str(e) for e, s in snaps]
            fig = Figure(figsize=(1.5 + len(splits) * (1.2 + 0.45 * len(snaps)), 1.2 + 0.35 * len(layers)), dpi=self.config.dpi)
            draw_heatmap(fig, tables, layers, cols, metric)
            fig.tight_layout()
            png = figure_png(fig)
            atomic_write(f"{self.store.root}/metrics_{metric}.png", lambda fh: fh.write(png))

    # -- picking up a stored run -----------------------------------------------
    def restore(self, up_to_step: int | None = None) -> None:
        """Reload the films of a stored run (layouts, error marks, kNN notes).

        Used when training resumes from a checkpoint: new frames are tied to the last
        stored layout and the GIF keeps the frames already drawn. Snapshots taken after
        ``up_to_step`` (by a run that died after its last checkpoint) are left out.
        """
        knn = {}
        for r in self.store.read_metrics():
            if r["metric"] == "knn_accuracy":
                knn[(r["split"], r["epoch"], r["step"], r["layer"])] = r["value"]
        for split in self.store.splits():
            for key in self.store.keys(split, "layouts"):
                try:
                    snap = self.store.load_snapshot(split, key)
                    stored = self.store.load_layout(split, key)
                except Exception:  # a damaged file is skipped, never taken for a whole one
                    continue
                if up_to_step is not None and snap.step > up_to_step:
                    continue
                key = SnapshotKey(snap.epoch, snap.step, key.with_step)
                film = self.films.get(split)
                if film is None:
                    film = self.films[split] = _Film(layers=snap.layers, labels=snap.labels)
                notes = [
                    f"kNN acc {knn[(split, key.epoch, key.step, int(l))]:.2f}" if (split, key.epoch, key.step, int(l)) in knn else ""
                    for l in snap.layers
                ]
                film.frames.append(_Frame(key, stored["layout"], self._errors(snap), notes))
            film = self.films.get(split)
            if film is not None:
                for frame in film.frames:
                    self._update_limits(film, frame.layout)


def rebuild(
    run_dir: str,
    method: str | None = None,
    splits: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    align: bool | None = None,
    progress: bool = False,
) -> dict[str, str]:
    """Redraw a stored run from its embeddings alone (no model needed).

    Layouts are recomputed with ``method`` / ``align`` (default: the run's own), axis
    limits are fitted to the whole film, metrics are recomputed, frames and GIFs are
    rewritten. Returns ``{split: gif path}``.
    """
    store = RunStore(run_dir)
    info = store.read_run()
    stored = dict(info.get("config", {}))
    changes = {k: v for k, v in {"method": method, "align": align}.items() if v is not None}
    fields = set(LayerwatchConfig.__dataclass_fields__)
    config = LayerwatchConfig(**{k: v for k, v in stored.items() if k in fields}).replace(output_dir=run_dir, background=False, **changes)
    available = store.splits()
    chosen = list(splits) if splits else available
    missing = [s for s in chosen if s not in available]
    if missing:
        raise ValueError(f"run {run_dir!r} has no stored split {missing[0]!r}; it has {available}")
    if not chosen:
        raise ValueError(f"run {run_dir!r} holds no embeddings yet; nothing to render")
    label_names = info.get("label_names")
    pipe = Pipeline(
        store, config, label_names, regression=info.get("label_kind") == "regression",
        reference_split=info.get("reference_split") if info.get("reference_split") in chosen else chosen[0],
    )
    keys: dict[str, SnapshotKey] = {}
    for split in chosen:
        for key in store.keys(split):
            keys.setdefault(key.name, key)
    ordered = sorted(keys.values(), key=lambda k: (k.epoch, k.step) if not k.with_step else (k.step, k.epoch))
    if progress:
        from tqdm.auto import tqdm

        ordered = tqdm(ordered, desc="layerwatch render", unit="snapshot")
    for key in ordered:
        snaps = {}
        for split in chosen:
            try:
                snap = store.load_snapshot(split, key, label_names)
            except FileNotFoundError:
                continue
            if layers is not None:
                pick = [i for i, l in enumerate(snap.layers) if int(l) in set(layers)]
                absent = sorted(set(layers) - {int(l) for l in snap.layers})
                if absent:
                    raise ValueError(
                        f"layer {absent[0]} was not stored in this run; stored layers are {[int(l) for l in snap.layers]}"
                    )
                snap.pooled, snap.layers = snap.pooled[pick], snap.layers[pick]
            snaps[split] = snap
        if not snaps:
            continue
        key = SnapshotKey(next(iter(snaps.values())).epoch, next(iter(snaps.values())).step, key.with_step)
        pipe.process(snaps, key, render=False)
    pipe.render_all()
    return {split: store.gif_path(split) for split in pipe.films}
