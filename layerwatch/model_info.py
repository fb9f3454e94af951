"""What the monitor knows of the model it watches, handed to every measurement's front half.

:class:`ModelInfo` is filled by :meth:`layerwatch.monitor.Monitor.check_model` before the
first step and read by each measurement's :meth:`~layerwatch.measures.base.Measurement.prepare`,
:meth:`~layerwatch.measures.base.Measurement.start` (through ``SplitPlan.model_info``) and
:meth:`~layerwatch.measures.base.Measurement.after_capture`. It says only what is common to
every measurement; what a measurement derives for itself (token classes, its examples, a
baseline's padding id) it keeps on its own instance.

A leaf module: numpy only, nothing of layerwatch at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .labels import HeadMatch


@dataclass
class ModelInfo:
    """The model and its monitored rows, as the monitor found them.

    Attributes:
        model_name: The model's class name (for messages).
        tokenizer: The tokenizer (the Trainer's ``processing_class``), or None.
        precision: What the capture pass computes in (``"fp32"``, ``"bf16"``, ``"fp16"``).
        autocast: A function giving a fresh autocast context per batch of the capture
            pass (see :mod:`layerwatch.precision`); None for fp32.
        labels: Per split, the label ids of its monitored rows (in the run's vocabulary).
        indices: Per split, the dataset rows monitored, in subset order.
        datasets: Per split, the dataset.
        head: How the classification head's outputs map to the labels
            (:class:`~layerwatch.labels.HeadMatch`); None until the model is checked.
        label_names: Legend text per class id (None for a regression or before the check).
        layers: Hidden-state indices captured (0 = embedding output); None until known.
    """

    model_name: str = "the model"
    tokenizer: Any = None
    precision: str = "fp32"
    autocast: Callable[[], Any] | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    head: "HeadMatch | None" = None
    label_names: list[str] | None = None
    layers: tuple[int, ...] | None = None

    @property
    def head_to_label(self) -> tuple[int, ...] | None:
        """The label id of each output of the head, or None when they cannot be matched."""
        return getattr(self.head, "to_label", None)

    @property
    def head_reason(self) -> str:
        """Why the head's outputs cannot be matched to the labels ("" when they can)."""
        return str(getattr(self.head, "reason", "") or "")

    @property
    def head_names(self) -> list[str] | None:
        """A name per output of the classification head (None if the head or the names are unknown)."""
        head, names = self.head_to_label, self.label_names
        if not head or not names:
            return None
        return [names[j] if 0 <= j < len(names) else str(j) for j in head]
