"""What a failed step costs: the one rule of the run (``on_error``).

A monitor must not stop training for a picture it could not draw. Every step that may fail
(capturing a snapshot, storing it, each step of each measurement's back half, a
measurement's training event, the background worker's drawing) runs under an
:class:`ErrorPolicy`: with ``on_error="warn"`` a failure is named in a warning, kept in
:attr:`ErrorPolicy.failures` and costs only itself; with ``on_error="raise"`` it is raised.
Every message reads ``layerwatch: <stage>[ of snapshot <title>] failed (<Error>: <text>)``,
followed by what goes on.

Two scopes:

- ``"training"`` (the :class:`~layerwatch.monitor.Monitor`): a failed stage of a snapshot
  is kept and said with "training goes on and the next snapshot tries again"; a failure
  outside a snapshot with "training goes on".
- ``"step"`` (the back half's :class:`~layerwatch.measures.base.Context`): a failed step
  is said with "the other steps go on" and kept bare, for the snapshot's summary
  (:func:`summary`); a background worker keeps it without saying it
  (``announce=False``), the training process says it once per snapshot.

This module imports nothing of layerwatch (a leaf).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .snapshot import SnapshotKey

logger = logging.getLogger("layerwatch")

ON_ERROR = ("warn", "raise")
SCOPES = ("training", "step")
NEXT_SNAPSHOT = "training goes on and the next snapshot tries again (on_error='raise' makes this fatal)"
TRAINING_GOES_ON = "training goes on"
OTHER_STEPS = "the other steps go on"


def reason(exc: BaseException) -> str:
    """An exception as the messages name it: ``"OSError: disk full"``."""
    return f"{type(exc).__name__}: {exc}"


def failure_message(stage: str, key: "SnapshotKey | None", why: str) -> str:
    """``layerwatch: <stage>[ of snapshot <title>] failed (<why>)``."""
    when = f" of snapshot {key.title}" if key is not None else ""
    return f"layerwatch: {stage}{when} failed ({why})"


def summary(key: "SnapshotKey", stage: str, failures: Sequence[str]) -> str:
    """One message for the steps of a snapshot that failed (``failures``, as :class:`ErrorPolicy` keeps them)."""
    steps = "; ".join(f.removeprefix("layerwatch: ") for f in failures)
    return f"layerwatch: {stage} of snapshot {key.title} failed in {len(failures)} step(s): {steps}"


class ErrorPolicy:
    """Records or raises failures as ``on_error`` says (see the module docstring).

    Args:
        on_error: ``"warn"`` (record, say, go on) or ``"raise"``.
        scope: ``"training"`` or ``"step"``: what a message says goes on, and whether it is
            kept with it.
        announce: Say each failure in a warning as it happens (else only keep it).
    """

    def __init__(self, on_error: str = "warn", scope: str = "training", announce: bool = True):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} is not one of 'warn', 'raise'")
        if scope not in SCOPES:
            raise ValueError(f"scope={scope!r} is not one of 'training', 'step'")
        self.on_error = on_error
        self.scope = scope
        self.announce = announce
        self.failures: list[str] = []
        self._warned: set[str] = set()

    @property
    def fatal(self) -> bool:
        """Whether a failure is raised (``on_error="raise"``)."""
        return self.on_error == "raise"

    def fail(self, stage: str, key: "SnapshotKey | None", why: str) -> str:
        """Record that ``stage`` (of snapshot ``key``) failed for ``why``; returns the message kept."""
        message = failure_message(stage, key, why)
        if self.scope == "step":
            self._keep(message, f"{message}; {OTHER_STEPS}")
            return message
        message = f"{message}; {NEXT_SNAPSHOT if key is not None else TRAINING_GOES_ON}"
        self._keep(message, message)
        return message

    def note(self, message: str, say: bool = True) -> None:
        """Record a message made elsewhere (a :func:`summary` of a snapshot's failed steps);
        ``say=False`` keeps it without a warning (its steps were said as they failed)."""
        if say and self.announce:
            logger.warning("%s", message)
        self.failures.append(message)

    def run(self, stage: str, key: "SnapshotKey | None", fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; a failure is raised (``on_error="raise"``) or recorded.
        Returns what ``fn`` returned, or None when it failed."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if self.fatal:
                raise
            self.fail(stage, key, reason(exc))
            return None

    def warn_once(self, what: str, message: str) -> None:
        """Say ``message`` the first time ``what`` happens in this run (a warning, not a failure)."""
        if what not in self._warned:
            self._warned.add(what)
            logger.warning("layerwatch: %s", message)

    def _keep(self, kept: str, said: str) -> None:
        if self.announce:
            logger.warning("%s", said)
        self.failures.append(kept)
