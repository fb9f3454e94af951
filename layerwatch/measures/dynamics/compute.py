"""Pure numpy: the training-dynamics measures of rows, from their per-epoch numbers.

Per row and epoch (or snapshot): the mean probability of the gold label over the epoch's
visits, the mean margin (gold logit minus the largest other logit), the share of visits
whose argmax was the gold label, and the number of visits. From these:

- *confidence*: the mean over epochs of the gold-label probability;
- *variability*: its population standard deviation over epochs (Swayamdipta et al. 2020,
  "Dataset Cartography", eq. 1-2: divided by the number of epochs);
- *correctness*: the mean over epochs of the share of correct visits;
- *AUM*: the margin averaged over every visit of training (Pleiss et al. 2020).

No torch here: ``layerwatch suspects`` ranks a stored run with numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

FIELDS = ("split", "source", "epoch", "step", "row", "label", "predicted", "gold_prob", "margin", "correct", "visits")
"""Columns of ``dynamics.csv``: one line per row and epoch (or snapshot, for the other splits)."""

REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")


def visit_measures(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gold-label probability, margin and correctness of single visits (numpy reference of
    what the training hook computes on the device)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    gold = z[rows, y]
    other = z.copy()
    other[rows, y] = -np.inf
    return p[rows, y], gold - other.max(axis=1), (z.argmax(axis=1) == y).astype(np.float64)


@dataclass
class RowMeasures:
    """The cumulative measures of a split's rows (arrays aligned on ``rows``)."""

    rows: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray
    aum: np.ndarray
    epochs: np.ndarray
    visits: np.ndarray

    def regions(self, confidence_threshold: float = 0.5, variability_threshold: float = 0.2) -> np.ndarray:
        """Each row's region of the data map (an index into :data:`REGIONS`)."""
        out = np.where(self.confidence >= confidence_threshold, 0, 2)
        out[self.variability >= variability_threshold] = 1
        return out

    def ranking(self) -> np.ndarray:
        """Positions from the lowest AUM up (ties: lower confidence first, then the row)."""
        return np.lexsort((self.rows, self.confidence, self.aum))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def cumulative(
    rows: np.ndarray, label: np.ndarray, predicted: np.ndarray, gold_prob: np.ndarray, margin: np.ndarray,
    correct: np.ndarray, visits: np.ndarray,
) -> RowMeasures:
    """Cumulative measures from per-(row, epoch) lines (any order).

    ``gold_prob``, ``margin`` and ``correct`` are each epoch's means over its ``visits``;
    AUM weighs every visit alike. ``predicted`` and ``label`` of a row are taken from its
    last line.
    """
    rows = np.asarray(rows, dtype=np.int64)
    uniq, inv = np.unique(rows, return_inverse=True)
    n = len(uniq)
    visits = np.asarray(visits, dtype=np.float64)
    epochs = np.bincount(inv, minlength=n).astype(np.float64)
    p = np.asarray(gold_prob, dtype=np.float64)
    confidence = np.bincount(inv, p, minlength=n) / epochs
    variability = np.sqrt(np.maximum(np.bincount(inv, (p - confidence[inv]) ** 2, minlength=n) / epochs, 0.0))
    correctness = np.bincount(inv, np.asarray(correct, dtype=np.float64), minlength=n) / epochs
    total = np.bincount(inv, visits, minlength=n)
    aum = np.bincount(inv, np.asarray(margin, dtype=np.float64) * visits, minlength=n) / np.maximum(total, 1e-12)
    last = np.zeros(n, dtype=np.int64)
    last[inv] = np.arange(len(rows))  # later lines overwrite earlier ones
    return RowMeasures(
        rows=uniq, label=np.asarray(label, dtype=np.int64)[last], predicted=np.asarray(predicted, dtype=np.int64)[last],
        confidence=confidence, variability=variability, correctness=correctness, aum=aum, epochs=epochs, visits=total,
    )


def from_table(lines: Iterable[dict], split: str, up_to_epoch: float | None = None, after_step: int = -1) -> RowMeasures | None:
    """:func:`cumulative` of one split's lines of ``dynamics.csv`` (as read by the store),
    up to ``up_to_epoch`` and after ``after_step``; None when there are none."""
    mine = [
        r for r in lines
        if r["split"] == split and (up_to_epoch is None or float(r["epoch"]) <= up_to_epoch) and int(r["step"]) > after_step
    ]
    if not mine:
        return None
    mine.sort(key=lambda r: (float(r["step"]), float(r["epoch"])))
    col = lambda name, kind=float: np.array([kind(r[name]) for r in mine])  # noqa: E731
    return cumulative(
        col("row", int), col("label", int), col("predicted", int), col("gold_prob"), col("margin"), col("correct"),
        col("visits"),
    )


def suspects(measures: RowMeasures, top: int | None = None) -> list[dict]:
    """The rows ranked from the lowest AUM up, as dicts (rank from 1)."""
    order = measures.ranking()
    if top is not None:
        order = order[:top]
    return [
        {
            "rank": i + 1, "row": int(measures.rows[j]), "aum": float(measures.aum[j]),
            "confidence": float(measures.confidence[j]), "variability": float(measures.variability[j]),
            "correctness": float(measures.correctness[j]), "label": int(measures.label[j]),
            "predicted": int(measures.predicted[j]), "epochs": int(measures.epochs[j]), "visits": int(measures.visits[j]),
        }
        for i, j in enumerate(order)
    ]


def name_of(names: Sequence[str] | None, index: int) -> str:
    if names is not None and 0 <= index < len(names):
        return str(names[index])
    return str(index)
