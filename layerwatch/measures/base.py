"""The measurement seam: one forward pass over the fixed subset, handed to every measurement.

A snapshot runs the model once over each split's fixed rows. Each enabled
:class:`Measurement` says what that pass must return (``output_hidden_states``,
``output_attentions``), may hook modules during it, and reduces each batch as it comes
(:meth:`Measurement.start` gives an :class:`Accumulator`), so nothing larger than one
batch's outputs is ever held. What it keeps comes back as a
:class:`~layerwatch.distributed.Part` (rows, sums, picked rows), which the distributed
layer gathers across ranks generically; :meth:`Measurement.assemble` puts it into the
snapshot, :meth:`Measurement.save` stores it, and the back half
(:meth:`Measurement.process`, run by :class:`~layerwatch.pipeline.Pipeline`, in the
training process, a background worker or ``layerwatch render``) turns stored arrays into
numbers and pictures.

This module imports numpy only: front-half methods receive torch tensors and import torch
themselves, so that reading a run never loads torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from ..distributed import Part, is_ragged
from ..errors import ErrorPolicy
from ..model_info import ModelInfo
from ..history import History
from ..settings import Settings
from .rows import check_example_split, example_split, pack_ragged, pick_examples, unpack_ragged
from .sent import SENT_KINDS, File, Film, Image, Scalar, Table, Vectors

if TYPE_CHECKING:  # pragma: no cover
    from ..config import LayerwatchConfig
    from ..snapshot import Snapshot, SnapshotKey
    from ..store import RunStore

logger = logging.getLogger("layerwatch")

# The seam's names, for measurements written in other packages (the sent items and the row
# helpers live in their own modules and are part of the seam).
__all__ = [
    "SENT_KINDS", "Accumulator", "Batch", "Context", "File", "Film", "Image", "Measurement", "Scalar", "Settings",
    "SplitPlan", "Table", "TrainingRun", "Vectors", "check_example_split", "example_split", "pack_ragged",
    "pick_examples", "unpack_ragged",
]


@dataclass
class SplitPlan:
    """What a measurement is told about the split it is about to measure.

    Attributes:
        split: The split's name.
        indices: This rank's dataset rows, in the order they are captured.
        positions: Their positions in the whole subset (``rank::world`` under DDP).
        n_rows: Rows of the whole subset.
        labels: This rank's rows' label ids.
        layers: Hidden-state indices to keep (0 = embedding output).
        config: The run's settings.
        model_info: What the monitor knows of the model (its name, the tokenizer, the
            labels and rows of every split, ...; :class:`~layerwatch.model_info.ModelInfo`).
    """

    split: str
    indices: np.ndarray
    positions: np.ndarray
    n_rows: int
    labels: np.ndarray
    layers: tuple[int, ...]
    config: "LayerwatchConfig"
    model_info: ModelInfo = field(default_factory=ModelInfo)


@dataclass
class Batch:
    """One batch of the capture pass, as every measurement sees it.

    Attributes:
        rows: Positions of the batch's rows in this rank's share (``plan.indices``).
        inputs: What the model was fed (``input_ids``, ``attention_mask``, ...), on its device.
        mask: The attention mask (batch, tokens), 1 for real tokens; rows are right-padded.
        outputs: The model's output (``hidden_states``, ``attentions``, ``logits`` as asked).
        hooked: What the measurements' hooks recorded during this forward pass.
    """

    rows: np.ndarray
    inputs: dict[str, Any]
    mask: Any
    outputs: Any
    hooked: dict[str, Any] = field(default_factory=dict)

    def output(self, name: str) -> Any:
        value = getattr(self.outputs, name, None)
        if value is None and isinstance(self.outputs, dict):
            value = self.outputs.get(name)
        return value


@dataclass
class TrainingRun:
    """What a measurement that records from training itself is told at ``on_train_begin``.

    Attributes:
        model: The model the Trainer trains (hooks go on it).
        args, state: The Trainer's arguments and state.
        dataloader: The Trainer's training dataloader (its ``dataset``: the training rows).
        store: The run directory.
        tokenizer: The Trainer's ``processing_class`` (None if not given).
        head_names: A name per output of the classification head (None if unknown).
        splits: The monitored splits.
        checkpoint: The checkpoint folder being resumed from (None for a new run).
    """

    model: Any
    args: Any
    state: Any
    dataloader: Any
    store: Any
    tokenizer: Any = None
    head_names: list | None = None
    splits: Any = None
    checkpoint: str | None = None


class Accumulator:
    """Reduces one split's batches as they come; :meth:`finish` returns what is kept."""

    def update(self, batch: Batch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def finish(self) -> Part:  # pragma: no cover - interface
        raise NotImplementedError


class Context:
    """What the back half of every measurement shares: the run directory, the settings,
    the labels, and the rule that a failed step costs only itself.

    Attributes:
        store, config: The run directory and its settings.
        label_names: Legend text per class id (None for a regression).
        regression: Labels are float targets.
        reference_split: The split other splits are measured against (train).
        failures: Messages of the steps that failed in the current snapshot.
        history: What the pages are drawn from (:class:`~layerwatch.history.History`).
    """

    def __init__(
        self,
        store: "RunStore",
        config: "LayerwatchConfig",
        label_names: list[str] | None = None,
        regression: bool = False,
        reference_split: str | None = None,
        history: "History | None" = None,
    ):
        self.store = store
        self.config = config
        self.label_names = list(label_names) if label_names is not None else None
        self.regression = regression
        self.reference_split = reference_split
        # The run's rule for a failed step (layerwatch.errors): recorded, or raised.
        self.errors = ErrorPolicy(getattr(config, "on_error", "warn"), scope="step")
        self.render = True
        # Splits to measure and draw in the current snapshot (None: all of them); the
        # others are read only as references (``layerwatch render --splits``).
        self.draw_splits: set[str] | None = None
        # The snapshot's progress (layerwatch.progress.Progress), to say what is being worked on.
        self.progress = None
        # What the pages are drawn from: every measurement files here, per split and snapshot,
        # what its page part shows (in process() and in restore()), so that no page re-reads
        # earlier snapshots' files.
        self.history = history if history is not None else History()

    def working(self, what: str) -> None:
        """Say in the snapshot's progress bar what is being worked on now (nothing without one)."""
        if self.progress is not None:
            self.progress.working(what)

    def drawn(self, splits) -> list[str]:
        """The splits of ``splits`` to measure and draw now, the reference split first."""
        order = sorted(splits, key=lambda s: s != self.reference_split)
        return [s for s in order if self.draw_splits is None or s in self.draw_splits]

    @property
    def failures(self) -> list[str]:
        """Messages of the steps that failed in the current snapshot."""
        return self.errors.failures

    @failures.setter
    def failures(self, value: list[str]) -> None:
        self.errors.failures = value

    @property
    def log_failures(self) -> bool:
        """Say each failed step as it happens (a background worker leaves that to the training process)."""
        return self.errors.announce

    @log_failures.setter
    def log_failures(self, value: bool) -> None:
        self.errors.announce = bool(value)

    def results(self, snaps: dict, name: str, needed: str) -> Iterator[tuple[str, dict]]:
        """``(split, results)`` of each split to draw now (:meth:`drawn`) whose snapshot holds
        measurement ``name``'s results with the array ``needed``."""
        for split in self.drawn(snaps):
            res = snaps[split].results.get(name)
            if res and needed in res:
                yield split, res

    def guard(self, stage: str, key: "SnapshotKey | None", fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one step under the run's :class:`~layerwatch.errors.ErrorPolicy`: a failure is
        recorded (or raised, with ``on_error="raise"``) and the snapshot's other steps go on.
        Returns the step's result, or None if it failed."""
        return self.errors.run(stage, key, fn, *args, **kwargs)


class Measurement:
    """One kind of measurement of a snapshot. Subclass it and register it in
    :mod:`layerwatch.measures` (or through the ``layerwatch.measurements`` entry-point group).

    A run builds each measurement more than once, and the instances share nothing but the
    snapshot's results and the run directory: the front half (the capture pass, training
    events) runs on an instance in the training process on every rank; the back half
    (:meth:`process`, :meth:`report_sections`, :meth:`sends`) on another, in the training
    process, in the background worker or in ``layerwatch render``/``report``, filled at
    :meth:`restore` from what the run stored. What the back half needs from the front half
    goes through :meth:`assemble` into ``Snapshot.results`` (and so into the run's files).

    Class attributes:
        name: Its name: the key of ``Snapshot.results`` and its folder in the run directory.
        Settings: Its settings class (a :class:`~layerwatch.settings.Settings` dataclass
            whose ``name`` is the measurement's); the measurement is on when the run's
            ``measures`` hold them. None: no settings, always on (the embeddings).
        output_flags: Keyword arguments the capture's forward pass needs
            (``{"output_hidden_states": True}``).
        eager_attention: The pass needs attention weights, which only the eager
            implementation returns.
    """

    name: ClassVar[str] = ""
    output_flags: ClassVar[dict[str, Any]] = {}
    eager_attention: ClassVar[bool] = False
    Settings: ClassVar[type[Settings] | None] = None

    @classmethod
    def enabled(cls, config: "LayerwatchConfig") -> bool:
        """Whether the run turns this measurement on (its settings are in ``config.measures``, or it has none)."""
        return cls.Settings is None or config.measure(cls.name) is not None

    def __init__(self, config: "LayerwatchConfig", settings: Settings | None = None):
        self.config = config
        if settings is None and self.Settings is not None:
            settings = config.measure(self.name) or self.Settings()
        # This measurement's own settings (None for one without settings).
        self.settings = settings

    # -- front half: the capture pass (training process; torch) ---------------------
    def check_splits(self, splits: dict[str, Any]) -> None:
        """Check the settings against the monitored splits when the callback is built
        (``splits``: name -> :class:`~layerwatch.splits.MonitoredSplit`)."""

    def prepare(self, model: Any, info: ModelInfo) -> None:
        """Check the model before training (raise a ValueError that says what to do) and
        keep on this instance what its capture needs (token ids, examples, ...), from
        ``info`` (what the monitor knows of the model)."""

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records of this measurement's method (beyond the settings)."""
        return {}

    def hooks(self, model: Any, record: dict[str, Any]) -> list:
        """``(module, forward_hook)`` pairs installed for the capture pass only; a hook
        writes what it needs into ``record`` (handed to batches as ``Batch.hooked``)."""
        return []

    def start(self, plan: SplitPlan) -> Accumulator | None:
        """An accumulator for one split's capture, or None when this split is not measured."""
        return None

    def assemble(self, part: Part, snap: "Snapshot") -> None:
        """Put the gathered ``part`` into ``snap.results[self.name]`` as arrays (ragged rows
        packed by :func:`pack_ragged`; :func:`unpack_ragged` gives them back)."""
        rows: dict[str, np.ndarray] = {}
        for name, value in part.rows.items():
            rows.update(pack_ragged(name, value) if is_ragged(value) else {name: value})
        snap.results[self.name] = {**rows, **part.sums, **{f"meta_{k}": np.asarray(v) for k, v in part.meta.items()}}

    def after_capture(self, model: Any, snaps: dict[str, "Snapshot"], key: "SnapshotKey", info: ModelInfo) -> None:
        """Work of its own on the main process after the capture pass (attributions of a
        few examples, say), adding to ``snaps``; other ranks wait."""

    # -- front half: training itself (a measurement that records training passes) ----------
    def train_begin(self, run: TrainingRun) -> None:
        """``on_train_begin``, on every rank that takes part: install what records training."""

    def train_step(self, armed: bool) -> None:
        """A training step begins (``armed``) or has ended: passes between are training passes."""

    def train_epoch_end(self, state: Any) -> None:
        """``on_epoch_end``, on every rank (gather collectively, write on the main process)."""

    def train_save(self, folder: str, state: Any) -> None:
        """``on_save``, on every rank: keep in the checkpoint ``folder`` what a resume needs."""

    def train_end(self, state: Any) -> None:
        """``on_train_end``: finish and remove every hook (also called before a new training)."""

    # -- storage --------------------------------------------------------------------
    def save(self, store: "RunStore", snap: "Snapshot", key: "SnapshotKey") -> None:
        """Store this measurement's arrays of one split's snapshot."""
        arrays = snap.results.get(self.name)
        if arrays:
            store.save_arrays(self.name, snap.split, key, arrays)

    def load(self, store: "RunStore", snap: "Snapshot", key: "SnapshotKey") -> None:
        """Read this measurement's arrays of ``snap`` back (``layerwatch render``, resume)."""
        try:
            snap.results[self.name] = store.load_arrays(self.name, snap.split, key)
        except FileNotFoundError:
            pass

    # -- back half: numbers and pictures -------------------------------------------
    def process(self, ctx: Context, key: "SnapshotKey", snaps: dict[str, "Snapshot"]) -> dict[str, float]:
        """Turn one snapshot of every split into numbers (returned for the Trainer's log)
        and pictures (when ``ctx.render``)."""
        return {}

    def render_all(self, ctx: Context) -> None:
        """Redraw every picture from what :meth:`process` remembered (``layerwatch render``)."""

    def restore(self, ctx: Context, snaps: list[tuple["SnapshotKey", dict[str, "Snapshot"]]]) -> None:
        """Take up a stored run (a resume): remember its snapshots without redrawing them."""

    def summarize(self, store: "RunStore") -> dict[str, Any]:
        """What ``layerwatch info`` says of this measurement in a stored run."""
        return {}

    def sends(
        self, run: Any, key: "SnapshotKey | None", snaps: dict[str, "Snapshot"] | None = None,
        logs: dict[str, float] | None = None, kinds: tuple[type, ...] = SENT_KINDS,
    ) -> list:
        """What this measurement sends to TensorBoard, W&B and MLflow, live and from
        ``layerwatch export`` alike: :class:`Scalar`, :class:`Image` and :class:`Vectors`
        of snapshot ``key``, or, with ``key=None``, :class:`Film`, :class:`Table` and
        :class:`File` once the run is over.

        Args:
            run: The run being sent (:class:`~layerwatch.integrations.RunInfo`: ``store``,
                ``splits()`` to send, ``texts``, ``label_texts``, ...); read files from it.
            key: The snapshot (its true epoch and step), or None for the end of the run.
            snaps: The snapshot of each split as handed over during training (None: read
                from the run directory).
            logs: The snapshot's numbers already known (during training: what every
                measurement's :meth:`process` returned); scalars among them need not be
                given again. None (export): give them from the stored tables.
            kinds: The kinds of item the tools take; others may be left out (not computed).
        """
        return []

    def info_lines(self, summary: dict[str, Any]) -> list[str]:
        """The lines ``layerwatch info`` prints of this measurement, from the run's summary
        (every measurement's :meth:`summarize`, merged: ``layerwatch info --json``)."""
        return []

    def report_sections(self, ctx: Context) -> list[dict]:
        """Sections this measurement adds to the run's report page: ``{"title", "text",
        "images": [{"caption", "src": data URL}], "links": [{"text", "href"}], "films":
        [heatmap films, see layerwatch.pages.sections]}``, drawn from what it filed in
        ``ctx.history`` (never by re-reading earlier snapshots' files). ``text`` may hold
        code spans in backticks, shown as code."""
        return []

    @classmethod
    def add_commands(cls, subparsers: Any) -> None:
        """Add ``layerwatch`` subcommands of this measurement's own (none by default)."""
