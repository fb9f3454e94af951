"""The settings of the training-dynamics measurement, checked when they are built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...settings import Settings


@dataclass(frozen=True)
class Dynamics(Settings):
    """Settings of ``dynamics`` (data maps and area under the margin of every training row).

    Attributes:
        top: Rows listed in the ranked table of likely mislabelled rows (lowest AUM).
        confidence_threshold: Below it (and not ambiguous) a row is *hard to learn*,
            at or above it *easy to learn* (the data map's regions; the paper draws them
            by eye, these are the lines layerwatch uses to count them).
        variability_threshold: At or above it a row is *ambiguous*.
    """

    name: ClassVar[str] = "dynamics"
    top: int = 50
    confidence_threshold: float = 0.5
    variability_threshold: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1:
            raise ValueError(f"Dynamics(top={self.top!r}): top must be a positive integer (rows of the suspects table)")
        for name, high in (("confidence_threshold", 1.0), ("variability_threshold", 0.5)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < high:
                raise ValueError(f"Dynamics({name}={value!r}): {name} must be a number between 0 and {high} (exclusive)")
