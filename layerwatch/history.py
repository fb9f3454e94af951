"""What the back half holds of a run: every snapshot's page data, in memory.

The run directory is the persistence (a crash loses nothing); the history is what the
pages (``report.html``, the head view) are drawn from. It is filled once from the disk
when a run is taken up (a resume, ``layerwatch render``, ``layerwatch report``) and
appended to as each snapshot is processed, so that writing the pages after a snapshot
reads no earlier snapshot's files: the work per snapshot does not grow with the number
of snapshots, but for the page's own encoding of what it shows.

Records are filed under a part's name and a split, one per snapshot (a later record of
the same snapshot replaces the earlier one). The core parts, which the report's panels
show, are :data:`LAYOUTS` (a :class:`Layout` per split and snapshot) and :data:`METRICS`
(the rows of ``metrics.csv`` per split and snapshot); each measurement files its own
parts under its own name. This module imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .snapshot import SnapshotKey

__all__ = ["History", "LAYOUTS", "METRICS", "Layout"]

LAYOUTS = "layouts"
METRICS = "metrics"


@dataclass
class Layout:
    """One split's 2-D layout of every layer at one snapshot, with what labels its dots.

    Attributes:
        layout: (layers, rows, 2) positions (NaN where a row was not laid out).
        layers: The hidden-state indices of the layout's layers.
        indices: (rows,) the dataset rows.
        labels: (rows,) label ids (or targets of a regression).
        predictions: (rows,) the model's predicted ids, or None.
        epoch, step: When the snapshot was taken (as stored: the step always known).
    """

    layout: np.ndarray
    layers: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray | None
    epoch: float
    step: int


class History:
    """Per part and split, one record per snapshot, in training order."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], dict[str, tuple[SnapshotKey, Any]]] = {}
        self._ordered: dict[tuple[str, str], list[tuple[SnapshotKey, Any]]] = {}

    def put(self, part: str, split: str, key: SnapshotKey, record: Any) -> None:
        """File ``record`` of ``split`` at snapshot ``key`` under ``part`` (replacing one of the same key)."""
        where = (part, split)
        self._records.setdefault(where, {})[key.name] = (key, record)
        self._ordered.pop(where, None)

    def get(self, part: str, split: str) -> list[tuple[SnapshotKey, Any]]:
        """``(key, record)`` of every snapshot of ``split`` filed under ``part``, in training order."""
        where = (part, split)
        ordered = self._ordered.get(where)
        if ordered is None:
            ordered = self._ordered[where] = sorted(self._records.get(where, {}).values(), key=lambda kr: kr[0].order)
        return list(ordered)

    def latest(self, part: str, split: str) -> tuple[SnapshotKey, Any] | None:
        """The last record of ``split`` under ``part``, or None."""
        got = self.get(part, split)
        return got[-1] if got else None

    def splits(self, part: str) -> list[str]:
        """The splits with a record under ``part``, sorted."""
        return sorted(s for p, s in self._records if p == part and self._records[(p, s)])

    def parts(self) -> list[str]:
        return sorted({p for p, _ in self._records})

    def drop(self, part: str, split: str | None = None) -> None:
        """Forget ``part`` (of one split, or of all)."""
        for where in [w for w in self._records if w[0] == part and (split is None or w[1] == split)]:
            self._records.pop(where)
            self._ordered.pop(where, None)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(sorted(self._records))

    def __len__(self) -> int:
        return sum(len(v) for v in self._records.values())
