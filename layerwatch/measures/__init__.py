"""The measurements of a snapshot, registered in one place.

Each measurement is one module with a :class:`Measurement` subclass (see
:mod:`layerwatch.measures.base` for the seam). Built-in ones are registered below;
another package can add its own through the ``layerwatch.measurements`` entry-point group
(so that ``layerwatch render`` finds it too), or a program through :func:`register`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .attention import AttentionMeasurement
from .attention.settings import Attention
from .attribution import AttributionMeasurement
from .attribution.settings import Attribution
from .base import Accumulator, Batch, Context, Measurement, Settings, SplitPlan
from .dynamics import DynamicsMeasurement
from .dynamics.settings import Dynamics
from .embeddings import EmbeddingsMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from ..config import LayerwatchConfig

__all__ = [
    "Accumulator", "Attention", "Attribution", "Batch", "Context", "Dynamics", "Measurement", "Settings", "SplitPlan",
    "for_config", "from_keywords", "keyword_names", "load_entry_points", "register", "registered", "unregister",
]

_REGISTERED: dict[str, type[Measurement]] = {}
_ENTRY_POINTS_LOADED = False


def register(cls: type[Measurement]) -> type[Measurement]:
    """Add a measurement class (usable as a decorator); its ``name`` must be new."""
    if not (isinstance(cls, type) and issubclass(cls, Measurement)) or not cls.name:
        raise TypeError(f"{cls!r} is not a Measurement subclass with a name")
    if cls.Settings is not None and getattr(cls.Settings, "name", None) != cls.name:
        raise TypeError(
            f"{cls.__qualname__}.Settings ({cls.Settings.__qualname__}) must be a layerwatch Settings dataclass "
            f"with name = {cls.name!r}"
        )
    known = _REGISTERED.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"a measurement named {cls.name!r} is registered already ({known.__module__}.{known.__qualname__})")
    _REGISTERED[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    if name == EmbeddingsMeasurement.name:
        raise ValueError("the embeddings measurement cannot be removed")
    _REGISTERED.pop(name, None)


def load_entry_points(again: bool = False) -> None:
    """Register the measurements of the ``layerwatch.measurements`` entry-point group
    (read once per process; ``again=True`` reads them anew, e.g. after installing a
    package into a running interpreter)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and not again:
        return
    _ENTRY_POINTS_LOADED = True
    import importlib

    from importlib.metadata import entry_points

    importlib.invalidate_caches()
    for ep in entry_points(group="layerwatch.measurements"):
        register(ep.load())


def registered() -> dict[str, type[Measurement]]:
    """Every known measurement class by name, the embeddings first."""
    load_entry_points()
    return dict(_REGISTERED)


def for_config(config: "LayerwatchConfig", names: list[str] | None = None) -> list[Measurement]:
    """Instances of the measurements that ``config`` turns on (or of ``names``), embeddings
    first, each with its settings from ``config.measures`` (the defaults when ``names``
    asks for one the run did not turn on)."""
    classes = registered()
    if names is not None:
        chosen = [classes[n] for n in names if n in classes]
    else:
        chosen = [cls for cls in classes.values() if cls.enabled(config)]
    chosen.sort(key=lambda cls: cls is not EmbeddingsMeasurement)
    if EmbeddingsMeasurement not in chosen:
        chosen.insert(0, EmbeddingsMeasurement)
    return [cls(config) for cls in chosen]


def keyword_names() -> list[str]:
    """Every flat keyword the registered measurements accept (``attention``, ``attention_examples``, ...)."""
    out = []
    for name, cls in registered().items():
        if cls.Settings is not None:
            out.append(name)
            out.extend(f"{name}_{field}" for field in cls.Settings.field_names())
    return out


def from_keywords(keywords: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat keywords into the measurements' settings and the rest.

    ``attention=True, attention_examples=3`` -> ``{"attention": Attention(examples=3)}``;
    ``attention=False`` -> ``{"attention": None}`` (turned off); a measurement's field
    keywords without ``<name>=True`` are refused (they would do nothing).

    Returns:
        ``(settings by name, other keywords)``.

    Raises:
        ValueError: a bad value (the settings' own check), or fields given to a
            measurement that is off.
    """
    classes = {n: c for n, c in registered().items() if c.Settings is not None}
    rest = dict(keywords)
    out: dict[str, Any] = {}
    for name, cls in classes.items():
        fields = {f: rest.pop(f"{name}_{f}") for f in cls.Settings.field_names() if f"{name}_{f}" in rest}
        if name not in rest:
            if fields:
                given = ", ".join(f"{name}_{f}" for f in fields)
                raise ValueError(
                    f"{given} given but {name} is off; pass {name}=True as well, or "
                    f"measures=[{cls.Settings.__name__}({', '.join(f'{f}=...' for f in fields)})]"
                )
            continue
        value = rest.pop(name)
        settings = cls.Settings.from_setting(value)
        if settings is None:
            if fields:
                raise ValueError(f"{name}={value!r} turns {name} off, but its settings {sorted(fields)} were given")
            out[name] = None
            continue
        if fields:
            settings = cls.Settings.from_dict({**settings.to_dict(), **fields})
        out[name] = settings
    return out, rest


register(EmbeddingsMeasurement)
register(AttentionMeasurement)
register(AttributionMeasurement)
register(DynamicsMeasurement)
