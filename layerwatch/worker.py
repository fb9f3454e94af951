"""A background process for the back half (layouts, metrics, frames, GIFs).

With ``background=True`` the training loop waits only for the capture: the snapshots go
to one worker process that lays them out and draws them in order while training goes on.
The worker keeps the films (previous layouts, axis limits) between snapshots, exactly as
the in-process pipeline does. Its failures come back as exceptions of the futures and
are reported by the callback; ``drain()`` waits for everything still queued.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_PIPELINE = None


def _start(root: str, config: Any, label_names: Any, regression: bool, reference_split: str | None) -> None:
    global _PIPELINE
    import matplotlib

    matplotlib.use("Agg")
    # The pipeline runs its layouts, metrics and frames under config.threads BLAS/OpenMP
    # threads, here as in the training process, which leaves the cores to training.
    from .pipeline import Pipeline
    from .store import RunStore

    _PIPELINE = Pipeline(RunStore(root), config, label_names, regression=regression, reference_split=reference_split)


def _process(snaps: dict, key: Any) -> dict:
    return _PIPELINE.process(snaps, key)


def _restore(up_to_step: int | None) -> None:
    _PIPELINE.restore(up_to_step)


class BackgroundWorker:
    """One worker process that runs :class:`~layerwatch.pipeline.Pipeline` jobs in order."""

    def __init__(self, root: str, config: Any, label_names: Any, regression: bool, reference_split: str | None):
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(root, config, label_names, regression, reference_split),
        )
        self.pending: list[tuple[Any, Future]] = []

    def restore(self, up_to_step: int | None) -> None:
        self._pool.submit(_restore, up_to_step).result()

    def submit(self, snaps: dict, key: Any) -> None:
        self.pending.append((key, self._pool.submit(_process, snaps, key)))

    def finished(self, block: bool = False) -> list[tuple[Any, Future]]:
        """Jobs that are done (all of them, waiting if needed, when ``block``), in order."""
        done = []
        while self.pending and (block or self.pending[0][1].done()):
            key, fut = self.pending.pop(0)
            try:
                fut.exception()  # waits for the job when blocking
            except BaseException:  # a cancelled job
                pass
            done.append((key, fut))
        return done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
