"""Reading a stored run back: its snapshots, its history and its measurements' memory
(a resume, ``layerwatch render``, ``layerwatch report``).

No model is needed and torch is not imported. Damaged files are named in a warning and
skipped; everything else is read. Re-running the back half on a stored run is
:mod:`layerwatch.rerender`.
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

