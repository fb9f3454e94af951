"""The only module that writes or reads run files, and the run directory's lifecycle.

Layout of a run directory::

    run.json                                  settings, model, label vocabulary, versions
    embeddings/<split>/<key>.npz              pooled vectors, labels, rows and predictions of a snapshot
    layouts/<split>/<key>.npz                 the 2-D layouts drawn from them
    frames/<split>/<key>.png                  one figure per snapshot
    <split>.gif                               the frames in order
    metrics.csv                               per split, snapshot, layer and metric
    texts/<split>.json                        the monitored rows' texts (when known)
    .layerwatch-files                         every file layerwatch wrote here (for overwrite=True)

``<key>`` is :attr:`SnapshotKey.name` (``epoch_002``, or ``epoch_002_step_0000009`` inside an
epoch); measurements may add folders and tables of their own through the same methods.

Every file is written to a temporary name (``.tmp-<host>-<pid>-...``) in the same folder
and renamed into place, so a crash never leaves a half-written file under a real name;
temporary files of processes that died are removed at the next start or render. Arrays
are stored without pickles and read back with ``allow_pickle=False``; a damaged file is
reported by name (:class:`DamagedFileError`), never taken for a whole one. Files are only
written inside the run directory: a symbolic link that leads out of it is refused.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import zipfile
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .config import check_split_name, is_split_name
from .snapshot import Snapshot, SnapshotKey, epoch_value, sort_keys
from .text import clean_text

__all__ = [
    "DamagedFileError", "RunDirectoryInUse", "RunStore", "Snapshot", "SnapshotKey", "atomic_write", "atomic_write_text",
    "RUN_FILE", "METRICS_FILE",
]

logger = logging.getLogger("layerwatch")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
MANIFEST_FILE = ".layerwatch-files"
LOCK_FILE = ".layerwatch-lock"
OWNER_FILE = ".layerwatch-owner"
SUPERSEDED = "superseded"
RUN_FORMAT = "layerwatch-run"
METRIC_FIELDS = ("split", "epoch", "step", "layer", "metric", "value")

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TMP = re.compile(r"^\.tmp-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?")
# Temporary files whose writer cannot be told alive or dead (another machine, an older
# layout of the name) are removed once they are this old.
_STALE_SECONDS = 6 * 3600


class DamagedFileError(ValueError):
    """A run file that exists but cannot be read (truncated, empty, not what it should be)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path} is damaged ({reason}); it is skipped (delete it, or rerun to write it again)")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (DamagedFileError, (self.path, self.reason))


class RunDirectoryInUse(ValueError):
    """Another run that is still going holds the run directory (see :meth:`RunStore.claim`)."""


# The run directories this process holds, by real path: a run of this process that never
# finished (a notebook cell whose training raised) gives its folder up to the next one.
_CLAIMS: dict[str, Any] = {}


class VectorsNotKept(DamagedFileError):
    """A snapshot whose pooled vectors were not kept (``keep_vectors="drift"``); its
    rows, labels, predictions, layout, metrics and frames are there."""

    def __init__(self, path: str, reason: str = "keep_vectors='drift'"):
        ValueError.__init__(
            self,
            f"{path} holds no pooled vectors: the run kept those of its first and latest snapshots only "
            f"({reason}); what needs them skips this snapshot (its layouts, metrics and frames are stored)",
        )
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (VectorsNotKept, (self.path, self.reason))


def _tmp_name(ext: str) -> str:
    return f".tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{ext}"


def atomic_write(path: str, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through ``write(fh)`` on a temporary file, then rename it into place.

    The temporary file is created with the mode a plain ``open()`` would give (the
    process's umask applies), so run files are readable as usual.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, _tmp_name(os.path.splitext(path)[1]))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
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


def encode_text(text: str, path: str = "") -> bytes:
    """``text`` as UTF-8; what UTF-8 cannot encode (lone surrogates) becomes U+FFFD, with a
    warning, rather than failing the write (see :mod:`layerwatch.text`)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning(
            "layerwatch: %s holds characters UTF-8 cannot encode (lone surrogates); written with U+FFFD in their place",
            path or "a text file",
        )
        return clean_text(text).encode("utf-8")


def atomic_write_text(path: str, text: str) -> None:
    data = encode_text(text, path)
    atomic_write(path, lambda fh: fh.write(data))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _check_signature(path: str, signatures: tuple[bytes, ...], kind: str) -> None:
    """A :class:`DamagedFileError` for a file that is empty or does not start as a ``kind`` file does."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise DamagedFileError(path, "an empty file")
    if not any(head.startswith(sig) for sig in signatures):
        raise DamagedFileError(path, f"not a {kind} file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class RunStore:
    """Paths, files and lifecycle of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self._recorded: set[str] = set()
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fh = None
        self._claim_fh = None

    # -- paths -------------------------------------------------------------------
    def array_path(self, kind: str, split: str, key: SnapshotKey, ext: str = ".npz") -> str:
        return os.path.join(self.root, kind, check_split_name(split), key.name + ext)

    def embedding_path(self, split: str, key: SnapshotKey) -> str:
        return self.array_path("embeddings", split, key)

    def layout_path(self, split: str, key: SnapshotKey) -> str:
        return self.array_path("layouts", split, key)

    def frame_path(self, split: str, key: SnapshotKey) -> str:
        return self.array_path("frames", split, key, ".png")

    def gif_path(self, split: str) -> str:
        return os.path.join(self.root, check_split_name(split) + ".gif")

    def file_path(self, name: str) -> str:
        """A file directly in the run directory (``metrics_knn_accuracy.png``, ``report.html``)."""
        if os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"{name!r} is not a plain file name")
        return os.path.join(self.root, name)

    @property
    def run_path(self) -> str:
        return os.path.join(self.root, RUN_FILE)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.root, METRICS_FILE)

    def _inside(self, path: str) -> str:
        """``path`` if writing it stays inside the run directory, else a ValueError.

        Folders on the way are resolved, so a symbolic link (``frames/train -> /elsewhere``)
        cannot steer a write out of the run directory.
        """
        root = os.path.realpath(self.root)
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        if folder != root and not folder.startswith(root + os.sep):
            raise ValueError(
                f"refusing to write {path}: it leads out of the run directory {self.root} (through a symbolic "
                "link?); remove the link or render into a plain folder"
            )
        if os.path.islink(path):
            raise ValueError(f"refusing to write {path}: it is a symbolic link; remove it first")
        return path

    # -- writing -----------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> str:
        """Write ``data`` to ``path`` (inside the run directory) atomically and record it."""
        self._inside(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._inside(path)  # the folders now exist; check them resolved
        self._record(path)
        atomic_write(path, lambda fh: fh.write(data))
        return path

    def write_text(self, path: str, text: str) -> str:
        return self.write_bytes(path, encode_text(text, path))

    def _record(self, path: str) -> None:
        """Note ``path`` in the manifest of files layerwatch wrote (``overwrite`` removes these)."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root)).replace(os.sep, "/")
        if rel in self._recorded or rel == MANIFEST_FILE:
            return
        os.makedirs(self.root, exist_ok=True)
        # One short line appended with O_APPEND: several writers (the training process, a
        # background worker, `layerwatch render`) may record at once without losing lines.
        with open(os.path.join(self.root, MANIFEST_FILE), "a", encoding="utf-8") as fh:
            fh.write(rel + "\n")
        self._recorded.add(rel)

    def save_arrays(self, kind: str, split: str, key: SnapshotKey, arrays: dict[str, np.ndarray]) -> str:
        """Store one snapshot's arrays of a measurement as ``<kind>/<split>/<key>.npz``."""
        path = self.array_path(kind, split, key)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self.write_bytes(path, buf.getvalue())

    def load_arrays(
        self, kind: str, split: str, key: SnapshotKey, path: str | None = None, skip: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Read ``<kind>/<split>/<key>.npz`` (but the arrays named in ``skip``); raises
        :class:`DamagedFileError` naming a bad file."""
        path = path or self.array_path(kind, split, key)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files if k not in skip}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise DamagedFileError(path, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None

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

    # -- snapshots ---------------------------------------------------------------
    def save_snapshot(self, snap: Snapshot, key: SnapshotKey, dtype: str = "float32") -> str:
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
        return self.save_arrays("embeddings", snap.split, key, arrays)

    def load_snapshot(
        self, split: str, key: SnapshotKey, label_names: Iterable[str] | None = None, pooled: bool = True,
    ) -> Snapshot:
        """One split's stored snapshot (``pooled=False``: without the vectors, which is much
        cheaper for readers that need only rows, labels and predictions)."""
        z = self.load_arrays("embeddings", split, key, skip=() if pooled else ("pooled",))
        if pooled and "pooled" not in z and "vectors_not_kept" in z:
            raise VectorsNotKept(self.embedding_path(split, key))
        missing = [k for k in (("pooled",) if pooled else ()) + ("labels", "layers", "indices") if k not in z]
        if missing:
            raise DamagedFileError(self.embedding_path(split, key), f"it lacks {missing}")
        vectors = z.get("pooled")
        if vectors is not None and vectors.dtype != np.float32:
            vectors = vectors.astype(np.float32)  # float16 stores are read back as float32
        return Snapshot(
            pooled=vectors, labels=z["labels"], layers=z["layers"], indices=z["indices"],
            predictions=z.get("predictions"), epoch=float(z.get("epoch", key.epoch)), step=int(z.get("step", key.step)),
            split=split, with_step=key.with_step, label_names=tuple(label_names) if label_names is not None else None,
        )

    def drop_vectors(self, split: str, key: SnapshotKey) -> None:
        """Rewrite a stored snapshot without its pooled vectors (``keep_vectors="drift"``),
        keeping rows, labels, predictions, epoch and step."""
        try:
            z = self.load_arrays("embeddings", split, key, skip=("pooled",))
        except FileNotFoundError:
            return
        if "vectors_not_kept" in z:
            return
        self.save_arrays("embeddings", split, key, {**z, "vectors_not_kept": np.array(True)})

    def has_vectors(self, split: str, key: SnapshotKey) -> bool:
        """Whether the stored snapshot still holds its pooled vectors."""
        path = self.embedding_path(split, key)
        try:
            with zipfile.ZipFile(path) as zf:
                return "pooled.npy" in zf.namelist()
        except (OSError, zipfile.BadZipFile):
            return False

    def snapshot_key(self, split: str, key: SnapshotKey) -> SnapshotKey:
        """``key`` with the epoch and step stored in its embeddings file (names may lack the step)."""
        z = self.load_arrays("embeddings", split, key, skip=("pooled",))
        return key.named_like(float(z.get("epoch", key.epoch)), int(z.get("step", key.step)))

    def save_layout(
        self, split: str, key: SnapshotKey, layout: np.ndarray, layers: np.ndarray, method: str, aligned: bool,
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
        self.save_arrays("layouts", split, key, arrays)

    def load_layout(self, split: str, key: SnapshotKey) -> dict:
        z = self.load_arrays("layouts", split, key)
        if "layout" not in z or "layers" not in z:
            raise DamagedFileError(self.layout_path(split, key), "it lacks the layout or its layers")
        return z

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
    def table_path(self, name: str) -> str:
        return self.file_path(name)

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

    def write_table(self, name: str, fields: Sequence[str], rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        order = [f for f in ("split", "step", "epoch", "layer", "head", "metric", "stat") if f in fields]
        for r in sorted(rows, key=lambda r: tuple(str(r[f]) if f in ("split", "metric", "stat") else float(r[f]) for f in order)):
            writer.writerow({k: (epoch_value(r[k]) if k == "epoch" else r[k]) for k in fields})
        self.write_text(self.table_path(name), buf.getvalue())

    def replace_rows(
        self, name: str, fields: Sequence[str], split: str, key: SnapshotKey, rows: list[dict],
        layers: Iterable[int] | None = None,
    ) -> None:
        """Store ``rows`` of one split and snapshot, replacing its older rows (of ``layers`` only, when given).

        Rows of other splits, snapshots or layers are left as they are.
        """
        keep_layers = None if layers is None else {int(l) for l in layers}

        def replaced(r: dict) -> bool:
            # A snapshot is known by its step and epoch in every table (file names may lack the step).
            if r["split"] != split or int(r["step"]) != key.step or epoch_value(r["epoch"]) != key.epoch:
                return False
            return keep_layers is None or int(r["layer"]) in keep_layers

        with self.lock():
            old = []
            try:
                old = self.read_table(name)
            except DamagedFileError as exc:
                # Kept beside the new table, never overwritten: it may still be read by hand.
                aside = f"{exc.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(exc.path, aside)
                logger.warning("layerwatch: %s; it was moved to %s and the table is written anew", exc, aside)
            self.write_table(name, fields, [r for r in old if not replaced(r)] + list(rows))

    def read_metrics(self) -> list[dict]:
        return self.read_table(METRICS_FILE, METRIC_FIELDS)

    # -- pictures ----------------------------------------------------------------
    def read_image(self, path: str) -> np.ndarray:
        """A frame PNG as an RGB array; raises :class:`DamagedFileError` naming a file that
        cannot be read (empty, truncated, not a picture)."""
        import imageio.v3 as iio

        _check_signature(path, (b"\x89PNG\r\n\x1a\n",), "PNG")
        try:
            img = iio.imread(path, extension=".png")
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=-1)
            return img[..., :3]
        except FileNotFoundError:
            raise
        except Exception as exc:  # imageio raises many kinds for a bad file
            raise DamagedFileError(path, f"not a readable PNG: {_first_line(exc)}") from None

    def check_gif(self, path: str) -> int:
        """The number of frames of a GIF; raises :class:`DamagedFileError` for one that cannot be read."""
        import imageio.v3 as iio

        _check_signature(path, (b"GIF87a", b"GIF89a"), "GIF")
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b";":  # every whole GIF ends with its trailer byte
                raise DamagedFileError(path, "a GIF cut short (no trailer)")
        try:
            frames = iio.improps(path, index=None, extension=".gif").shape[0]
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise DamagedFileError(path, f"not a readable GIF: {_first_line(exc)}") from None
        if frames < 1:
            raise DamagedFileError(path, "a GIF without frames")
        return int(frames)

    def write_metrics(self, rows: list[dict]) -> None:
        self.write_table(METRICS_FILE, METRIC_FIELDS, rows)

    def replace_metrics(self, split: str, key: SnapshotKey, new_rows: list[dict], layers: Iterable[int] | None = None) -> None:
        """Store ``new_rows`` for one snapshot, replacing its older rows (of ``layers`` only, when given)."""
        self.replace_rows(METRICS_FILE, METRIC_FIELDS, split, key, new_rows, layers)

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

    # -- lifecycle ---------------------------------------------------------------
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

    def holds_run(self) -> bool:
        """Whether the folder holds a layerwatch run, or files of one (even without run.json)."""
        if os.path.exists(self.run_path) and not self.foreign_run_file():
            return True
        if self._manifest_lists_files():
            return True
        return any(self.keys(split) for split in self.splits())

    def _manifest_lists_files(self) -> bool:
        """Whether the manifest names a file other than the lock (taken before anything is written)."""
        try:
            with open(os.path.join(self.root, MANIFEST_FILE), encoding="utf-8", errors="replace") as fh:
                return any(line.strip() not in ("", LOCK_FILE) for line in fh)
        except OSError:
            return False

    def owned_files(self) -> list[str]:
        """Every file layerwatch wrote here, as absolute paths (from the manifest, or, for a
        folder without one, the files of its own naming)."""
        root = os.path.abspath(self.root)
        manifest = os.path.join(root, MANIFEST_FILE)
        paths: set[str] = set()
        if self._manifest_lists_files():
            with open(manifest, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    rel = line.strip()
                    if not rel or rel.startswith("/") or ".." in rel.split("/"):
                        continue
                    paths.add(os.path.join(root, *rel.split("/")))
        else:
            for split in self.splits():
                for kind, ext in (("embeddings", ".npz"), ("layouts", ".npz"), ("frames", ".png")):
                    for key in self.keys(split, kind):
                        paths.add(self.array_path(kind, split, key, ext))
                paths.add(self.gif_path(split))
            if os.path.exists(self.run_path) and not self.foreign_run_file():
                paths.add(self.run_path)
        paths.add(manifest)
        paths.add(os.path.join(root, LOCK_FILE))
        return sorted(p for p in paths if os.path.lexists(p))

    def remove_run(self) -> int:
        """Remove every file layerwatch wrote here, and the folders it leaves empty.

        Files the user put in the folder (their own GIFs, notes, another tool's files) stay.
        Returns the number of files removed.
        """
        root = os.path.realpath(self.root)
        removed = 0
        folders: set[str] = set()
        for path in self.owned_files():
            real = os.path.realpath(os.path.dirname(path))
            if real != root and not real.startswith(root + os.sep):
                continue  # never follow a link out of the run directory
            if os.path.isfile(path) or os.path.islink(path):
                os.remove(path)
                removed += 1
                folders.add(os.path.dirname(path))
        for folder in sorted(folders, key=len, reverse=True):
            while os.path.realpath(folder).startswith(root + os.sep):
                try:
                    os.rmdir(folder)
                except OSError:
                    break
                folder = os.path.dirname(folder)
        self._recorded.clear()
        return removed

    def clean_temporary(self) -> int:
        """Remove temporary files left by writers that died (a kill mid-write); returns how many."""
        removed = 0
        if not os.path.isdir(self.root):
            return 0
        now = time.time()
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for f in files:
                m = _TMP.match(f)
                if not m:
                    continue
                path = os.path.join(folder, f)
                try:
                    age = now - os.path.getmtime(path)
                except OSError:
                    continue
                if m.group("host") == _HOST and m.group("pid"):
                    dead = not _pid_alive(int(m.group("pid")))
                else:
                    dead = age > _STALE_SECONDS
                if dead:
                    try:
                        os.remove(path)
                        removed += 1
                    except OSError:
                        pass
        if removed:
            logger.info("layerwatch: removed %d temporary file(s) left by a run that was killed", removed)
        return removed

    def snapshot_files(self) -> Iterator[tuple[str, str, SnapshotKey, str]]:
        """``(kind, split, key, path)`` of every per-snapshot file, whatever measurement wrote it."""
        if not os.path.isdir(self.root):
            return
        for kind in sorted(os.listdir(self.root)):
            base = os.path.join(self.root, kind)
            if kind == SUPERSEDED or kind.startswith(".") or not os.path.isdir(base) or os.path.islink(base):
                continue
            for split in sorted(os.listdir(base)):
                folder = os.path.join(base, split)
                if not is_split_name(split) or not os.path.isdir(folder):
                    continue
                for f in sorted(os.listdir(folder)):
                    stem, _ = os.path.splitext(f)
                    key = SnapshotKey.parse(stem)
                    if key is not None:
                        yield kind, split, key, os.path.join(folder, f)

    def _keyed_files(self) -> Iterator[tuple[str, SnapshotKey]]:
        """``(path, key)`` of every file layerwatch wrote whose name is a snapshot key, in any
        folder of the run directory (``superseded/``, hidden folders and links excepted)."""
        if not os.path.isdir(self.root):
            return
        owned = set(self.owned_files()) if self._manifest_lists_files() else None
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(
                d for d in dirs
                if not d.startswith(".") and not os.path.islink(os.path.join(folder, d))
                and not (folder == self.root and d == SUPERSEDED)
            )
            for f in sorted(files):
                key = SnapshotKey.parse(os.path.splitext(f)[0])
                path = os.path.join(folder, f)
                if key is not None and (owned is None or os.path.abspath(path) in owned):
                    yield path, key

    def supersede(self, after_step: int, after_epoch: float | None = None) -> list[str]:
        """Move everything of the snapshots taken after ``after_step`` to ``superseded/<time>/``.

        A run resumed from a checkpoint goes on from that checkpoint's step; snapshots
        that a killed (or longer) run took after it belong to a course of training that
        no longer exists. One rule holds for every measurement, whatever its folders: a
        file named by a snapshot key (``epoch_003.png`` in ``attention_frames/entropy/``,
        any depth) is moved when that snapshot came after the checkpoint, and so is every
        row of a table with a ``step`` after it. When that snapshot came is read from the
        name (``..._step_0000012``), else from the step stored in the embeddings of the
        snapshot of that name (any split), else from its epoch against ``after_epoch``
        (the checkpoint's epoch). Files are moved (never deleted), keeping their folders,
        so that the films hold one course of training. Returns the names of the
        snapshots moved.
        """
        stored: dict[str, int] = {}
        for split in self.splits():
            for key in self.keys(split):
                try:
                    stored[key.name] = self.snapshot_key(split, key).step
                except (DamagedFileError, FileNotFoundError):
                    continue

        def abandoned(key: SnapshotKey) -> bool:
            if key.with_step:
                return key.step > after_step
            if key.name in stored:
                return stored[key.name] > after_step
            if after_epoch is not None:
                return float(key.epoch) > float(after_epoch) + 1e-6
            return False

        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = os.path.join(self.root, SUPERSEDED, stamp)
        moved = set()
        with self.lock():
            for path, key in list(self._keyed_files()):
                if not abandoned(key):
                    continue
                dest = os.path.join(target, os.path.relpath(path, self.root))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(path, dest)
                moved.add(key.name)
            for table in self._tables():
                try:
                    rows = self.read_table(table)
                except DamagedFileError as exc:
                    logger.warning("layerwatch: %s", exc)
                    continue
                late = [r for r in rows if "step" in r and int(r["step"]) > after_step]
                if late:
                    fields = list(rows[0].keys())
                    self.write_table(table, fields, [r for r in rows if r not in late])
                    buf = io.StringIO()
                    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
                    w.writeheader()
                    w.writerows(late)
                    os.makedirs(target, exist_ok=True)
                    atomic_write_text(os.path.join(target, table), buf.getvalue())
        return sorted(moved)

    def _tables(self) -> list[str]:
        # Tables live directly in the run directory (``table_path``), whatever measurement wrote them.
        return sorted(
            f for f in os.listdir(self.root)
            if f.endswith(".csv") and os.path.isfile(os.path.join(self.root, f))
            and self._owned(os.path.join(self.root, f))
        ) if os.path.isdir(self.root) else []

    def _owned(self, path: str) -> bool:
        return os.path.abspath(path) in set(self.owned_files())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory's lock (between processes and threads; reentrant).

        Writers of files that several processes rewrite (GIFs, tables, the report) hold
        it, so that the last writer always works from everything written before it.
        """
        with self._lock:
            if self._lock_depth == 0:
                self._lock_fh = self._open_lock()
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fh is not None:
                    self._lock_fh.close()
                    self._lock_fh = None

    def claim(self) -> None:
        """Hold the run directory for one run until :meth:`release` (or the process ends).

        Two runs started into the same folder would mix their snapshots; the first to
        claim it wins and every other one gets :class:`RunDirectoryInUse` before it
        checks, writes or removes anything. The claim is an exclusive ``flock`` on
        ``.layerwatch-owner``, held as long as the run: the kernel drops it when the
        holder dies however it dies (a kill, a crash, a lost node), so a stale claim never
        blocks a later run. A run of this same process that never released its claim (a
        training that raised in a notebook) gives it up to the new one, with a warning.
        Where ``flock`` does not exist (not POSIX) nothing is claimed.
        """
        if self._claim_fh is not None:
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: no claim
            return
        os.makedirs(self.root, exist_ok=True)
        real = os.path.realpath(self.root)
        stale = _CLAIMS.pop(real, None)
        if stale is not None and not stale.closed:
            logger.warning(
                "layerwatch: a run of this process that did not finish (a training that raised?) still held %s; "
                "the new run takes it over", self.root,
            )
            stale.close()
        path = os.path.join(self.root, OWNER_FILE)
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            try:
                who = json.loads(holder)
                who = f" (process {who['pid']} on {who['host']}, since {who['since']})"
            except (ValueError, KeyError, TypeError):
                who = ""
            raise RunDirectoryInUse(
                f"output_dir={self.root!r} is in use: another layerwatch run that is still going holds it{who}, and "
                "two runs in one folder would mix their snapshots; pass another output_dir, or wait until that run ends"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        fh.flush()
        # Not in the manifest: overwrite=True must never remove the file the claim is held on.
        self._claim_fh = fh
        _CLAIMS[real] = fh

    def release(self) -> None:
        """Give up the claim of :meth:`claim` (the run ended)."""
        fh, self._claim_fh = self._claim_fh, None
        if fh is None:
            return
        real = os.path.realpath(self.root)
        if _CLAIMS.get(real) is fh:
            del _CLAIMS[real]
        fh.close()

    def _open_lock(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: threads are still serialised
            return None
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, LOCK_FILE)
        self._record(path)
        fh = open(path, "a+")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        return fh

