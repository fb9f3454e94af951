"""Films: one picture per snapshot, drawn on scales shared by the whole film, stitched into a GIF.

A film remembers its frames' data (layouts, heatmap values, ...) so that when a new
frame needs wider scales (axis limits, a colour range), the earlier frames are redrawn
with them and the whole film stays comparable. Scales grow with some headroom, so this is
rare.

The GIF is built under the run directory's lock from the frame files present when it is
written: a frame that could not be written is redrawn from the film's memory first, and
frames another process wrote are included, so the last writer's GIF always holds every
frame there is, and one failed write costs only that frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .animate import gif_bytes, read_png
from .snapshot import SnapshotKey, sort_keys

# Scales grow by this much more than needed, so that a film rarely has to redraw its
# earlier frames.
HEADROOM = 0.15


@dataclass
class Frame:
    key: SnapshotKey
    data: Any


def _union(a, b):
    return (min(a[0], b[0]), max(a[1], b[1]))


def _contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] >= inner[1]


def widen(lim, frac: float = HEADROOM):
    pad = (lim[1] - lim[0]) * frac / 2
    return (lim[0] - pad, lim[1] + pad)


class Ranges:
    """A list of (low, high) ranges (per panel axis limits, a colour range) that only grow."""

    def __init__(self) -> None:
        self.value: list | None = None

    def update(self, new: Sequence) -> bool:
        """Grow to hold ``new`` (same nesting as the value); True when anything changed."""
        new = [tuple(tuple(r) for r in item) if isinstance(item[0], (tuple, list)) else tuple(item) for item in new]
        if self.value is None or len(self.value) != len(new):
            self.value = [_grow(None, item) for item in new]
            return True
        changed = False
        for j, item in enumerate(new):
            if not _holds(self.value[j], item):
                self.value[j] = _grow(self.value[j], item)
                changed = True
        return changed

    def reset(self) -> None:
        self.value = None


def _holds(old, new) -> bool:
    if isinstance(new[0], tuple):
        return all(_contains(o, n) for o, n in zip(old, new))
    return _contains(old, new)


def _grow(old, new):
    if isinstance(new[0], tuple):
        return tuple(widen(n if old is None else _union(o, n)) for o, n in zip(old or [None] * len(new), new))
    return widen(new if old is None else _union(old, new))


class Film:
    """The frames of one picture over training.

    Args:
        store: The run directory.
        frame_path: The PNG path of a frame's key.
        gif_path: Where the film goes.
        draw: ``draw(frame, scale) -> png bytes``.
        extent: ``extent(frame) -> ranges`` the frame needs on the film's scales, or None
            for a film without shared scales.
        duration: Seconds per GIF frame.
        frames_on_disk: The keys of the frame files present (for the GIF); default: the
            keys in memory whose files exist.
    """

    def __init__(
        self,
        store: Any,
        frame_path: Callable[[SnapshotKey], str],
        gif_path: str,
        draw: Callable[[Frame, Any], bytes],
        extent: Callable[[Frame], Sequence] | None = None,
        duration: float = 1.0,
        frames_on_disk: Callable[[], list[SnapshotKey]] | None = None,
    ):
        self.store = store
        self.frame_path = frame_path
        self.gif_path = gif_path
        self._draw = draw
        self._extent = extent
        self.duration = duration
        self._on_disk = frames_on_disk
        self.frames: list[Frame] = []
        self.scale = Ranges()

    @property
    def previous(self) -> Frame | None:
        return self.frames[-1] if self.frames else None

    def add(self, frame: Frame) -> bool:
        """Remember ``frame`` (replacing one of the same key); True when the scales grew."""
        self.frames = [f for f in self.frames if f.key != frame.key]
        self.frames.append(frame)
        self.frames.sort(key=lambda f: f.key.order)
        if self._extent is None:
            return False
        return self.scale.update(self._extent(frame))

    def fit_scales(self) -> None:
        """Scales that hold every remembered frame (before redrawing a whole film)."""
        self.scale.reset()
        if self._extent is not None:
            for f in self.frames:
                self.scale.update(self._extent(f))

    def draw(self, frame: Frame) -> str:
        png = self._draw(frame, self.scale.value)
        return self.store.write_bytes(self.frame_path(frame.key), png)

    def show(self, ctx: Any, frame: Frame) -> None:
        """Add ``frame``, draw it (or the whole film, if the scales grew) and rewrite the GIF.

        Each drawing is a step of its own (see ``Context.guard``).
        """
        grew = self.add(frame)
        todo = self.frames if grew else [frame]
        for f in todo:
            ctx.guard(f"drawing {os.path.basename(self.frame_path(f.key))}", f.key, self.draw, f)
        ctx.guard(f"writing {os.path.basename(self.gif_path)}", frame.key, self.write_gif, ctx)

    def redraw(self, ctx: Any) -> None:
        self.fit_scales()
        for f in self.frames:
            ctx.guard(f"drawing {os.path.basename(self.frame_path(f.key))}", f.key, self.draw, f)
        ctx.guard(f"writing {os.path.basename(self.gif_path)}", None, self.write_gif, ctx)

    def write_gif(self, ctx: Any = None) -> str | None:
        """Stitch the frames present into the GIF (redrawing any that went missing)."""
        with self.store.lock():
            for f in self.frames:
                if not os.path.exists(self.frame_path(f.key)):
                    if ctx is None:
                        self.draw(f)
                    else:
                        ctx.guard(f"redrawing {os.path.basename(self.frame_path(f.key))}", f.key, self.draw, f)
            keys = self._on_disk() if self._on_disk is not None else [f.key for f in self.frames]
            paths = [self.frame_path(k) for k in sort_keys(keys) if os.path.exists(self.frame_path(k))]
            if not paths:
                return None
            frames = []
            for p in paths:
                try:
                    frames.append(read_png(p))
                except Exception:  # a damaged frame file is left out of the GIF, not fatal
                    continue
            if not frames:
                return None
            return self.store.write_bytes(self.gif_path, gif_bytes(frames, self.duration))
