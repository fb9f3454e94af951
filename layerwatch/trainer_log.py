"""How layerwatch's numbers reach the Trainer: its log history, or ``Trainer.log``.

Callbacks are not handed the Trainer. ``trainer.state.log_history`` is always reachable
(through ``state``); sending the numbers through ``Trainer.log``, which is what the
TensorBoard, W&B and MLflow callbacks listen to, needs the Trainer itself, which the user
hands over with :meth:`LayerwatchCallback.attach` (``layerwatch.watch(trainer, ...)`` does it
for you); the entries then go where ``Trainer.log`` sends them (the log history and every
callback's ``on_log``), with a copy of the state that carries the snapshot's epoch and step. Either way every entry carries the epoch and step of the snapshot it measures,
not of the moment it was written (a background worker finishes later).
"""

from __future__ import annotations

import copy
from typing import Any

from .snapshot import SnapshotKey


def reports(trainer_log: str, args: Any) -> bool:
    """Whether the numbers go through ``Trainer.log`` under ``trainer_log`` (see the setting)."""
    if trainer_log != "auto":
        return trainer_log == "report"
    targets = getattr(args, "report_to", None)
    if isinstance(targets, str):
        targets = [targets]
    return any(t not in (None, "none") for t in (targets or []))


class TrainerLog:
    """Writes one snapshot's numbers where ``trainer_log`` says."""

    def __init__(self, trainer_log: str):
        self.trainer_log = trainer_log
        self.trainer: Any = None

    def needs_trainer(self, args: Any) -> bool:
        return reports(self.trainer_log, args)

    def write(self, logs: dict[str, float], key: SnapshotKey, state: Any, args: Any = None) -> None:
        if not logs:
            return
        trainer = self.trainer
        if trainer is not None and reports(self.trainer_log, args if args is not None else getattr(trainer, "args", None)):
            self._through_trainer(trainer, dict(logs), key)
            return
        state = state if state is not None else getattr(trainer, "state", None)
        if state is not None:
            state.log_history.append({**logs, "epoch": key.epoch, "step": key.step})

    @staticmethod
    def _through_trainer(trainer: Any, logs: dict[str, float], key: SnapshotKey) -> None:
        # What Trainer.log does (an entry in the log history, then every callback's
        # on_log, which is what TensorBoard, W&B and MLflow listen to), stamped with the
        # snapshot's epoch and step: the callbacks get a copy of the state that says so,
        # and a copy of the control, so that the Trainer's own state and pending log (and,
        # under DDP, the collective that comes with it) are never touched.
        state = copy.copy(trainer.state)
        state.epoch, state.global_step = float(key.epoch), int(key.step)
        logs = {**logs, "epoch": state.epoch}
        trainer.state.log_history.append({**logs, "step": state.global_step})
        trainer.callback_handler.on_log(trainer.args, state, copy.copy(trainer.control), logs)
