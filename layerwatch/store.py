"""The run's files: where each goes, arrays, tables, texts and ``run.json``.

Layout of a run directory::

    run.json                                  settings, model, label vocabulary, versions
    embeddings/<split>/<key>.npz              pooled vectors, labels, rows and predictions of a snapshot
    layouts/<split>/<key>.npz                 the 2-D layouts drawn from them
    frames/<split>/<key>.png                  one figure per snapshot
    <split>.gif                               the frames in order
    metrics.csv                               per split, snapshot, layer and metric (the embeddings' table)
    texts/<split>.json                        the monitored rows' texts (when known)
    .layerwatch-files                         every file layerwatch wrote here (for overwrite=True)
    .layerwatch-tables                        which measurement owns each table

``<key>`` is :attr:`SnapshotKey.name` (``epoch_002``, or ``epoch_002_step_0000009`` inside an
epoch); measurements add folders and tables of their own through the same methods (the
embeddings' own formats are in :mod:`layerwatch.measures.embeddings.files`).

Every run file is written through :class:`RunStore`: atomically (:mod:`layerwatch.files`),
only inside the run directory (a symbolic link that leads out of it is refused), and
recorded in the run directory's manifest (:mod:`layerwatch.rundir`). Arrays are stored
without pickles and read back with ``allow_pickle=False``; a damaged file is reported by
name (:class:`DamagedFileError`), never taken for a whole one. A table belongs to the
measurement that first writes it: another one is refused (:class:`TableOwnerError`),
and a measurement replaces only rows of its own table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
import zipfile
from typing import Iterable, Sequence

import numpy as np

from .config import check_split_name, is_split_name
from .files import (
    DamagedFileError, RunDirectoryInUse, VectorsNotKept, atomic_write, atomic_write_text, check_inside, encode_text,
    table_text,
)
from .rundir import RunDirectory
from .snapshot import Snapshot, SnapshotKey, epoch_value, sort_keys
from .text import clean_text

__all__ = [
    "RunStore", "Snapshot", "SnapshotKey", "DamagedFileError", "VectorsNotKept", "RunDirectoryInUse", "TableOwnerError",
    "atomic_write", "atomic_write_text", "encode_text", "RUN_FILE", "METRICS_FILE", "METRIC_FIELDS",
]

logger = logging.getLogger("layerwatch")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
TABLES_FILE = ".layerwatch-tables"
RUN_FORMAT = "layerwatch-run"
METRIC_FIELDS = ("split", "epoch", "step", "layer", "metric", "value")


class TableOwnerError(ValueError):
    """A measurement wrote a table that another measurement owns."""


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class RunStore:
    """The files of one run directory: paths, arrays, tables, texts and ``run.json``.

    ``directory`` (:class:`~layerwatch.rundir.RunDirectory`) keeps the manifest of what was
    written, the lock and the claim; the lifecycle of the folder (``holds_run``,
    ``remove_run``, ``supersede``) is in :mod:`layerwatch.rundir`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.directory = RunDirectory(self.root)

    # -- paths -------------------------------------------------------------------
    def array_path(self, kind: str, split: str, key: SnapshotKey, ext: str = ".npz") -> str:
        return os.path.join(self.root, kind, check_split_name(split), key.name + ext)

    def frame_path(self, split: str, key: SnapshotKey) -> str:
        return self.array_path("frames", split, key, ".png")

    def gif_path(self, split: str) -> str:
        return os.path.join(self.root, check_split_name(split) + ".gif")

    def file_path(self, name: str) -> str:
        """A file directly in the run directory (``metrics_knn_accuracy.png``, ``report.html``)."""
        if os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"{name!r} is not a plain file name")
        return os.path.join(self.root, name)

    def table_path(self, name: str) -> str:
        return self.file_path(name)

    @property
    def run_path(self) -> str:
        return os.path.join(self.root, RUN_FILE)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.root, METRICS_FILE)

    # -- writing -----------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> str:
        """Write ``data`` to ``path`` (inside the run directory) atomically and record it."""
        check_inside(self.root, path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        check_inside(self.root, path)  # the folders now exist; check them resolved
        self.directory.record(path)
        atomic_write(path, lambda fh: fh.write(data))
        return path

    def write_text(self, path: str, text: str) -> str:
        return self.write_bytes(path, encode_text(text, path))

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The run directory's lock (:meth:`RunDirectory.lock <layerwatch.rundir.RunDirectory.lock>`):
        writers of files that several processes rewrite hold it."""
        return self.directory.lock()

    # -- arrays ------------------------------------------------------------------
    def save_arrays(self, kind: str, split: str, key: SnapshotKey, arrays: dict[str, np.ndarray]) -> str:
        """Store one snapshot's arrays of a measurement as ``<kind>/<split>/<key>.npz``."""
        path = self.array_path(kind, split, key)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self.write_bytes(path, buf.getvalue())

    def load_arrays(self, kind: str, split: str, key: SnapshotKey, skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Read ``<kind>/<split>/<key>.npz`` (but the arrays named in ``skip``); raises
        :class:`DamagedFileError` naming a bad file."""
        path = self.array_path(kind, split, key)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files if k not in skip}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise DamagedFileError(path, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None

    def snapshot_key(self, split: str, key: SnapshotKey) -> SnapshotKey:
        """``key`` with the epoch and step stored in its embeddings file (names may lack the step)."""
        z = self.load_arrays("embeddings", split, key, skip=("pooled",))
        return key.named_like(float(z.get("epoch", key.epoch)), int(z.get("step", key.step)))

    # -- listing -----------------------------------------------------------------
    def splits(self, kind: str = "embeddings") -> list[str]:
        """The splits with a folder under ``kind`` (folders that are no split name, such as
        ``.ipynb_checkpoints``, are ignored)."""
        folder = os.path.join(self.root, kind)
        if not os.path.isdir(folder):
            return []
        return sorted(d for d in os.listdir(folder) if is_split_name(d) and os.path.isdir(os.path.join(folder, d)))

    def keys(self, split: str, kind: str = "embeddings", ext: str | None = None) -> list[SnapshotKey]:
        """The snapshots of ``split`` that are complete on disk under ``kind``, in training order.

        ``ext``: the files' extension; by default ``.png`` for folders of frames
        (``frames``, ``attention_frames``, ...) and ``.npz`` for arrays.
        """
        folder = os.path.join(self.root, kind, check_split_name(split))
        if not os.path.isdir(folder):
            return []
        if ext is None:
            ext = ".png" if kind.endswith("frames") else ".npz"
        keys = []
        for f in os.listdir(folder):
            stem, e = os.path.splitext(f)
            key = SnapshotKey.parse(stem) if e == ext else None
            if key is not None:  # temporary files (".tmp-*") never parse
                keys.append(key)
        return sort_keys(keys)

    # -- texts -------------------------------------------------------------------
    def save_texts(self, split: str, indices: Sequence[int], texts: Sequence[str]) -> None:
        """The monitored rows' texts, once per split (``texts/<split>.json``)."""
        data = {"indices": [int(i) for i in indices], "texts": [clean_text(t) for t in texts]}
        path = os.path.join(self.root, "texts", check_split_name(split) + ".json")
        self.write_text(path, json.dumps(data, ensure_ascii=False) + "\n")

    def remove_texts(self, split: str) -> bool:
        """Remove ``texts/<split>.json`` (a run resumed with ``report_text=False``); True if it was there."""
        path = os.path.join(self.root, "texts", check_split_name(split) + ".json")
        if os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            return True
        return False

    def load_texts(self, split: str) -> dict[int, str]:
        """``{dataset row: text}`` of ``split`` (empty when no texts were stored)."""
        path = os.path.join(self.root, "texts", check_split_name(split) + ".json")
        if not os.path.exists(path):
            return {}
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except ValueError as exc:
            raise DamagedFileError(path, f"not valid JSON: {exc}") from None
        indices = data.get("indices") if isinstance(data, dict) else None
        texts = data.get("texts") if isinstance(data, dict) else None
        if not isinstance(indices, list) or not isinstance(texts, list) or len(indices) != len(texts):
            raise DamagedFileError(path, "it must hold {'indices': [...], 'texts': [...]} of equal length; delete it")
        return {int(i): str(t) for i, t in zip(indices, texts)}

    # -- tables ------------------------------------------------------------------
    def read_table(self, name: str, required: Sequence[str] = ()) -> list[dict]:
        """Rows of a CSV table written by :meth:`replace_rows`; ``epoch``, ``step``, ``layer``,
        ``head`` and ``value`` come back as numbers.

        Raises :class:`DamagedFileError` for a table that cannot be read whole: a header
        without the ``required`` columns (garbled), a row cut short (truncated), a cell
        that is no number where one belongs.
        """
        path = self.table_path(name)
        if not os.path.exists(path):
            return []
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                rows = list(reader)
                header = reader.fieldnames or []
            absent = [c for c in required if c not in header]
            if absent:
                raise DamagedFileError(path, f"its header {header} lacks the column(s) {absent}")
            for r in rows:
                if None in r.values() or None in r:
                    raise DamagedFileError(path, f"a row does not have the {len(header)} columns of the header (cut short?)")
            for r in rows:
                for col in ("epoch", "step", "layer", "head", "value"):
                    if col in r:
                        r[col] = float(r[col]) if col == "value" else _number(r[col])
        except DamagedFileError:
            raise
        except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
            raise DamagedFileError(path, f"{type(exc).__name__}: {exc}") from None
        return rows

    def table_owners(self) -> dict[str, str]:
        """``{table: measurement}``: which measurement owns each table written so far."""
        path = os.path.join(self.root, TABLES_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                owners = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DamagedFileError(path, f"{type(exc).__name__}: {exc}") from None
        if not isinstance(owners, dict) or not all(isinstance(v, str) for v in owners.values()):
            raise DamagedFileError(path, "it must hold {table: measurement}")
        return owners

    def _own_table(self, name: str, owner: str) -> None:
        """Record ``owner`` as the measurement that writes table ``name``; a table that another
        measurement owns is refused (its rows would be replaced by rows of another kind)."""
        if not isinstance(owner, str) or not owner:
            raise ValueError(f"owner={owner!r} is not a measurement's name; pass owner=self.name to write {name}")
        self.table_path(name)  # a plain file name, or a ValueError
        with self.lock():
            try:
                owners = self.table_owners()
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s; the owners of the tables are recorded anew", exc)
                owners = {}
            held = owners.get(name)
            if held == owner:
                return
            if held is not None:
                raise TableOwnerError(
                    f"{name} is the table of the measurement {held!r}; the measurement {owner!r} cannot write it "
                    f"too (its rows would replace those of {held!r}): give {owner!r} a table of its own, such as '{owner}.csv'"
                )
            self.write_text(os.path.join(self.root, TABLES_FILE), json.dumps({**owners, name: owner}, indent=1) + "\n")

    def write_table(self, name: str, fields: Sequence[str], rows: list[dict], *, owner: str) -> None:
        """Write the whole table ``name`` of the measurement ``owner`` (see :meth:`replace_rows`)."""
        with self.lock():
            self._own_table(name, owner)
            self.write_text(self.table_path(name), table_text(fields, rows))

    def replace_rows(
        self, name: str, fields: Sequence[str], split: str, key: SnapshotKey, rows: list[dict],
        layers: Iterable[int] | None = None, *, owner: str,
    ) -> None:
        """Store ``rows`` of one split and snapshot in the table ``name`` of the measurement
        ``owner``, replacing its older rows of them (of ``layers`` only, when given).

        A table belongs to the measurement that first writes it (recorded in
        ``.layerwatch-tables``): a second measurement writing it gets a
        :class:`TableOwnerError` naming both, so no measurement ever replaces the rows of
        another. Rows of other splits, snapshots or layers are left as they are.
        """
        keep_layers = None if layers is None else {int(l) for l in layers}

        def replaced(r: dict) -> bool:
            # A snapshot is known by its step and epoch in every table (file names may lack the step).
            if r["split"] != split or int(r["step"]) != key.step or epoch_value(r["epoch"]) != key.epoch:
                return False
            return keep_layers is None or int(r["layer"]) in keep_layers

        with self.lock():
            self._own_table(name, owner)
            old = []
            try:
                old = self.read_table(name)
            except DamagedFileError as exc:
                # Kept beside the new table, never overwritten: it may still be read by hand.
                aside = f"{exc.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(exc.path, aside)
                logger.warning("layerwatch: %s; it was moved to %s and the table is written anew", exc, aside)
            self.write_text(self.table_path(name), table_text(fields, [r for r in old if not replaced(r)] + list(rows)))

    def read_metrics(self) -> list[dict]:
        """The embeddings' table, ``metrics.csv`` (per split, snapshot, layer and metric)."""
        return self.read_table(METRICS_FILE, METRIC_FIELDS)

    # -- run.json ----------------------------------------------------------------
    def write_run(self, info: dict) -> None:
        info = {**info, "format": RUN_FORMAT}
        self.write_text(self.run_path, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")

    def read_run(self) -> dict:
        """The run's ``run.json``.

        Raises:
            FileNotFoundError: the folder holds no run (no ``run.json``).
            ValueError: ``run.json`` was not written by layerwatch, or is damaged.
        """
        if not os.path.exists(self.run_path):
            raise FileNotFoundError(
                f"{self.root!r} is not a layerwatch run directory (no {RUN_FILE}); "
                "pass the output_dir that LayerwatchCallback wrote"
            )
        try:
            with open(self.run_path, encoding="utf-8") as fh:
                info = json.load(fh)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DamagedFileError(self.run_path, f"{type(exc).__name__}: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise ValueError(
                f"{self.run_path} was not written by layerwatch; {self.root!r} is not a layerwatch run directory"
            )
        return info

    def foreign_run_file(self) -> bool:
        """Whether a ``run.json`` that layerwatch did not write is in the way."""
        if not os.path.exists(self.run_path):
            return False
        try:
            self.read_run()
        except DamagedFileError:
            return False
        except ValueError:
            return True
        return False

