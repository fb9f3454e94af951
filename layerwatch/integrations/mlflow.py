"""MLflow: the films, ``metrics.csv`` and the report page as run artifacts, the metrics
as MLflow metrics at their steps.

What a run adds to an MLflow run (the embeddings' part; every other measurement adds what
its ``sends`` gives: metrics, and its films and files as artifacts):

- metrics ``layerwatch/<split>/<metric>/layer_<i>`` at each snapshot's global step (left
  out when they already came through ``Trainer.log``);
- at the end, under the artifact folder ``layerwatch/``: ``<split>.gif`` of every split,
  ``metrics.csv`` and ``report.html`` (when the run directory has them).

During training it logs into the active run (the one the Trainer's ``MLflowCallback``
started). That callback ends its run when training ends, before layerwatch's last
snapshots and films are in, so the run is remembered at the first snapshot and written
to through ``MlflowClient`` by its id, which MLflow allows for a finished run too.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ..measures.base import File, Film, Scalar
from ..snapshot import Snapshot, SnapshotKey
from .base import Integration, RunInfo, readable_file

__all__ = ["MLflowIntegration", "require_mlflow"]

INSTALL_HINT = 'pip install "layerwatch[mlflow]"'
# MLflow takes at most this many metrics in one log_batch call.
_BATCH = 1000


def require_mlflow() -> Any:
    """The ``mlflow`` module, or an ImportError with the install hint."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401
    except ImportError:
        raise ImportError(
            f"sending layerwatch to MLflow needs the mlflow package, which is not installed; {INSTALL_HINT} "
            "(mlflow-skinny; the full mlflow package, needed for `mlflow ui`, works as well)"
        ) from None
    return mlflow


class MLflowIntegration(Integration):
    """Sends the run to an MLflow run.

    Args:
        run_id: The MLflow run to log into. None: the active run at the first call.
        tracking_uri: Its tracking store. None: MLflow's current tracking URI.
        scalars: Log the metrics (leave them out when they come through ``Trainer.log``).
        artifact_path: The artifact folder the files go to.
        end_run: Mark the run finished in :meth:`finish` (for a run of its own).

    Raises:
        ImportError: mlflow is not installed (with the install hint).
    """

    name = "mlflow"

    def __init__(
        self,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        *,
        scalars: bool = True,
        artifact_path: str = "layerwatch",
        end_run: bool = False,
    ):
        self.mlflow = require_mlflow()
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.scalars = bool(scalars)
        self.artifact_path = artifact_path
        self.end_run = bool(end_run)
        self._client: Any = None

    def client(self) -> Any:
        """The client and the run it logs into (fixed at the first call).

        Raises:
            RuntimeError: no run_id was given and no MLflow run is active.
        """
        if self._client is None:
            if self.run_id is None:
                active = self.mlflow.active_run()
                if active is None:
                    raise RuntimeError(
                        "no MLflow run is active; train with report_to='mlflow' (the Trainer's MLflowCallback starts "
                        "one), or call mlflow.start_run() before training"
                    )
                self.run_id = active.info.run_id
            if self.tracking_uri is None:
                self.tracking_uri = self.mlflow.get_tracking_uri()
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def snapshot(
        self, run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float] | None,
    ) -> None:
        client = self.client()
        # Without scalars (they came through Trainer.log) only the numbers the log lacks are sent.
        values = run.scalars(run.items(key, snaps, logs, (Scalar,)), logs, with_logs=self.scalars)
        if not values:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(key.step)) for k, v in sorted(values.items())]
        for i in range(0, len(metrics), _BATCH):
            client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])

    def finish(self, run: RunInfo) -> None:
        client = self.client()
        files = [item.path for item in run.items(None, kinds=(Film, File))]
        files.append(run.store.file_path("report.html"))
        for path in files:
            if readable_file(run, path):
                client.log_artifact(self.run_id, path, artifact_path=self.artifact_path)
        if self.end_run:
            client.set_terminated(self.run_id)

    def __repr__(self) -> str:
        return f"MLflowIntegration(run_id={self.run_id!r}, tracking_uri={self.tracking_uri!r})"
