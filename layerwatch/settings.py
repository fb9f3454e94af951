"""The settings of one measurement: a small frozen dataclass, checked when it is built.

A measurement with settings (``Attention(examples=6)``, ``Dynamics(top=20)``) defines a
subclass of :class:`Settings` in its folder (``measures/<name>/settings.py``) whose ``name``
is the measurement's. The run's :class:`~layerwatch.config.LayerwatchConfig` holds them in
``measures`` and ``run.json`` stores them under ``"measures"``, by name. This module is a
leaf: it imports nothing of layerwatch, so that the core settings can name it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

# Every Settings subclass by its measurement's name (filled when a subclass is defined).
_KNOWN: dict[str, type["Settings"]] = {}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of a measurement's settings. Subclass it as a frozen dataclass with ``name``
    set to the measurement's name; check the values in ``__post_init__``."""

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _KNOWN[cls.name] = cls

    def to_dict(self) -> dict:
        """The settings as ``run.json`` stores them (JSON-ready)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, items: dict) -> "Settings":
        """Settings from their items (``run.json``, or the flat keywords); unknown names are refused."""
        known = cls.field_names()
        unknown = sorted(set(items) - set(known))
        if unknown:
            raise ValueError(f"{cls.name}: unknown settings {unknown}; allowed: {sorted(known)}")
        return cls(**items)

    @classmethod
    def from_setting(cls, value: Any) -> "Settings | None":
        """The settings that ``<name>=value`` asks for: ``True`` (the defaults), an instance,
        their items (a dict), or ``False`` / ``None`` (off)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise ValueError(f"{cls.name}={value!r} must be True, False or {cls.__name__}(...)")


def settings_class(name: str) -> type[Settings] | None:
    """The Settings subclass of the measurement ``name`` (None when none is defined yet)."""
    return _KNOWN.get(name)


@dataclasses.dataclass(frozen=True)
class Unresolved:
    """Settings read back (``run.json``) for a measurement whose settings class is not
    imported yet; :func:`resolve` turns them into the real ones when it is."""

    name: str
    items: tuple

    def to_dict(self) -> dict:
        return dict(self.items)


def resolve(settings: Any) -> Any:
    """``settings`` as its measurement's Settings object when that class is known."""
    if isinstance(settings, Unresolved):
        cls = _KNOWN.get(settings.name)
        if cls is not None:
            return cls.from_dict(dict(settings.items))
    return settings
