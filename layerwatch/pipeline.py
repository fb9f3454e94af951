"""The back half of the flow: stored snapshots -> every measurement's numbers and pictures.

The callback feeds it fresh snapshots during training (in the training process or a
background worker); ``layerwatch render`` feeds it snapshots read back from a run
directory. Both go through :class:`Pipeline`, so a re-rendered run looks exactly like one
drawn live. Each step of each measurement is guarded: a step that fails is reported and
costs only itself (``on_error="raise"`` makes it fatal).

The pipeline holds the run's :class:`~layerwatch.history.History`: filled once from the
run directory when a stored run is taken up (:meth:`Pipeline.restore`), appended to by
every measurement as each snapshot is processed; ``report.html`` and the head view are
drawn from it, never by re-reading earlier snapshots' files.
"""

from __future__ import annotations

import logging
from typing import Sequence

from .config import LayerwatchConfig
from .history import History
from .measures import Measurement, for_config
from .measures.base import Context
from .progress import Progress, quiet
from .reading import take_up
from .reduce import thread_limit
from .report import write_report
from .snapshot import Snapshot, SnapshotKey
from .store import RunStore

logger = logging.getLogger("layerwatch")


class Pipeline:
    """Turns snapshots into every measurement's numbers and pictures inside one run directory.

    Args:
        store: The run directory.
        config: The run's settings.
        label_names: Legend text per class id.
        regression: Labels are float targets (coloured by a colormap).
        reference_split: The split whose vectors other splits are measured against.
        measurements: The measurements to run (default: those ``config`` turns on).
        history: The history to append to (default: a new, empty one).
    """

    def __init__(
        self,
        store: RunStore,
        config: LayerwatchConfig,
        label_names: Sequence[str] | None = None,
        regression: bool = False,
        reference_split: str | None = None,
        measurements: Sequence[Measurement] | None = None,
        history: History | None = None,
    ):
        self.store = store
        self.config = config
        self.ctx = Context(store, config, label_names, regression, reference_split, history=history)
        self.measurements = list(measurements) if measurements is not None else for_config(config)
        self.failures: list[str] = []
        # The current snapshot's Progress (layerwatch.progress), set by the caller; None says nothing.
        self.progress: Progress | None = None

    @property
    def label_names(self) -> list[str] | None:
        return self.ctx.label_names

    @property
    def history(self) -> History:
        """What the pages are drawn from: every snapshot processed or taken up."""
        return self.ctx.history

    @property
    def embeddings(self):
        return self.measurements[0]

    # The embeddings measurement's state, which tests and tools read.
    @property
    def reducer(self):
        return self.embeddings.reducer

    @property
    def films(self):
        return self.embeddings.films

    def _figure(self, n_panels: int):
        return self.embeddings._figure(n_panels)

    def process(
        self, snaps: dict[str, Snapshot], key: SnapshotKey, render: bool = True, draw_splits: set[str] | None = None,
    ) -> dict[str, float]:
        """Measure and (optionally) draw one snapshot of every split.

        Args:
            snaps: The snapshot of every split.
            key: When it was taken.
            render: Draw frames and GIFs now (else only remember them for :meth:`render_all`).
            draw_splits: Splits to measure and draw (default: all); the others are only
                read as references (``layerwatch render --splits``).

        Returns the numbers as flat ``{"layerwatch/<split>/<metric>/layer_<i>": value}``;
        the steps that failed are in :attr:`failures`.
        """
        self.ctx.failures = []
        self.ctx.render = render
        self.ctx.draw_splits = draw_splits
        logs: dict[str, float] = {}
        progress = self.progress if self.progress is not None else quiet()
        self.ctx.progress = progress
        with thread_limit(self.config.threads):
            for m in self.measurements:
                progress.working(m.name)
                out = self.ctx.guard(f"{m.name}", key, m.process, self.ctx, key, snaps)
                logs.update(out or {})
                progress.done(f"{m.name} measured and drawn", 1)
            if render:
                self._write_report(key)
        self.failures = list(self.ctx.failures)
        return logs

    def _write_report(self, key: SnapshotKey | None) -> None:
        if self.config.report:
            self.ctx.guard(
                "writing report.html", key, write_report, self.store.root, texts=self.config.report_text,
                context=self.ctx, measurements=self.measurements,
            )

    def render_all(self) -> None:
        """Redraw every remembered picture with scales that hold the whole film."""
        self.ctx.failures = []
        self.ctx.render = True
        with thread_limit(self.config.threads):
            for m in self.measurements:
                self.ctx.guard(f"{m.name}", None, m.render_all, self.ctx)
            self._write_report(None)
        self.failures = list(self.ctx.failures)

    def restore(self, up_to_step: int | None = None, splits: Sequence[str] | None = None, vectors: bool = True) -> None:
        """Take up a stored run: the history and the films remember every stored snapshot
        (without redrawing), read once from the run directory.

        Used when training resumes from a checkpoint: new frames are tied to the last
        stored layout and the GIFs keep the frames already drawn. Damaged files are
        skipped with a warning that names them. ``splits`` reads only those;
        ``vectors=False`` reads no pooled vector (nothing is then measured against them).
        """
        take_up(self.ctx, self.measurements, up_to_step=up_to_step, splits=splits, vectors=vectors)
