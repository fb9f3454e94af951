"""What the embeddings measurement sends to TensorBoard, W&B and MLflow (live and from
``layerwatch export``): each snapshot's numbers (``metrics.csv``), frames and pooled
vectors for the Embedding Projector; at the end the films, the last snapshot's rows with
their 2-D places, and ``metrics.csv``."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ...snapshot import SnapshotKey, epoch_value
from ...store import METRIC_FIELDS, METRICS_FILE, DamagedFileError
from ..base import File, Film, Image, Scalar, Table, Vectors

logger = logging.getLogger("layerwatch")


def snapshot_items(run: Any, key: SnapshotKey, snaps: dict | None, logs: dict | None, kinds: tuple) -> list:
    """The scalars (when ``logs`` lacks them), frames and projector vectors of snapshot ``key``."""
    items: list = []
    chosen = set(run.splits())
    if Scalar in kinds and logs is None:
        for r in run.table(METRICS_FILE, METRIC_FIELDS):
            # A snapshot is known by its step and epoch in every table (file names may lack the step).
            if r["split"] in chosen and int(r["step"]) == key.step and epoch_value(r["epoch"]) == key.epoch:
                items.append(Scalar(f"layerwatch/{r['split']}/{r['metric']}/layer_{int(r['layer'])}", float(r["value"])))
    splits = _splits(run, key, snaps)
    if Image in kinds:
        for split in splits:
            path = run.store.frame_path(split, key)
            if os.path.exists(path):
                items.append(Image(split, path, f"{split} - {key.title}"))
    if Vectors in kinds:
        for split, snap in _snapshots(run, key, snaps).items():
            items.append(_vectors(run, split, snap))
    return items


def _splits(run: Any, key: SnapshotKey, snaps: dict | None) -> list[str]:
    """The splits of a snapshot to send: those handed over, else those with its embeddings on disk."""
    if snaps is not None:
        chosen = [s for s in snaps if run.only is None or s in run.only]
        return sorted(chosen, key=lambda s: (s != run.reference_split, s))
    return [s for s in run.splits() if os.path.exists(run.store.embedding_path(s, key))]


def _snapshots(run: Any, key: SnapshotKey, snaps: dict | None) -> dict:
    """``snaps``, or the snapshot of each split read from the run directory (damaged files skipped)."""
    if snaps is not None:
        return {s: snaps[s] for s in _splits(run, key, snaps)}
    out = {}
    for split in _splits(run, key, None):
        try:
            out[split] = run.store.load_snapshot(split, key, run.label_names)
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
    return out


def _vectors(run: Any, split: str, snap: Any) -> Vectors:
    header, columns = ["label"], [run.label_texts(snap.labels)]
    predictions = run.prediction_texts(snap.predictions)
    if predictions is not None:
        header.append("prediction")
        columns.append(predictions)
    texts = run.texts(split)
    if texts:
        header.append("text")
        columns.append([run.text_of(texts.get(int(i))) for i in snap.indices])
    header.append("row")
    columns.append([str(int(i)) for i in snap.indices])
    return Vectors(split, [int(l) for l in snap.layers], snap.pooled, header, [list(row) for row in zip(*columns)])


def end_items(run: Any, kinds: tuple) -> list:
    """The films, the rows tables and ``metrics.csv``, once the run is over."""
    items: list = []
    for split in run.splits():
        gif = run.store.gif_path(split)
        if Film in kinds and os.path.exists(gif):
            items.append(Film(split, gif, f"{split}: every snapshot"))
        if Table in kinds:
            table = _rows_table(run, split)
            if table is not None:
                items.append(table)
    if File in kinds and os.path.exists(run.store.metrics_path):
        items.append(File(run.store.metrics_path))
    return items


def _rows_table(run: Any, split: str) -> Table | None:
    """The last snapshot's rows with their 2-D place in every layer (None when unreadable).

    Reads rows, labels and predictions only, so a last snapshot whose vectors were not
    kept (``keep_vectors="drift"``) still gives its table."""
    key = run.last_key(split)
    if key is None:
        return None
    try:
        snap = run.store.load_snapshot(split, key, run.label_names, pooled=False)
    except DamagedFileError as exc:
        logger.warning("layerwatch: %s", exc)
        return None
    coords: dict[str, np.ndarray] = {}
    try:
        layout = run.store.load_layout(split, key)
        for j, layer in enumerate(np.asarray(layout["layers"]).tolist()):
            if layout["layout"].shape[1] == snap.num_rows:
                coords[f"layer_{int(layer)}_x"] = layout["layout"][j, :, 0]
                coords[f"layer_{int(layer)}_y"] = layout["layout"][j, :, 1]
    except (FileNotFoundError, DamagedFileError) as exc:
        # The rows are worth a table even without their places (a layout that failed).
        logger.warning("layerwatch: the %s table of %s has no 2-D coordinates (%s)", split, key.title, exc)
    texts = run.texts(split)
    labels = run.label_texts(snap.labels)
    predictions = run.prediction_texts(snap.predictions)
    data = []
    for i in range(snap.num_rows):
        pred = predictions[i] if predictions is not None else None
        correct = None if predictions is None else bool(int(snap.predictions[i]) == int(snap.labels[i]))
        row = [int(snap.indices[i]), run.text_of(texts.get(int(snap.indices[i]))), labels[i], pred, correct]
        row.extend(float(c[i]) for c in coords.values())
        data.append(row)
    return Table(f"rows/{split}", ["row", "text", "label", "prediction", "correct", *coords], data)
