"""What the console says while a snapshot is taken: one bar per snapshot, or plain lines.

In a terminal a snapshot shows ONE progress bar (capture of every split, then each
measurement's back half), whose text says what is being worked on now ("capture
validation", "embeddings"). Where the console is not a terminal (a log file, CI, a
notebook's captured output) bars would interleave with the Trainer's and leave escape
codes behind, so one plain line is printed per finished step instead::

    layerwatch epoch 1: captured train (32 rows) [0.4s]
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


class Progress:
    """The progress of one snapshot.

    Args:
        title: The snapshot (``"epoch 1"``).
        total: Units of work in all (rows to capture plus one per back-half step).
        enabled: False: say nothing.
        stream: Where to write (default: ``sys.stderr``, as the Trainer's bars).
    """

    def __init__(self, title: str, total: int = 0, enabled: bool = True, stream: TextIO | None = None):
        self.title = title
        self.enabled = bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.enabled and _is_terminal(self.stream)
        self.started = time.perf_counter()
        self.bar = None
        if self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=max(int(total), 1), desc=f"layerwatch {title}", unit="step", leave=False, file=self.stream)

    def working(self, what: str) -> None:
        """Say what is being worked on now (in the bar's text; plain lines say only what is done)."""
        if self.bar is not None:
            self.bar.set_description_str(f"layerwatch {self.title}: {what}", refresh=True)

    def advance(self, units: int = 1) -> None:
        """Count ``units`` of work done (the bar moves; no line is printed)."""
        if self.bar is not None:
            self.bar.update(int(units))

    def done(self, what: str, units: int = 0) -> None:
        """A step finished: the bar moves by ``units``; off a terminal, one plain line."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(int(units))
            return
        print(f"layerwatch {self.title}: {what} [{time.perf_counter() - self.started:.1f}s]", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet() -> Progress:
    """A progress that says nothing."""
    return Progress("", enabled=False)
