"""What the console says while a snapshot is taken: one bar per snapshot, or plain lines.

In a terminal a snapshot shows ONE progress bar (capture of every split, then each
measurement's back half), whose text says what is being worked on now ("capture
validation", "embeddings: laying out validation, layer 3 (2 of 7 done)") and how long
the snapshot will take: about as long as the one before it took (the first snapshot has
no such estimate; while its layouts run, the time their layers have taken so far says
how long the rest will take). Where the console is not a terminal (a log file, CI, a
notebook's captured output) bars would interleave with the Trainer's and leave escape
codes behind, so one plain line is printed per finished step instead::

    layerwatch epoch 1: captured train (32 rows) [0.4s]
    layerwatch epoch 1: laid out train (7 layers, 32 rows) [1.2s]
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
        expected: Seconds the snapshot is expected to take (the previous snapshot's), or
            None (no estimate: the first snapshot).
    """

    def __init__(
        self, title: str, total: int = 0, enabled: bool = True, stream: TextIO | None = None, expected: float | None = None,
    ):
        self.title = title
        self.expected = expected
        self.enabled = bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.enabled and _is_terminal(self.stream)
        self.started = time.perf_counter()
        self.bar = None
        if self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=max(int(total), 1), desc=f"layerwatch {title}", unit="step", leave=False, file=self.stream)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float | None:
        """Seconds the snapshot still needs by the previous one's time (None: no estimate,
        or the snapshot already took longer than that)."""
        if self.expected is None:
            return None
        left = self.expected - self.elapsed()
        return left if left > 0 else None

    def working(self, what: str, left: float | None = None, of: str = "the snapshot") -> None:
        """Say what is being worked on now (in the bar's text; plain lines say only what is done).

        The text ends with how long is left: ``left`` seconds for ``of`` when given, else
        the snapshot's own estimate (see :meth:`left`), else nothing.
        """
        if self.bar is None:
            return
        if left is None:
            left, of = self.left(), "the snapshot"
        eta = f" (about {_seconds(left)} left for {of})" if left is not None else ""
        self.bar.set_description_str(f"layerwatch {self.title}: {what}{eta}", refresh=True)

    def layouts(self, name: str, split: str, running: list, done: int, total: int, seconds: float) -> None:
        """``done`` of a split's ``total`` layers are laid out ``seconds`` after their start;
        ``running`` names the layers being laid out now.

        The text names them and how long the snapshot will take: by the previous
        snapshot's time where there is one, else by the time the layers done so far took
        (the split's remaining layouts only, and said so).
        """
        if self.bar is None or done >= total:
            return
        which = ", ".join(str(l) for l in running)
        what = f"{name}: laying out {split}, layer{'s' if len(running) > 1 else ''} {which} ({done} of {total} done)"
        left, of = self.left(), "the snapshot"
        if left is None and done:
            left, of = seconds / done * (total - done), f"{split}'s layouts"
        self.working(what, left, of)

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


def _seconds(s: float) -> str:
    s = max(int(round(s)), 1)
    return f"{s} s" if s < 90 else f"{s // 60} min {s % 60:02d} s"


def quiet() -> Progress:
    """A progress that says nothing."""
    return Progress("", enabled=False)
