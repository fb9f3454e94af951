"""What a snapshot is and when it was taken: numpy-only types shared by every module.

Commands that only read a run (``layerwatch info``, ``render``, ``report``) use these
types without importing torch.

A snapshot's key is the moment of training it shows: the epoch (fractional when training
stopped inside an epoch) and the optimizer step. Every snapshot of a run has its own key
and its own file name, so nothing finished is ever overwritten:

- a snapshot at the end of a whole epoch ``E`` (and the one before training) is named
  ``epoch_EEE``;
- any other one (inside an epoch, or every snapshot of a run with ``every_n_steps``)
  carries the step as well: ``epoch_EEE_step_SSSSSSS``, where ``EEE`` is the number of
  whole epochs done.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import numpy as np

_NAME = re.compile(r"^epoch_(\d{3,})(?:_step_(\d{7,}))?$")
# Epochs read from a Trainer are sums of fractions; anything this close to a whole number is one.
_WHOLE = 1e-6


def whole_epoch(epoch: float) -> bool:
    """Whether ``epoch`` is a whole number of epochs (within float rounding)."""
    return abs(float(epoch) - round(float(epoch))) < _WHOLE


def epoch_value(epoch: float) -> int | float:
    """``epoch`` as it is written to files: an int when whole, else rounded to 4 decimals."""
    epoch = float(epoch)
    return int(round(epoch)) if whole_epoch(epoch) else round(epoch, 4)


def epoch_text(epoch: float) -> str:
    """``"2"`` for a whole epoch, ``"2.25"`` inside one."""
    value = epoch_value(epoch)
    return str(value) if isinstance(value, int) else f"{value:g}"


class SnapshotKey:
    """When a snapshot was taken; names its files and orders it in the film.

    Args:
        epoch: Epochs done when it was taken (0 before training; fractional inside an epoch).
        step: Optimizer steps done.
        with_step: Name the files with the step even at a whole epoch (runs with
            ``every_n_steps``, whose snapshots fall anywhere).

    Two keys are equal when they name the same files.
    """

    __slots__ = ("epoch", "step", "with_step")

    def __init__(self, epoch: float = 0, step: int = 0, with_step: bool = False):
        epoch = float(epoch)
        if not math.isfinite(epoch) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative number")
        object.__setattr__(self, "epoch", epoch_value(epoch))
        object.__setattr__(self, "step", int(step))
        object.__setattr__(self, "with_step", bool(with_step) or not whole_epoch(epoch))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SnapshotKey is immutable")

    def __reduce__(self):
        return (SnapshotKey, (self.epoch, self.step, self.with_step))

    @property
    def whole_epochs(self) -> int:
        return int(math.floor(float(self.epoch) + _WHOLE))

    @property
    def name(self) -> str:
        if self.with_step:
            return f"epoch_{self.whole_epochs:03d}_step_{self.step:07d}"
        return f"epoch_{self.whole_epochs:03d}"

    @property
    def title(self) -> str:
        if self.with_step:
            return f"epoch {epoch_text(self.epoch)}, step {self.step}"
        return f"epoch {epoch_text(self.epoch)}"

    @property
    def column(self) -> str:
        """A short label for a table column (heatmaps): ``"2"`` or ``"2.25/9"``."""
        if self.with_step:
            return f"{epoch_text(self.epoch)}/{self.step}"
        return epoch_text(self.epoch)

    @property
    def order(self) -> tuple:
        """Sort key: training order, whether the step is known from the name or not.

        Names without a step are whole epochs; a snapshot named with a step comes after
        the whole epoch it started from.
        """
        return (self.whole_epochs, int(self.with_step), self.step if self.with_step else 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SnapshotKey) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"SnapshotKey(epoch={self.epoch!r}, step={self.step}, with_step={self.with_step})"

    @classmethod
    def parse(cls, stem: str) -> "SnapshotKey | None":
        """The key a file stem names, or None for anything else (temporary files included).

        A name without a step gives ``step=0``; the stored file holds the true step.
        """
        m = _NAME.match(stem)
        if not m:
            return None
        epoch = int(m.group(1))
        if m.group(2) is None:
            return cls(epoch=epoch)
        return cls(epoch=epoch, step=int(m.group(2)), with_step=True)

    def named_like(self, epoch: float, step: int) -> "SnapshotKey":
        """This key with the true epoch and step read from its file (the name stays the same)."""
        key = SnapshotKey(epoch, step, self.with_step)
        return key if key.name == self.name else self


def sort_keys(keys: Iterable[SnapshotKey]) -> list[SnapshotKey]:
    """Keys in training order, each once."""
    unique = {k.name: k for k in keys}
    return sorted(unique.values(), key=lambda k: k.order)


def last_key(keys: Iterable[SnapshotKey]) -> SnapshotKey | None:
    """The latest of ``keys`` (None when there are none)."""
    ordered = sort_keys(keys)
    return ordered[-1] if ordered else None


class Snapshot:
    """Everything one split's snapshot holds.

    Attributes:
        labels: (rows,) int64 class ids of the run's label vocabulary, or float32 targets
            of a regression.
        indices: (rows,) the dataset rows, in the order of every per-row array.
        predictions: (rows,) the classification head's prediction in the same label ids
            (-1 where the head predicted a class that is no label of the run), or None
            when the model has no head or its outputs cannot be matched to the labels.
        epoch, step: when it was taken (0, 0 = before training).
        with_step: its files are named with the step even at a whole epoch (``every_n_steps``).
        split: the split's name.
        label_names: legend text per class id, when known.
        results: what each measurement computed, ``{measurement: {array name: array}}``;
            ``results["embeddings"]`` holds ``pooled`` (layers, rows, hidden) float32 and
            ``layers`` (layers,) hidden-state indices (0 = embedding output).
    """

    def __init__(
        self,
        pooled: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        layers: np.ndarray | None = None,
        indices: np.ndarray | None = None,
        predictions: np.ndarray | None = None,
        epoch: float = 0,
        step: int = 0,
        split: str = "",
        label_names: tuple[str, ...] | None = None,
        results: dict[str, dict[str, np.ndarray]] | None = None,
        with_step: bool = False,
    ):
        self.labels = labels if labels is not None else np.zeros(0, dtype=np.int64)
        self.indices = indices if indices is not None else np.arange(len(self.labels), dtype=np.int64)
        self.predictions = predictions
        self.epoch = epoch_value(epoch)
        self.step = int(step)
        self.with_step = bool(with_step)
        self.split = split
        self.label_names = tuple(label_names) if label_names is not None else None
        self.results = {k: dict(v) for k, v in (results or {}).items()}
        if pooled is not None or layers is not None:
            emb = self.results.setdefault("embeddings", {})
            if pooled is not None:
                emb["pooled"] = pooled
            if layers is not None:
                emb["layers"] = np.asarray(layers, dtype=np.int64)

    # The embeddings measurement's arrays, which most of the code reads.
    @property
    def pooled(self) -> np.ndarray:
        return self.results["embeddings"]["pooled"]

    @pooled.setter
    def pooled(self, value: np.ndarray) -> None:
        self.results.setdefault("embeddings", {})["pooled"] = value

    @property
    def layers(self) -> np.ndarray:
        return self.results["embeddings"]["layers"]

    @layers.setter
    def layers(self, value: np.ndarray) -> None:
        self.results.setdefault("embeddings", {})["layers"] = np.asarray(value, dtype=np.int64)

    @property
    def num_layers(self) -> int:
        return int(self.pooled.shape[0])

    @property
    def num_rows(self) -> int:
        return int(len(self.indices))

    @property
    def key(self) -> SnapshotKey:
        """When it was taken, named as its files are (with the step where they carry it)."""
        return SnapshotKey(self.epoch, self.step, self.with_step)

    def __repr__(self) -> str:
        return (
            f"Snapshot(split={self.split!r}, epoch={self.epoch!r}, step={self.step}, rows={self.num_rows}, "
            f"results={sorted(self.results)})"
        )
