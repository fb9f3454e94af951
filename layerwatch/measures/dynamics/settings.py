"""The settings of the training-dynamics measurement, checked when they are built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dynamics:
    """Settings of ``dynamics`` (data maps and area under the margin of every training row).

    Attributes:
        top: Rows listed in the ranked table of likely mislabelled rows (lowest AUM).
        confidence_threshold: Below it (and not ambiguous) a row is *hard to learn*,
            at or above it *easy to learn* (the data map's regions; the paper draws them
            by eye, these are the lines layerwatch uses to count them).
        variability_threshold: At or above it a row is *ambiguous*.
    """

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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_setting(cls, value: Any) -> "Dynamics | None":
        """The settings that ``dynamics=`` names: ``True`` (the defaults), a ``Dynamics``,
        their items (as ``run.json`` stores them), or ``False`` / ``None`` (off)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            items = value
        else:
            try:
                items = dict(value)
            except (TypeError, ValueError):
                raise ValueError(f"dynamics={value!r} must be True, False or Dynamics(...)") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"dynamics: unknown settings {unknown}; allowed: {sorted(known)}")
        return cls(**items)
