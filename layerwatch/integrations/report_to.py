"""Which integrations a training run gets: read from ``TrainingArguments.report_to``.

``report_to`` names the tools the Trainer reports to; layerwatch follows it for the
three it knows (``tensorboard``, ``wandb``, ``mlflow``) and ignores the others. ``"all"``
means the tools transformers finds installed, as the Trainer reads it; ``"none"`` or an
empty list means none. A TensorBoard log directory can also be named on its own
(``tensorboard=``), with or without ``report_to``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .base import Integration

logger = logging.getLogger("layerwatch")

__all__ = ["KNOWN", "integrations_for", "report_targets"]

KNOWN = ("tensorboard", "wandb", "mlflow")


def report_targets(report_to: Any) -> list[str]:
    """The tools ``report_to`` names, as the Trainer reads it ("all" = those installed).

    Raises:
        ValueError: ``report_to`` is neither a string nor a list of strings.
    """
    if report_to is None:
        return []
    if isinstance(report_to, str):
        if report_to == "none":
            return []
        if report_to == "all":
            from transformers.integrations.integration_utils import get_available_reporting_integrations

            return list(get_available_reporting_integrations())
        return [report_to]
    try:
        names = [str(t) for t in report_to]
    except TypeError:
        raise ValueError(f"report_to={report_to!r} must be 'all', 'none', a tool's name or a list of names") from None
    if "all" in names:
        return report_targets("all")
    return [n for n in names if n != "none"]


def integrations_for(
    args: Any = None,
    trainer: Any = None,
    tensorboard: str | os.PathLike | None = None,
    *,
    metrics_logged: bool = False,
    projector_layers: Any = "last",
) -> list[Integration]:
    """The integrations a training run gets, each built and checked now.

    Args:
        args: The TrainingArguments (default: ``trainer.args``); its ``report_to`` picks the
            tools.
        trainer: The Trainer, so that TensorBoard writes with its ``TensorBoardCallback``'s
            writer (one log directory, one writer) and W&B and MLflow log into the runs its
            callbacks start.
        tensorboard: A TensorBoard log directory to write to as well as, or instead of,
            ``report_to``. When it is the Trainer's log directory the Trainer's writer is used.
        metrics_logged: The metrics also go through ``Trainer.log`` (so the Trainer's
            callbacks send them already: they are not sent twice).
        projector_layers: Layers for TensorBoard's Embedding Projector (see
            :class:`~layerwatch.integrations.tensorboard.TensorBoardIntegration`).

    Returns:
        The integrations, TensorBoard first, then W&B, then MLflow.

    Raises:
        ImportError: a tool is asked for but its package is missing (with the install hint).
        ValueError: a bad ``report_to`` or ``projector_layers``.
    """
    if args is None and trainer is not None:
        args = getattr(trainer, "args", None)
    targets = report_targets(getattr(args, "report_to", None))
    unknown = sorted(set(targets) - set(KNOWN))
    if unknown:
        logger.info("layerwatch: report_to names %s, which layerwatch does not send its films to", unknown)
    out: list[Integration] = []
    if "tensorboard" in targets or tensorboard is not None:
        from .tensorboard import TensorBoardIntegration, trainer_logging_dir

        own = os.path.abspath(os.fspath(tensorboard)) if tensorboard is not None else None
        trainers = trainer_logging_dir(args) if "tensorboard" in targets else None
        if "tensorboard" in targets:
            # The Trainer's own log directory, through its callback's writer.
            out.append(TensorBoardIntegration(
                None, trainer=trainer, args=args, metrics_logged=metrics_logged, projector_layers=projector_layers,
            ))
        if own is not None and (trainers is None or os.path.abspath(trainers) != own):
            # A log directory of the user's choosing, as well: a writer of its own.
            out.append(TensorBoardIntegration(own, metrics_logged=False, projector_layers=projector_layers))
    if "wandb" in targets:
        from .wandb import WandbIntegration

        out.append(WandbIntegration(scalars=not metrics_logged))
    if "mlflow" in targets:
        from .mlflow import MLflowIntegration

        out.append(MLflowIntegration(scalars=not metrics_logged))
    return out
