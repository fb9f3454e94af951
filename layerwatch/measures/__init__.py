"""The measurements of a snapshot, registered in one place.

Each measurement is one module with a :class:`Measurement` subclass (see
:mod:`layerwatch.measures.base` for the seam). Built-in ones are registered below;
another package can add its own through the ``layerwatch.measurements`` entry-point group
(so that ``layerwatch render`` finds it too), or a program through :func:`register`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .attention import AttentionMeasurement
from .attribution import AttributionMeasurement
from .base import Accumulator, Batch, Context, Measurement, SplitPlan
from .dynamics import DynamicsMeasurement
from .embeddings import EmbeddingsMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from ..config import LayerwatchConfig

__all__ = ["Accumulator", "Batch", "Context", "Measurement", "SplitPlan", "for_config", "register", "registered", "unregister"]

_REGISTERED: dict[str, type[Measurement]] = {}
_ENTRY_POINTS_LOADED = False


def register(cls: type[Measurement]) -> type[Measurement]:
    """Add a measurement class (usable as a decorator); its ``name`` must be new."""
    if not (isinstance(cls, type) and issubclass(cls, Measurement)) or not cls.name:
        raise TypeError(f"{cls!r} is not a Measurement subclass with a name")
    known = _REGISTERED.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"a measurement named {cls.name!r} is registered already ({known.__module__}.{known.__qualname__})")
    _REGISTERED[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    if name == EmbeddingsMeasurement.name:
        raise ValueError("the embeddings measurement cannot be removed")
    _REGISTERED.pop(name, None)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="layerwatch.measurements"):
        register(ep.load())


def registered() -> dict[str, type[Measurement]]:
    """Every known measurement class by name, the embeddings first."""
    _load_entry_points()
    return dict(_REGISTERED)


def for_config(config: "LayerwatchConfig", names: list[str] | None = None) -> list[Measurement]:
    """Instances of the measurements that ``config`` turns on (or of ``names``), embeddings first."""
    classes = registered()
    if names is not None:
        chosen = [classes[n] for n in names if n in classes]
    else:
        chosen = [cls for cls in classes.values() if cls.enabled(config)]
    chosen.sort(key=lambda cls: cls is not EmbeddingsMeasurement)
    if EmbeddingsMeasurement not in chosen:
        chosen.insert(0, EmbeddingsMeasurement)
    return [cls(config) for cls in chosen]


register(EmbeddingsMeasurement)
register(AttentionMeasurement)
register(AttributionMeasurement)
register(DynamicsMeasurement)
