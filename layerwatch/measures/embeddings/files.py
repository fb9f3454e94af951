"""The embeddings' own files in the run directory, written and read through a
:class:`~layerwatch.store.RunStore` (numpy only, no torch):

    embeddings/<split>/<key>.npz   pooled vectors, labels, rows, predictions, epoch and step of a snapshot
    layouts/<split>/<key>.npz      the 2-D layouts drawn from them
    metrics.csv                    per split, snapshot, layer and metric: the table this measurement owns

Every function takes the run's store first, e.g. ``load_snapshot(RunStore(run_dir), "validation", key)``.
"""

from __future__ import annotations

import logging
import zipfile
from typing import Any, Iterable

import numpy as np

from ...files import DamagedFileError, VectorsNotKept
from ...snapshot import Snapshot, SnapshotKey
from ...store import METRIC_FIELDS, METRICS_FILE, RunStore

__all__ = [
    "EMBEDDINGS", "LAYOUTS", "embedding_path", "layout_path", "save_snapshot", "load_snapshot", "drop_vectors",
    "has_vectors", "save_layout", "load_layout", "write_metrics", "replace_metrics",
]

logger = logging.getLogger("layerwatch")

EMBEDDINGS = "embeddings"  # the measurement's name: its folder of arrays, and the owner of metrics.csv
LAYOUTS = "layouts"


def embedding_path(store: RunStore, split: str, key: SnapshotKey) -> str:
    return store.array_path(EMBEDDINGS, split, key)


def layout_path(store: RunStore, split: str, key: SnapshotKey) -> str:
    return store.array_path(LAYOUTS, split, key)


# -- snapshots -------------------------------------------------------------------------
def save_snapshot(store: RunStore, snap: Snapshot, key: SnapshotKey, dtype: str = "float32") -> str:
    """Store a snapshot's rows, labels, predictions and pooled vectors (``embeddings/``).

    ``dtype="float16"`` stores the vectors at half precision (they are read back as
    float32); vectors beyond float16's range are stored in float32 instead.
    """
    pooled = np.ascontiguousarray(snap.pooled, dtype=np.float32)
    if dtype == "float16":
        finite = pooled[np.isfinite(pooled)]
        if not finite.size or float(np.abs(finite).max()) <= float(np.finfo(np.float16).max):
            pooled = pooled.astype(np.float16)
        else:
            logger.warning(
                "layerwatch: %s, %s: vectors beyond float16's range (largest %.3g); stored in float32",
                snap.split, key.title, float(np.abs(finite).max()),
            )
    elif dtype != "float32":
        raise ValueError(f"dtype={dtype!r} is not one of 'float32', 'float16'")
    arrays = {
        "pooled": pooled,
        "labels": np.asarray(snap.labels),
        "layers": np.asarray(snap.layers, dtype=np.int64),
        "indices": np.asarray(snap.indices, dtype=np.int64),
        "epoch": np.float64(key.epoch),
        "step": np.int64(key.step),
    }
    if snap.predictions is not None:
        arrays["predictions"] = np.asarray(snap.predictions, dtype=np.int64)
    return store.save_arrays(EMBEDDINGS, snap.split, key, arrays)


def load_snapshot(
    store: RunStore, split: str, key: SnapshotKey, label_names: Iterable[str] | None = None, pooled: bool = True,
) -> Snapshot:
    """One split's stored snapshot (``pooled=False``: without the vectors, which is much
    cheaper for readers that need only rows, labels and predictions)."""
    z = store.load_arrays(EMBEDDINGS, split, key, skip=() if pooled else ("pooled",))
    if pooled and "pooled" not in z and "vectors_not_kept" in z:
        raise VectorsNotKept(embedding_path(store, split, key))
    missing = [k for k in (("pooled",) if pooled else ()) + ("labels", "layers", "indices") if k not in z]
    if missing:
        raise DamagedFileError(embedding_path(store, split, key), f"it lacks {missing}")
    vectors = z.get("pooled")
    if vectors is not None and vectors.dtype != np.float32:
        vectors = vectors.astype(np.float32)  # float16 stores are read back as float32
    return Snapshot(
        pooled=vectors, labels=z["labels"], layers=z["layers"], indices=z["indices"],
        predictions=z.get("predictions"), epoch=float(z.get("epoch", key.epoch)), step=int(z.get("step", key.step)),
        split=split, with_step=key.with_step, label_names=tuple(label_names) if label_names is not None else None,
    )


def drop_vectors(store: RunStore, split: str, key: SnapshotKey) -> None:
    """Rewrite a stored snapshot without its pooled vectors (``keep_vectors="drift"``),
    keeping rows, labels, predictions, epoch and step."""
    try:
        z = store.load_arrays(EMBEDDINGS, split, key, skip=("pooled",))
    except FileNotFoundError:
        return
    if "vectors_not_kept" in z:
        return
    store.save_arrays(EMBEDDINGS, split, key, {**z, "vectors_not_kept": np.array(True)})


def has_vectors(store: RunStore, split: str, key: SnapshotKey) -> bool:
    """Whether the stored snapshot still holds its pooled vectors."""
    try:
        with zipfile.ZipFile(embedding_path(store, split, key)) as zf:
            return "pooled.npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


# -- layouts ---------------------------------------------------------------------------
def save_layout(
    store: RunStore, split: str, key: SnapshotKey, layout: np.ndarray, layers: np.ndarray, method: str, aligned: bool,
    backend: str | None = None,
) -> None:
    arrays = {
        "layout": np.asarray(layout, dtype=np.float32),
        "layers": np.asarray(layers, dtype=np.int64),
        "method": np.array(method),
        "aligned": np.array(bool(aligned)),
    }
    if backend is not None:
        arrays["backend"] = np.array(backend)  # the library that drew these maps
    store.save_arrays(LAYOUTS, split, key, arrays)


def load_layout(store: RunStore, split: str, key: SnapshotKey) -> dict[str, Any]:
    z = store.load_arrays(LAYOUTS, split, key)
    if "layout" not in z or "layers" not in z:
        raise DamagedFileError(layout_path(store, split, key), "it lacks the layout or its layers")
    return z


# -- metrics.csv -----------------------------------------------------------------------
def write_metrics(store: RunStore, rows: list[dict]) -> None:
    """Write ``metrics.csv`` whole (read it with :meth:`RunStore.read_metrics`)."""
    store.write_table(METRICS_FILE, METRIC_FIELDS, rows, owner=EMBEDDINGS)


def replace_metrics(
    store: RunStore, split: str, key: SnapshotKey, new_rows: list[dict], layers: Iterable[int] | None = None,
) -> None:
    """Store ``new_rows`` for one snapshot, replacing its older rows (of ``layers`` only, when given)."""
    store.replace_rows(METRICS_FILE, METRIC_FIELDS, split, key, new_rows, layers, owner=EMBEDDINGS)
