"""The only module that writes or reads run files.

Layout of a run directory::

    run.json                                  settings, model, label names, versions
    embeddings/<split>/epoch_<EEE>[_step_<SSSSSSS>].npz   pooled vectors of a snapshot
    layouts/<split>/<same name>.npz           the 2-D layouts drawn from them
    frames/<split>/<same name>.png            one figure per snapshot
    <split>.gif                               the frames in order
    metrics.csv                               per split, epoch, layer and metric

Every file is written to a temporary name in the same folder and renamed into place, so a
crash never leaves a half-written file under a real name. Arrays are stored without
pickles and read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from .capture import Snapshot
from .config import check_split_name

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
METRIC_FIELDS = ("split", "epoch", "step", "layer", "metric", "value")
_NAME = re.compile(r"^epoch_(\d{3,})(?:_step_(\d{7,}))?$")


@dataclass(frozen=True)
class SnapshotKey:
    """When a snapshot was taken; names its files.

    Per-epoch runs name files by epoch alone (``step`` is informative); runs with
    ``every_n_steps`` carry the step in the name as well.
    """

    epoch: int
    step: int = 0
    with_step: bool = False

    @property
    def name(self) -> str:
        if self.with_step:
            return f"epoch_{self.epoch:03d}_step_{self.step:07d}"
        return f"epoch_{self.epoch:03d}"

    @property
    def title(self) -> str:
        return f"epoch {self.epoch}, step {self.step}" if self.with_step else f"epoch {self.epoch}"

    @classmethod
    def parse(cls, stem: str) -> "SnapshotKey | None":
        m = _NAME.match(stem)
        if not m:
            return None
        epoch = int(m.group(1))
        if m.group(2) is None:
            return cls(epoch=epoch)
        return cls(epoch=epoch, step=int(m.group(2)), with_step=True)


def _file_mode() -> int:
    # mkstemp makes owner-only files; give run files the mode a plain open() would.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


def atomic_write(path: str, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write ``path`` through ``write(fh)`` on a temporary file, then rename it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        os.chmod(tmp, _MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


class RunStore:
    """Paths and file access of one run directory."""

    def __init__(self, root: str):
        self.root = os.fspath(root)

    # paths -----------------------------------------------------------------
    def _path(self, kind: str, split: str, key: SnapshotKey, ext: str) -> str:
        return os.path.join(self.root, kind, check_split_name(split), key.name + ext)

    def embedding_path(self, split: str, key: SnapshotKey) -> str:
        return self._path("embeddings", split, key, ".npz")

    def layout_path(self, split: str, key: SnapshotKey) -> str:
        return self._path("layouts", split, key, ".npz")

    def frame_path(self, split: str, key: SnapshotKey) -> str:
        return self._path("frames", split, key, ".png")

    def gif_path(self, split: str) -> str:
        return os.path.join(self.root, check_split_name(split) + ".gif")

    @property
    def run_path(self) -> str:
        return os.path.join(self.root, RUN_FILE)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.root, METRICS_FILE)

    # listing ---------------------------------------------------------------
    def splits(self) -> list[str]:
        folder = os.path.join(self.root, "embeddings")
        if not os.path.isdir(folder):
            return []
        return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))

    def keys(self, split: str, kind: str = "embeddings") -> list[SnapshotKey]:
        """The snapshots of ``split`` that are complete on disk, in training order."""
        folder = os.path.join(self.root, kind, check_split_name(split))
        if not os.path.isdir(folder):
            return []
        ext = ".png" if kind == "frames" else ".npz"
        keys = []
        for f in os.listdir(folder):
            stem, e = os.path.splitext(f)
            key = SnapshotKey.parse(stem) if e == ext else None
            if key is not None:  # temporary files (".tmp-*") never parse
                keys.append(key)
        return sorted(keys, key=lambda k: (k.epoch, k.step) if not k.with_step else (k.step, k.epoch))

    # snapshots -------------------------------------------------------------
    def save_snapshot(self, snap: Snapshot, key: SnapshotKey) -> str:
        path = self.embedding_path(snap.split, key)
        arrays = {
            "pooled": np.ascontiguousarray(snap.pooled, dtype=np.float32),
            "labels": np.asarray(snap.labels),
            "layers": np.asarray(snap.layers, dtype=np.int64),
            "indices": np.asarray(snap.indices, dtype=np.int64),
            "epoch": np.int64(key.epoch),
            "step": np.int64(key.step),
        }
        if snap.predictions is not None:
            arrays["predictions"] = np.asarray(snap.predictions, dtype=np.int64)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    def load_snapshot(self, split: str, key: SnapshotKey, label_names: Iterable[str] | None = None) -> Snapshot:
        with np.load(self.embedding_path(split, key), allow_pickle=False) as z:
            return Snapshot(
                pooled=z["pooled"],
                labels=z["labels"],
                layers=z["layers"],
                indices=z["indices"],
                predictions=z["predictions"] if "predictions" in z.files else None,
                epoch=int(z["epoch"]),
                step=int(z["step"]),
                split=split,
                label_names=tuple(label_names) if label_names is not None else None,
            )

    # layouts ---------------------------------------------------------------
    def save_layout(self, split: str, key: SnapshotKey, layout: np.ndarray, layers: np.ndarray, method: str, aligned: bool) -> None:
        arrays = {
            "layout": np.asarray(layout, dtype=np.float32),
            "layers": np.asarray(layers, dtype=np.int64),
            "method": np.array(method),
            "aligned": np.array(bool(aligned)),
        }
        atomic_write(self.layout_path(split, key), lambda fh: np.savez(fh, **arrays))

    def load_layout(self, split: str, key: SnapshotKey) -> dict:
        with np.load(self.layout_path(split, key), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # run.json --------------------------------------------------------------
    def write_run(self, info: dict) -> None:
        atomic_write_text(self.run_path, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")

    def read_run(self) -> dict:
        if not os.path.exists(self.run_path):
            raise FileNotFoundError(
                f"{self.root!r} is not a layerwatch run directory (no {RUN_FILE}); "
                "pass the output_dir that LayerwatchCallback wrote"
            )
        with open(self.run_path, encoding="utf-8") as fh:
            return json.load(fh)

    # metrics ---------------------------------------------------------------
    def read_metrics(self) -> list[dict]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            r["epoch"], r["step"], r["layer"] = int(r["epoch"]), int(r["step"]), int(r["layer"])
            r["value"] = float(r["value"])
        return rows

    def write_metrics(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in sorted(rows, key=lambda r: (r["split"], r["step"], r["epoch"], r["layer"], r["metric"])):
            writer.writerow({k: r[k] for k in METRIC_FIELDS})
        atomic_write_text(self.metrics_path, buf.getvalue())

    def replace_metrics(self, split: str, key: SnapshotKey, new_rows: list[dict]) -> None:
        """Store ``new_rows`` for one snapshot, replacing any older rows of it."""
        def same(r: dict) -> bool:
            return r["split"] == split and SnapshotKey(r["epoch"], r["step"], key.with_step).name == key.name

        rows = [r for r in self.read_metrics() if not same(r)]
        self.write_metrics(rows + new_rows)
