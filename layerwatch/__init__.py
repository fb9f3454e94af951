"""layerwatch: watch every layer of a transformer reorganise its representations while it is fine-tuned."""

__version__ = "0.1.0"

from .capture import Snapshot, capture  # noqa: E402
from .config import LayerwatchConfig  # noqa: E402
from .callback import LayerwatchCallback  # noqa: E402
from .pooling import cls_pool, mean_pool  # noqa: E402
from .reduce import Reducer  # noqa: E402
from .store import RunStore  # noqa: E402

__all__ = [
    "LayerwatchCallback",
    "LayerwatchConfig",
    "Reducer",
    "RunStore",
    "Snapshot",
    "capture",
    "cls_pool",
    "mean_pool",
    "__version__",
]
