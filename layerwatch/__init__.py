"""layerwatch: watch every layer of a transformer reorganise its representations while it is fine-tuned.

The public names are imported when first used, so that reading a stored run
(``layerwatch.store``, ``layerwatch info``) never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_PUBLIC = {
    "LayerwatchCallback": "callback",
    "watch": "callback",
    "LayerwatchConfig": "config",
    "Attention": "measures",
    "Attribution": "measures",
    "Dynamics": "measures",
    "Settings": "settings",
    "Measurement": "measures",
    "register_measurement": "measures",
    "Reducer": "reduce",
    "RunStore": "store",
    "Snapshot": "snapshot",
    "SnapshotKey": "snapshot",
    "capture": "capturing",
    "cls_pool": "pooling",
    "last_pool": "pooling",
    "mean_pool": "pooling",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'layerwatch' has no attribute {name!r}")
    attr = "register" if name == "register_measurement" else name
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # pragma: no cover
    from .callback import LayerwatchCallback, watch
    from .capturing import capture
    from .config import LayerwatchConfig
    from .measures import Attention, Attribution, Dynamics, Measurement
    from .measures import register as register_measurement
    from .pooling import cls_pool, last_pool, mean_pool
    from .reduce import Reducer
    from .settings import Settings
    from .snapshot import Snapshot, SnapshotKey
    from .store import RunStore
