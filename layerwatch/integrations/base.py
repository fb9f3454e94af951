"""What every integration shares: the interface, the run it is told about, and stored data read back.

An integration sends one layerwatch run to a tool people already watch (TensorBoard,
Weights & Biases, MLflow). It is told about each snapshot once that snapshot's frames
are on disk (:meth:`Integration.snapshot`) and once more when training ends
(:meth:`Integration.finish`). Everything it sends is read from the run directory or
handed over with the call, so the same code serves live training and ``layerwatch
export`` of a finished run.

This module imports numpy only; each tool's library is imported by its own module, when
that integration is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import parse_projector_layers
from ..files import check_gif, read_png
from ..measures.embeddings.files import embedding_path, load_snapshot
from ..snapshot import Snapshot, SnapshotKey, epoch_value, sort_keys
from ..store import METRIC_FIELDS, METRICS_FILE, DamagedFileError, RunStore
from ..text import clean_text, text_allowed

logger = logging.getLogger("layerwatch")

__all__ = [
    "Integration", "RunInfo", "finish_all", "frame_images", "frame_paths", "label_texts", "last_key", "load_snapshots", "metric_logs",
    "parse_projector_layers", "prediction_texts", "projector_positions", "read_metric_rows", "readable_file",
    "send_snapshot", "snapshot_splits",
    "stored_keys", "text_of",
]

# Texts in per-row metadata (TensorBoard's TSV, W&B tables) are cut to this many characters:
# enough to recognise a row, short enough that the files stay small.
MAX_TEXT = 300


class RunInfo:
    """What an integration is told about the run: its directory, labels and texts.

    Args:
        store: The run directory.
        label_names: Legend text per class id (None for a regression, or when unknown:
            ids are shown as numbers).
        regression: Labels are float targets.
        reference_split: The split other splits are measured against.
        config: The run's settings as stored in ``run.json`` (for run parameters).
        splits: The splits to send (default: every split stored).

    Build it from a run directory with :meth:`from_store` once ``run.json`` is written.
    """

    def __init__(
        self,
        store: RunStore,
        label_names: Sequence[str] | None = None,
        regression: bool = False,
        reference_split: str | None = None,
        config: Mapping[str, Any] | None = None,
        splits: Sequence[str] | None = None,
    ):
        self.store = store
        self.label_names = list(label_names) if label_names is not None else None
        self.regression = bool(regression)
        self.reference_split = reference_split
        self.config = dict(config or {})
        self.only = list(splits) if splits else None
        self._texts: dict[str, dict[int, str]] = {}

    @classmethod
    def from_store(cls, store: RunStore | str | os.PathLike) -> "RunInfo":
        """The run stored in ``store`` (a :class:`RunStore` or its folder).

        Raises:
            FileNotFoundError: the folder holds no layerwatch run.
            ValueError: its ``run.json`` is damaged or not layerwatch's.
        """
        store = store if isinstance(store, RunStore) else RunStore(store)
        info = store.read_run()
        names = (info.get("labels") or {}).get("names") or info.get("label_names")
        regression = info.get("label_kind") == "regression"
        return cls(
            store, label_names=None if regression else names, regression=regression,
            reference_split=info.get("reference_split"), config=info.get("config"),
        )

    def splits(self) -> list[str]:
        """The splits to send: those stored (of ``splits=`` when given), the reference split first."""
        stored = self.store.splits()
        chosen = [s for s in stored if self.only is None or s in self.only]
        return sorted(chosen, key=lambda s: (s != self.reference_split, s))

    @property
    def name(self) -> str:
        """A short name for the run (its folder's name), for run names in the tools."""
        return os.path.basename(os.path.normpath(os.path.abspath(self.store.root))) or "layerwatch"

    def texts(self, split: str) -> dict[int, str]:
        """``{dataset row: text}`` of ``split`` (empty when none were stored or the file is damaged,
        and always with ``report_text=False``: see :mod:`layerwatch.text`)."""
        if not text_allowed(self.config):
            return {}
        if split not in self._texts:
            try:
                self._texts[split] = self.store.load_texts(split)
            except DamagedFileError as exc:
                # Texts are only shown beside the points; the rest is still worth sending.
                logger.warning("layerwatch: %s", exc)
                self._texts[split] = {}
        return self._texts[split]


class Integration:
    """One tool that a layerwatch run is sent to.

    The caller (the training process, or ``layerwatch export``) calls :meth:`snapshot`
    after each snapshot is drawn, in training order, and :meth:`finish` once at the end.
    Methods raise on failure; during training, :func:`send_snapshot` and
    :func:`finish_all` turn a failure into a warning so that it costs only that tool.
    Only the main process calls them.
    """

    name: str = "integration"

    def snapshot(
        self, run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float],
    ) -> None:
        """Send one snapshot.

        Args:
            run: The run.
            key: When the snapshot was taken, with its true epoch and step.
            snaps: The snapshot of each split, or None to read them from the run directory
                (as when a background worker drew them).
            logs: Its numbers, ``{"layerwatch/<split>/<metric>/layer_<i>": value}``.
        """

    def finish(self, run: RunInfo) -> None:
        """Send what exists only once training is over (films, tables, the report); flush."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- calling several integrations during training ---------------------------------------
def send_snapshot(
    integrations: Sequence[Integration], run: RunInfo, key: SnapshotKey,
    snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float],
) -> list[str]:
    """Call :meth:`Integration.snapshot` of each; a failure is a warning that costs only that tool.

    Returns the warnings' messages (empty when every tool took the snapshot).
    """
    failures = []
    for integration in integrations:
        try:
            integration.snapshot(run, key, snaps, logs)
        except Exception as exc:  # one tool's failure must not stop training or the other tools
            msg = (
                f"layerwatch: sending snapshot {key.title} to {integration.name} failed ({type(exc).__name__}: {exc}); "
                "training goes on"
            )
            logger.warning(msg)
            failures.append(msg)
    return failures


def finish_all(integrations: Sequence[Integration], run: RunInfo) -> list[str]:
    """Call :meth:`Integration.finish` of each; a failure is a warning. Returns the messages."""
    failures = []
    for integration in integrations:
        try:
            integration.finish(run)
        except Exception as exc:
            msg = f"layerwatch: finishing {integration.name} failed ({type(exc).__name__}: {exc})"
            logger.warning(msg)
            failures.append(msg)
    return failures


# -- stored data, as the integrations read it --------------------------------------------
def snapshot_splits(run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None) -> list[str]:
    """The splits of a snapshot: those handed over, else those with its embeddings on disk."""
    if snaps is not None:
        chosen = [s for s in snaps if run.only is None or s in run.only]
        return sorted(chosen, key=lambda s: (s != run.reference_split, s))
    return [s for s in run.splits() if os.path.exists(embedding_path(run.store, s, key))]


def load_snapshots(run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None) -> dict[str, Snapshot]:
    """``snaps``, or the snapshot of each split read from the run directory (damaged files skipped)."""
    if snaps is not None:
        return {s: snaps[s] for s in snapshot_splits(run, key, snaps)}
    out = {}
    for split in snapshot_splits(run, key, None):
        try:
            out[split] = load_snapshot(run.store, split, key, run.label_names)
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
    return out


def frame_images(run: RunInfo, key: SnapshotKey, splits: Sequence[str]) -> dict[str, tuple[str, np.ndarray]]:
    """``{split: (frame PNG, its RGB pixels)}`` of the frames of ``key`` that can be read.

    A frame whose drawing failed is absent; a damaged one (empty, truncated) is named in a
    warning and left out, as ``layerwatch render`` and ``info`` do.
    """
    out = {}
    for split in splits:
        path = run.store.frame_path(split, key)
        if not os.path.exists(path):
            continue
        try:
            out[split] = (path, read_png(path))
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
    return out


def frame_paths(run: RunInfo, key: SnapshotKey, splits: Sequence[str]) -> dict[str, str]:
    """``{split: frame PNG}`` of the frames of ``key`` on disk that can be read (see :func:`frame_images`)."""
    return {split: path for split, (path, _) in frame_images(run, key, splits).items()}


def readable_file(run: RunInfo, path: str) -> bool:
    """Whether a whole-run file an integration uploads (a GIF, ``metrics.csv``) exists and can
    be read; a damaged one is named in a warning (and not sent)."""
    if not os.path.exists(path):
        return False
    try:
        if path.endswith(".gif"):
            check_gif(path)
        elif path.endswith(".csv"):
            rel = os.path.relpath(path, run.store.root)
            run.store.read_table(rel, METRIC_FIELDS if rel == METRICS_FILE else ())
    except DamagedFileError as exc:
        logger.warning("layerwatch: %s", exc)
        return False
    return True


def read_metric_rows(run: RunInfo) -> list[dict]:
    """The rows of ``metrics.csv`` (none, with a warning naming it, when it is damaged)."""
    try:
        return run.store.read_metrics()
    except DamagedFileError as exc:
        logger.warning("layerwatch: %s", exc)
        return []


def stored_keys(run: RunInfo, splits: Sequence[str] | None = None) -> list[SnapshotKey]:
    """Every stored snapshot's key (with its true epoch and step), in training order."""
    keys: dict[str, SnapshotKey] = {}
    for split in splits if splits is not None else run.splits():
        for key in run.store.keys(split):
            if key.name in keys:
                continue
            try:
                keys[key.name] = run.store.snapshot_key(split, key)
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s", exc)
    return sort_keys(keys.values())


def last_key(run: RunInfo, split: str) -> SnapshotKey | None:
    """The latest stored snapshot of ``split`` whose embeddings can be read, with its true step."""
    for key in reversed(run.store.keys(split)):
        try:
            return run.store.snapshot_key(split, key)
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
    return None


def metric_logs(run: RunInfo, key: SnapshotKey, rows: Sequence[dict] | None = None) -> dict[str, float]:
    """The numbers of one snapshot as the Trainer's log got them, read back from ``metrics.csv``.

    Args:
        run: The run.
        key: The snapshot (its true epoch and step).
        rows: The rows of ``metrics.csv`` already read (read here when None).
    """
    rows = read_metric_rows(run) if rows is None else rows
    out = {}
    for r in rows:
        # A snapshot is known by its step and epoch in every table (file names may lack the step).
        if int(r["step"]) == key.step and epoch_value(r["epoch"]) == key.epoch:
            out[f"layerwatch/{r['split']}/{r['metric']}/layer_{int(r['layer'])}"] = float(r["value"])
    return out


def text_of(text: str | None) -> str:
    """A row's text on one line, cut to :data:`MAX_TEXT` characters (TSV files and table cells)."""
    if not text:
        return ""
    one_line = " ".join(clean_text(text).split())
    return one_line if len(one_line) <= MAX_TEXT else one_line[: MAX_TEXT - 1] + "\u2026"


def label_texts(run: RunInfo, ids: np.ndarray) -> list[str]:
    """What each label is called (its name, the id where no name is known, the value for a regression)."""
    if run.regression:
        return [f"{float(v):.4g}" for v in np.asarray(ids, dtype=np.float64)]
    names = run.label_names or []
    out = []
    for v in np.asarray(ids).tolist():
        i = int(v)
        out.append(names[i] if 0 <= i < len(names) else str(i))
    return out


def prediction_texts(run: RunInfo, predictions: np.ndarray | None) -> list[str] | None:
    """The predicted labels' names (``"(other)"`` where the head predicted no label of the run)."""
    if predictions is None or run.regression:
        return None
    names = label_texts(run, np.clip(np.asarray(predictions), 0, None))
    return ["(other)" if int(p) < 0 else n for p, n in zip(np.asarray(predictions).tolist(), names)]


def projector_positions(choice: str | tuple[int, ...] | None, stored: np.ndarray, split: str) -> list[int]:
    """Positions in a snapshot's ``layers`` of the layers ``choice`` picks.

    Raises:
        ValueError: a chosen layer was not stored, naming the stored ones.
    """
    stored_list = [int(l) for l in np.asarray(stored)]
    if choice is None or not stored_list:
        return []
    if choice == "last":
        return [len(stored_list) - 1]
    if choice == "all":
        return list(range(len(stored_list)))
    absent = [l for l in choice if l not in stored_list]
    if absent:
        raise ValueError(
            f"projector_layers asks for layer {absent[0]}, which split {split!r} did not store; "
            f"stored layers are {stored_list}"
        )
    return [stored_list.index(l) for l in choice]
