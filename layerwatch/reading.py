"""Reading a stored run back, and re-running the back half on it (``layerwatch render``).

No model is needed and torch is not imported. Damaged files are named in a warning and
skipped; everything else is read and drawn.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .config import LayerwatchConfig
from .history import LAYOUTS, METRICS, History, Layout
from .measures import Measurement, for_config
from .measures.base import Context
from .measures.embeddings.files import load_layout, load_snapshot
from .snapshot import Snapshot, SnapshotKey, epoch_value, sort_keys
from .store import DamagedFileError, RunStore, VectorsNotKept

logger = logging.getLogger("layerwatch")


def stored_snapshots(
    store: RunStore,
    measurements: Sequence[Measurement] = (),
    splits: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    up_to_step: int | None = None,
    vectors: bool = True,
) -> list[tuple[SnapshotKey, dict[str, Snapshot]]]:
    """Every stored snapshot of ``splits`` (default: all), in training order.

    Each key carries the epoch and step stored in its files. Snapshots taken after
    ``up_to_step`` are left out; damaged files are skipped with a warning.
    ``vectors=False`` reads no pooled vector (each snapshot's ``pooled`` has width 0), for
    readers that need rows, labels and predictions only (the report).
    """
    chosen = list(splits) if splits is not None else store.splits()
    by_name: dict[str, tuple[SnapshotKey, dict[str, Snapshot]]] = {}
    for split in chosen:
        for key in store.keys(split):
            try:
                snap = load_snapshot(store, split, key, label_names, pooled=vectors)
                if not vectors:
                    snap.pooled = np.zeros((len(snap.layers), snap.num_rows, 0), dtype=np.float32)
            except VectorsNotKept:
                # keep_vectors="drift": rows, labels and layers without vectors (hidden size 0).
                snap = load_snapshot(store, split, key, label_names, pooled=False)
                snap.pooled = np.zeros((len(snap.layers), snap.num_rows, 0), dtype=np.float32)
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s", exc)
                continue
            if up_to_step is not None and snap.step > up_to_step:
                continue
            true_key = key.named_like(snap.epoch, snap.step)
            for m in measurements:
                try:
                    m.load(store, snap, true_key)
                except DamagedFileError as exc:
                    logger.warning("layerwatch: %s", exc)
            entry = by_name.setdefault(key.name, (true_key, {}))
            entry[1][split] = snap
    ordered = sort_keys(k for k, _ in by_name.values())
    return [(k, by_name[k.name][1]) for k in ordered]


def remember_stored(history: History, store: RunStore, snaps: list[tuple[SnapshotKey, dict[str, Snapshot]]]) -> None:
    """File the core parts of stored snapshots in ``history``: each split's layout (with the
    rows, labels and predictions of its snapshot) and its rows of ``metrics.csv``.

    Damaged files are named in a warning and skipped; a layout that does not fit its
    snapshot (other rows or layers) is left out.
    """
    at = {}
    for key, by_split in snaps:
        for split, snap in by_split.items():
            at[(split, key.step, key.epoch)] = key
            try:
                stored = load_layout(store, split, key)
            except FileNotFoundError:
                continue
            except ValueError as exc:
                logger.warning("layerwatch: %s", exc)
                continue
            layout = np.asarray(stored["layout"], dtype=np.float32)
            if layout.ndim != 3 or layout.shape[1] != snap.num_rows:
                logger.warning(
                    "layerwatch: the layout of %s, %s holds %s rows but its snapshot %d; it is left out",
                    split, key.title, layout.shape[1] if layout.ndim == 3 else "no", snap.num_rows,
                )
                continue
            history.put(LAYOUTS, split, key, Layout(
                layout=layout, layers=np.asarray(stored["layers"], dtype=np.int64), indices=np.asarray(snap.indices),
                labels=np.asarray(snap.labels), predictions=None if snap.predictions is None else np.asarray(snap.predictions),
                epoch=float(key.epoch), step=int(key.step),
            ))
    try:
        rows = store.read_metrics()
    except ValueError as exc:
        logger.warning("layerwatch: %s", exc)
        rows = []
    grouped: dict[tuple[str, SnapshotKey], list[dict]] = {}
    for r in rows:
        key = at.get((r["split"], int(r["step"]), epoch_value(r["epoch"])))
        if key is not None:
            grouped.setdefault((r["split"], key), []).append(r)
    for (split, key), mine in grouped.items():
        history.put(METRICS, split, key, mine)


def run_context(store: RunStore, history: History | None = None) -> tuple[Context, list[Measurement]]:
    """The back half's context of a stored run (its settings, labels and reference split
    from ``run.json``) and its measurements; no measurement when the settings cannot be read."""
    info = store.read_run()
    label_names = (info.get("labels") or {}).get("names") or info.get("label_names")
    try:
        config = LayerwatchConfig.from_dict(dict(info.get("config", {})), output_dir=store.root, background=False)
        measurements = for_config(config, names=info.get("measurements"))
    except (TypeError, ValueError) as exc:
        logger.warning("layerwatch: the settings in %s cannot be read (%s); only the layouts and metrics are shown", store.run_path, exc)
        config, measurements = LayerwatchConfig(output_dir=store.root, background=False), []
    ctx = Context(store, config, label_names, regression=info.get("label_kind") == "regression",
                  reference_split=info.get("reference_split"), history=history)
    return ctx, measurements


def take_up(ctx: Context, measurements: Sequence[Measurement], up_to_step: int | None = None,
            splits: Sequence[str] | None = None, vectors: bool = True) -> None:
    """Read a stored run into ``ctx.history`` and every measurement's memory (films, drift
    references), once; damaged files are named and skipped."""
    snaps = stored_snapshots(ctx.store, measurements, splits, ctx.label_names, up_to_step=up_to_step, vectors=vectors)
    remember_stored(ctx.history, ctx.store, snaps)
    for m in measurements:
        try:
            m.restore(ctx, snaps)
        except Exception as exc:  # a stored run that cannot be taken up is drawn afresh
            logger.warning("layerwatch: could not take up the stored %s of %s (%s: %s)", m.name, ctx.store.root, type(exc).__name__, exc)


def stored_history(store: RunStore) -> tuple[Context, list[Measurement]]:
    """A stored run's history, read once from its files (``layerwatch report``): no vectors are read."""
    ctx, measurements = run_context(store)
    take_up(ctx, measurements, vectors=False)
    return ctx, measurements


def rebuild(
    run_dir: str,
    method: str | None = None,
    splits: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    align: bool | None = None,
    progress: bool = False,
) -> dict[str, str]:
    """Redraw a stored run from its stored arrays alone (no model needed).

    Layouts are recomputed with ``method`` / ``align`` (default: the run's own), axis
    limits are fitted to the whole film, frames and GIFs are rewritten. The metrics of the
    splits and layers rendered are recomputed with the same definitions as during training
    (other splits are measured against the reference split, which is read even when it is
    not rendered); rows of splits and layers not rendered are left as they are.
    Returns ``{split: gif path}``.
    """
    from .pipeline import Pipeline

    store = RunStore(run_dir)
    info = store.read_run()
    store.directory.clean_temporary()
    changes = {k: v for k, v in {"method": method, "align": align}.items() if v is not None}
    config = LayerwatchConfig.from_dict(dict(info.get("config", {})), output_dir=run_dir, background=False, **changes)
    available = store.splits()
    chosen = list(splits) if splits else available
    missing = [s for s in chosen if s not in available]
    if missing:
        raise ValueError(f"run {run_dir!r} has no stored split {missing[0]!r}; it has {available}")
    if not chosen:
        raise ValueError(f"run {run_dir!r} holds no embeddings yet; nothing to render")
    reference = info.get("reference_split") if info.get("reference_split") in available else chosen[0]
    label_names = (info.get("labels") or {}).get("names") or info.get("label_names")
    measurements = for_config(config, names=info.get("measurements"))
    pipe = Pipeline(
        store, config, label_names, regression=info.get("label_kind") == "regression",
        reference_split=reference, measurements=measurements,
    )
    read = sorted(set(chosen) | ({reference} if reference else set()))
    snapshots = stored_snapshots(store, measurements, read, label_names)
    thinned = [k.title for k, by_split in snapshots if any(s.pooled.shape[-1] == 0 for s in by_split.values())]
    if thinned:
        raise ValueError(
            f"run {run_dir!r} kept the pooled vectors of its first and latest snapshots only "
            f"(keep_vectors='drift'; not those of {', '.join(thinned)}), so its layouts cannot be computed again; "
            "its frames, films, metrics and report.html are complete: use layerwatch info, report or export, "
            "or keep_vectors='all' in runs to re-render"
        )
    if layers is not None:
        wanted = {int(l) for l in layers}
        for _, by_split in snapshots:
            for snap in by_split.values():
                stored = [int(l) for l in snap.layers]
                absent = sorted(wanted - set(stored))
                if absent:
                    raise ValueError(f"layer {absent[0]} was not stored in this run; stored layers are {stored}")
                pick = [i for i, l in enumerate(stored) if l in wanted]
                snap.pooled, snap.layers = snap.pooled[pick], snap.layers[pick]
    iterator = snapshots
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(snapshots, desc="layerwatch render", unit="snapshot")
    drawn: set[str] = set()
    for key, by_split in iterator:
        # The reference split is measured against but drawn only when asked for.
        # Failed steps are named in warnings as they happen; the others go on.
        pipe.process(by_split, key, render=False, draw_splits=set(chosen))
        drawn.update(s for s in by_split if s in chosen)
    others = [s for s in available if s not in chosen]
    if others:
        # Splits not rendered keep their stored layouts; the report shows them from the disk.
        ctx, stored = run_context(store, history=pipe.history)
        take_up(ctx, stored, splits=others, vectors=False)
    pipe.render_all()
    return {split: store.gif_path(split) for split in chosen if split in drawn}
