"""The settings of the attribution measurement, checked when they are built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...config import check_choice, check_positive_int, check_rows
from ...settings import Settings

TARGETS = ("label", "prediction")


@dataclass(frozen=True)
class Attribution(Settings):
    """Settings of ``attribution`` (token attributions by integrated gradients and the
    conductance of every layer for a few fixed examples at every snapshot, and the
    attention norms ``||alpha f(x)||`` of every head; BERT family and DistilBERT).

    Attributes:
        examples: Those examples: a count, stratified by label, or dataset row indices of
            ``split``.
        split: Their split; ``None``: ``"validation"`` when monitored, else the reference split.
        steps: Intervals of the integration path (its cost: that many forward and backward
            passes per example); at least 2.
        target: The logit explained: the row's ``"label"`` or the model's ``"prediction"``.
        batch_size: Points of the path per forward pass (memory grows with it).
    """

    name: ClassVar[str] = "attribution"
    examples: Any = 8
    split: str | None = None
    steps: int = 32
    target: str = "label"
    batch_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", check_rows("attribution_examples", self.examples))
        if self.split is not None and not isinstance(self.split, str):
            raise ValueError(f"Attribution(split={self.split!r}): split must be a split name or None")
        check_positive_int("attribution_steps", self.steps)
        if self.steps < 2:
            raise ValueError(f"attribution_steps={self.steps} must be at least 2 (32 is usual)")
        check_positive_int("attribution_batch_size", self.batch_size)
        check_choice("attribution_target", self.target, TARGETS)
