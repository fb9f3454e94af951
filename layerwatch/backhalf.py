"""The back half of one run, as the training process drives it.

A :class:`BackHalf` runs every measurement's numbers and pictures (a
:class:`~layerwatch.pipeline.Pipeline`) in the training process, or hands the snapshots to
a background worker (:mod:`layerwatch.worker`, ``background=True``) and collects what it
finished. Either way the numbers go to the Trainer's log (:mod:`layerwatch.trainer_log`)
and to the integrations (TensorBoard, W&B, MLflow), and a failure follows the run's
:class:`~layerwatch.errors.ErrorPolicy`. When the worker gives up, the training process
takes up the stored run and draws the rest itself.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from .config import LayerwatchConfig
from .errors import ErrorPolicy, summary
from .pipeline import Pipeline
from .progress import Progress
from .snapshot import SnapshotKey
from .store import RunStore
from .trainer_log import TrainerLog, reports
from .worker import BackgroundWorker

logger = logging.getLogger("layerwatch")


class BackHalf:
    """Starts, feeds, collects and closes the back half of one run (main process only).

    Args:
        store: The run directory.
        config: The run's settings.
        measurements: The classes of the run's measurements (each half builds its own).
        log: Where the numbers go for the Trainer.
        errors: The run's error policy (failures are kept there).
    """

    def __init__(
        self, store: RunStore, config: LayerwatchConfig, measurements: Sequence[type], log: TrainerLog, errors: ErrorPolicy,
    ):
        self.store = store
        self.config = config
        self.measurements = list(measurements)
        self.log = log
        self.errors = errors
        self.pipeline: Pipeline | None = None
        self.worker = None
        self.integrations: list = []
        self.run_view = None
        self._labels: tuple[list[str] | None, bool, str | None] = (None, False, None)

    @property
    def started(self) -> bool:
        return self.pipeline is not None or self.worker is not None

    @property
    def steps_here(self) -> int:
        """Steps of a snapshot's progress that this process runs (none when a worker draws)."""
        return len(self.measurements) if self.worker is None else 0

    def start(
        self, label_names: list[str] | None, regression: bool, reference_split: str | None,
        restore_up_to: int | None = None, args: Any = None,
    ) -> None:
        """Start the integrations and the back half; a resume (``restore_up_to``: the step it
        resumes at) takes up the stored run's snapshots up to that step."""
        self._labels = (label_names, regression, reference_split)
        self._start_integrations(args)
        if self.config.background:
            self.worker = BackgroundWorker(
                self.store.root, self.config, label_names, regression, reference_split, self.measurements,
            )
            if restore_up_to is not None:
                self.worker.restore(restore_up_to)
        else:
            self.pipeline = self._pipeline()
            if restore_up_to is not None:
                self.pipeline.restore(up_to_step=restore_up_to)

    def _pipeline(self) -> Pipeline:
        label_names, regression, reference_split = self._labels
        return Pipeline(
            self.store, self.config, label_names, regression=regression,
            reference_split=reference_split, measurements=[cls(self.config) for cls in self.measurements],
        )

    def _start_integrations(self, args: Any) -> None:
        """TensorBoard, W&B and MLflow, as ``report_to`` and ``tensorboard=`` ask (main process)."""
        if args is None and self.config.tensorboard is None:
            return
        from .integrations import RunInfo, integrations_for  # the tools' modules, only when one is asked for

        trainer = self.log.trainer
        self.integrations = integrations_for(
            args, trainer=trainer, tensorboard=self.config.tensorboard,
            metrics_logged=trainer is not None and reports(self.config.trainer_log, args if args is not None else trainer.args),
            projector_layers=self.config.projector_layers,
        )
        self.run_view = RunInfo.from_store(self.store) if self.integrations else None

    def send(self, key: SnapshotKey, snaps: dict | None, logs: dict) -> None:
        """A snapshot's numbers and pictures to the integrations (their failures are kept)."""
        if self.integrations:
            from .integrations import send_snapshot

            self.errors.failures.extend(send_snapshot(self.integrations, self.run_view, key, snaps, logs))

    def submit(self, key: SnapshotKey, snaps: dict, state: Any, args: Any, progress: Progress | None = None) -> None:
        """Hand a stored snapshot over: to the worker (then collect what it finished), or drawn now."""
        if self.worker is not None:
            self.worker.submit(key, snaps)
            self.collect(state, args, block=False)
            return
        self._process(self.pipeline, key, snaps, state, args, progress)

    def _process(
        self, pipeline: Pipeline, key: SnapshotKey, snaps: dict, state: Any, args: Any, progress: Progress | None = None,
    ) -> None:
        pipeline.progress = progress
        try:
            logs = self.errors.run("drawing", key, pipeline.process, snaps, key)
        finally:
            pipeline.progress = None
        if logs is None:
            return
        if pipeline.failures:
            # Each failed step was said as it happened; the run keeps one line for the snapshot.
            self.errors.note(summary(key, "drawing", pipeline.failures), say=False)
        self.log.write(logs, key, state, args)
        self.send(key, snaps, logs)

    def collect(self, state: Any = None, args: Any = None, block: bool = False) -> None:
        """Report what the background worker finished (everything, when ``block``)."""
        if self.worker is None:
            return
        for result in self.worker.finished(block):
            if result.error is not None:
                if self.errors.fatal:
                    raise RuntimeError(f"layerwatch: drawing (background) of snapshot {result.key.title} failed: {result.error}")
                self.errors.fail("drawing (background)", result.key, result.error.splitlines()[0])
                continue
            if result.failures:
                # The worker's own warnings go to its stderr; say it here, once per snapshot.
                self.errors.note(summary(result.key, "drawing (background)", result.failures))
            self.log.write(result.logs, result.key, state, args)
            self.send(result.key, result.snaps, result.logs)
        if self.worker.given_up:
            left = list(self.worker.pending)
            self.worker.close()
            self.worker = None
            self.pipeline = self._pipeline()
            first = min((k.step for k, _ in left), default=None)
            self.pipeline.restore(up_to_step=None if first is None else first - 1)
            for key, snaps in left:
                self._process(self.pipeline, key, snaps, state, args)

    def close(self, state: Any = None, args: Any = None) -> None:
        """Wait for the worker's last snapshots, close it, and finish the integrations."""
        if self.worker is not None:
            try:
                self.collect(state, args, block=True)
            finally:
                if self.worker is not None:
                    self.worker.close()
                self.worker = None
        if self.integrations:
            from .integrations import finish_all

            self.errors.failures.extend(finish_all(self.integrations, self.run_view))
