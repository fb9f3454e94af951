"""What every integration shares: the interface, the run it is told about, and stored data read back.

An integration sends one layerwatch run to a tool people already watch (TensorBoard,
Weights & Biases, MLflow). It is told about each snapshot once that snapshot's frames
are on disk (:meth:`Integration.snapshot`) and once more when training ends
(:meth:`Integration.finish`). What it sends, every measurement of the run gives
(:meth:`~layerwatch.measures.base.Measurement.sends`: scalars, images, projector vectors,
films, tables, files), read from the run directory or handed over with the call, so the
same code serves live training and ``layerwatch export`` of a finished run; each tool
sends the kinds it shows.

This module imports numpy only; each tool's library is imported by its own module, when
that integration is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import LayerwatchConfig, parse_projector_layers
from ..measures import Measurement, for_config
from ..measures.base import SENT_KINDS, Scalar
from ..snapshot import Snapshot, SnapshotKey, sort_keys
from ..store import METRIC_FIELDS, METRICS_FILE, DamagedFileError, RunStore
from ..text import clean_text, text_allowed

logger = logging.getLogger("layerwatch")

__all__ = [
    "Integration", "RunInfo", "finish_all", "last_key", "parse_projector_layers", "projector_positions", "read_image",
    "readable_file", "send_snapshot", "stored_keys", "text_of",
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
        self._tables: dict[str, tuple[tuple, list[dict]]] = {}
        self._measurements: list[Measurement] | None = None

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

    def measurements(self) -> list[Measurement]:
        """The run's measurements, as ``run.json`` names them (the embeddings alone when it cannot say)."""
        if self._measurements is None:
            try:
                info = self.store.read_run()
                config = LayerwatchConfig.from_dict(dict(info.get("config") or {}), output_dir=self.store.root, background=False)
                self._measurements = for_config(config, names=info.get("measurements"))
            except (FileNotFoundError, ValueError, TypeError, ImportError) as exc:
                logger.warning("layerwatch: the measurements of %s are unknown (%s); the embeddings' part is sent", self.store.root, exc)
                config = LayerwatchConfig.from_dict({}, output_dir=self.store.root, background=False)
                self._measurements = for_config(config, names=[])
        return self._measurements

    def items(
        self, key: SnapshotKey | None, snaps: Mapping[str, Snapshot] | None = None, logs: Mapping[str, float] | None = None,
        kinds: Sequence[type] = SENT_KINDS,
    ) -> list:
        """What every measurement sends of snapshot ``key`` (None: at the end of the run), of
        ``kinds`` only (see :meth:`~layerwatch.measures.base.Measurement.sends`). A
        measurement whose part cannot be read is named in a warning; the others are sent."""
        kinds = tuple(kinds)
        out: list = []
        for m in self.measurements():
            try:
                out.extend(m.sends(self, key, snaps=None if snaps is None else dict(snaps),
                                   logs=None if logs is None else dict(logs), kinds=kinds))
            except Exception as exc:  # one measurement's part must not keep back the others'
                when = f"snapshot {key.title}" if key is not None else "the end of the run"
                logger.warning("layerwatch: what %s sends of %s failed (%s: %s); the rest is sent", m.name, when, type(exc).__name__, exc)
        return [i for i in out if isinstance(i, kinds)]

    @staticmethod
    def scalars(items: Sequence, logs: Mapping[str, float] | None, with_logs: bool = True) -> dict[str, float]:
        """The numbers to send of one snapshot: every :class:`~layerwatch.measures.base.Scalar`
        of ``items`` that ``logs`` (the Trainer's log, during training) lacks, and ``logs``
        themselves unless ``with_logs`` is False (they went through ``Trainer.log``)."""
        out = {i.tag: float(i.value) for i in items if isinstance(i, Scalar) and (logs is None or i.tag not in logs)}
        if with_logs:
            out.update({k: float(v) for k, v in (logs or {}).items()})
        return out

    def table(self, name: str, required: Sequence[str] = ()) -> list[dict]:
        """The rows of the run's table ``name`` (:meth:`RunStore.read_table`), read again only
        when the file changed; a damaged table is named in a warning once and gives no rows."""
        path = self.store.table_path(name)
        try:
            st = os.stat(path)
            stamp: tuple = (st.st_mtime_ns, st.st_size)
        except OSError:
            return []
        held = self._tables.get(name)
        if held is not None and held[0] == stamp:
            return held[1]
        try:
            rows = self.store.read_table(name, required)
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
            rows = []
        self._tables[name] = (stamp, rows)
        return rows

    def label_texts(self, ids: np.ndarray) -> list[str]:
        """What each label is called (its name, the id where no name is known, the value for a regression)."""
        if self.regression:
            return [f"{float(v):.4g}" for v in np.asarray(ids, dtype=np.float64)]
        names = self.label_names or []
        out = []
        for v in np.asarray(ids).tolist():
            i = int(v)
            out.append(names[i] if 0 <= i < len(names) else str(i))
        return out

    def prediction_texts(self, predictions: np.ndarray | None) -> list[str] | None:
        """The predicted labels' names (``"(other)"`` where the head predicted no label of the run)."""
        if predictions is None or self.regression:
            return None
        names = self.label_texts(np.clip(np.asarray(predictions), 0, None))
        return ["(other)" if int(p) < 0 else n for p, n in zip(np.asarray(predictions).tolist(), names)]

    def last_key(self, split: str) -> SnapshotKey | None:
        """The latest stored snapshot of ``split`` whose embeddings can be read, with its true step."""
        for key in reversed(self.store.keys(split)):
            try:
                return self.store.snapshot_key(split, key)
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s", exc)
        return None

    def text_of(self, text: str | None) -> str:
        """A row's text on one line, cut short (see :func:`text_of`)."""
        return text_of(text)

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
        self, run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float] | None,
    ) -> None:
        """Send one snapshot.

        Args:
            run: The run.
            key: When the snapshot was taken, with its true epoch and step.
            snaps: The snapshot of each split, or None to read them from the run directory
                (as when a background worker drew them).
            logs: Its numbers as the Trainer's log got them,
                ``{"layerwatch/<split>/<metric>/layer_<i>": value}``, or None to read them
                from the stored tables (``layerwatch export``).

        What it sends is what every measurement of the run gives (:meth:`RunInfo.items`,
        :meth:`~layerwatch.measures.base.Measurement.sends`) of the kinds the tool shows.
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
def read_image(run: RunInfo, path: str) -> np.ndarray | None:
    """The RGB pixels of a PNG an integration sends (None when absent; a damaged one is named
    in a warning and not sent, as ``layerwatch render`` and ``info`` do)."""
    if not os.path.exists(path):
        return None
    try:
        return run.store.read_image(path)
    except DamagedFileError as exc:
        logger.warning("layerwatch: %s", exc)
        return None


def readable_file(run: RunInfo, path: str) -> bool:
    """Whether a whole-run file an integration uploads (a GIF, ``metrics.csv``) exists and can
    be read; a damaged one is named in a warning (and not sent)."""
    if not os.path.exists(path):
        return False
    try:
        if path.endswith(".gif"):
            run.store.check_gif(path)
        elif path.endswith(".csv"):
            rel = os.path.relpath(path, run.store.root)
            run.store.read_table(rel, METRIC_FIELDS if rel == METRICS_FILE else ())
    except DamagedFileError as exc:
        logger.warning("layerwatch: %s", exc)
        return False
    return True


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
    return run.last_key(split)


def text_of(text: str | None) -> str:
    """A row's text on one line, cut to :data:`MAX_TEXT` characters (TSV files and table cells)."""
    if not text:
        return ""
    one_line = " ".join(clean_text(text).split())
    return one_line if len(one_line) <= MAX_TEXT else one_line[: MAX_TEXT - 1] + "\u2026"


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
