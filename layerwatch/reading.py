"""Reading a stored run's snapshots back (a resume, ``layerwatch render``).

No model is needed and torch is not imported. Damaged files are named in a warning and
skipped; everything else is read. Re-running the back half on them is
:mod:`layerwatch.rerender`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .measures import Measurement
from .snapshot import Snapshot, SnapshotKey, sort_keys
from .store import DamagedFileError, RunStore, VectorsNotKept

logger = logging.getLogger("layerwatch")


def stored_snapshots(
    store: RunStore,
    measurements: Sequence[Measurement] = (),
    splits: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    up_to_step: int | None = None,
) -> list[tuple[SnapshotKey, dict[str, Snapshot]]]:
    """Every stored snapshot of ``splits`` (default: all), in training order.

    Each key carries the epoch and step stored in its files. Snapshots taken after
    ``up_to_step`` are left out; damaged files are skipped with a warning.
    """
    chosen = list(splits) if splits is not None else store.splits()
    by_name: dict[str, tuple[SnapshotKey, dict[str, Snapshot]]] = {}
    for split in chosen:
        for key in store.keys(split):
            try:
                snap = store.load_snapshot(split, key, label_names)
            except VectorsNotKept:
                # keep_vectors="drift": rows, labels and layers without vectors (hidden size 0).
                snap = store.load_snapshot(split, key, label_names, pooled=False)
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

