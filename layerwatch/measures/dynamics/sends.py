"""What the dynamics measurement sends to TensorBoard, W&B and MLflow (live and from
``layerwatch export``): the mean margin of each split measured by snapshots, and, once
the run is over, the data-map films, the suspects of each split and its two tables."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...snapshot import SnapshotKey, epoch_value
from ..base import File, Film, Scalar, Table
from .files import SUSPECT_FIELDS, SUSPECTS, TABLE


def snapshot_items(run: Any, key: SnapshotKey, logs: dict | None, kinds: tuple) -> list:
    """The mean margin of every split's capture rows at ``key`` (when ``logs`` lacks it)."""
    if Scalar not in kinds or logs is not None:
        return []  # during training the numbers are in the Trainer's log already
    chosen = set(run.splits())
    margins: dict[str, list[float]] = {}
    for r in run.table(TABLE):
        if (r["split"] in chosen and r.get("source") == "capture" and int(r["step"]) == key.step
                and epoch_value(r["epoch"]) == key.epoch):
            margins.setdefault(r["split"], []).append(float(r["margin"]))
    return [Scalar(f"layerwatch/{split}/dynamics/mean_margin", float(np.mean(m))) for split, m in margins.items()]


def end_items(run: Any, kinds: tuple) -> list:
    """The data-map film and the suspects table of every split, ``dynamics.csv`` and the suspects' file."""
    items: list = []
    suspects = run.table(SUSPECTS) if Table in kinds else []
    for split in sorted({r["split"] for r in run.table(TABLE)}):
        gif = run.store.file_path(f"datamap_{split}.gif")
        if Film in kinds and os.path.exists(gif):
            items.append(Film(f"datamap/{split}", gif, f"data map of {split}: every epoch"))
        rows = [[r.get(f) for f in SUSPECT_FIELDS] for r in suspects if r["split"] == split]
        if rows:
            items.append(Table(f"suspects/{split}", list(SUSPECT_FIELDS), rows))
    if File in kinds:
        items.extend(File(run.store.table_path(name)) for name in (TABLE, SUSPECTS) if os.path.exists(run.store.table_path(name)))
    return items
