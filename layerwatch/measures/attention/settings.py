"""The settings of the attention measurement, checked when they are built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...config import check_rows
from ...settings import Settings


@dataclass(frozen=True)
class Attention(Settings):
    """Settings of ``attention`` (per-head attention statistics of every layer at every
    snapshot, a heatmap film per statistic, the heads' drift and a head-view page).

    Attributes:
        examples: Rows whose full attention maps are kept at every snapshot (for the head
            view and the heads' drift): a count, stratified by label, or dataset row
            indices of ``split``.
        split: The split of those rows; ``None``: ``"validation"`` when monitored, else
            the reference split.
    """

    name: ClassVar[str] = "attention"
    examples: Any = 6
    split: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", check_rows("attention_examples", self.examples))
        if self.split is not None and not isinstance(self.split, str):
            raise ValueError(f"Attention(split={self.split!r}): split must be a split name or None")
