"""Where users already look: layerwatch's films in TensorBoard, Weights & Biases and MLflow.

During training, the training process builds the integrations once with
:func:`integrations_for` (from ``TrainingArguments.report_to`` and the Trainer) and, after
each snapshot is drawn, calls :func:`send_snapshot`; at the end :func:`finish_all`.
``layerwatch export`` sends a finished run from its stored files through the same
integrations (:func:`export_run`). Each tool's library is imported only when its
integration is built, and a missing one raises an ImportError with the install hint
(``pip install "layerwatch[tensorboard]"``, ``[wandb]``, ``[mlflow]``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "Integration": "base",
    "RunInfo": "base",
    "send_snapshot": "base",
    "finish_all": "base",
    "integrations_for": "report_to",
    "report_targets": "report_to",
    "TensorBoardIntegration": "tensorboard",
    "WandbIntegration": "wandb",
    "MLflowIntegration": "mlflow",
    "export_run": "export",
    "send_run": "export",
    "add_export_command": "export",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'layerwatch.integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # pragma: no cover
    from .base import Integration, RunInfo, finish_all, send_snapshot
    from .export import add_export_command, export_run, send_run
    from .mlflow import MLflowIntegration
    from .report_to import integrations_for, report_targets
    from .tensorboard import TensorBoardIntegration
    from .wandb import WandbIntegration
