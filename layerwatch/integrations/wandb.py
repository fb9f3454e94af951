"""Weights & Biases: the frames as images per step, the films as videos, the last
snapshot's rows as a table for W&B's projector, and the report page.

What a run adds to a W&B run (the embeddings' part; every other measurement adds what its
``sends`` gives: scalars, images ``layerwatch/frames/<name>``, videos
``layerwatch/films/<name>``, tables ``layerwatch/<name>``):

- ``layerwatch/frames/<split>``: each snapshot's frame, logged with
  ``train/global_step`` = the snapshot's step (the x-axis the Trainer's ``WandbCallback``
  declares), so that the media panel's slider walks through training;
- ``layerwatch/<split>/<metric>/layer_<i>``: the metrics at the same step (left out when
  they already came through ``Trainer.log``);
- at the end: ``layerwatch/films/<split>`` (the GIF as a video),
  ``layerwatch/rows/<split>`` (a table of the last snapshot's rows: ``row``, ``text``,
  ``label``, ``prediction``, ``correct`` and ``layer_<i>_x`` / ``layer_<i>_y``, the 2-D
  layout of every layer, which the table's 2D Projection panel plots), and the report
  page (``report.html``, when the run has one) as ``layerwatch/report`` and as an artifact
  of type ``layerwatch-report``.

During training it logs into the run that the Trainer's ``WandbCallback`` started
(``wandb.run``); ``layerwatch export --wandb DIR`` starts an offline run of its own.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from ..measures.base import Film, Image, Scalar, Table
from ..snapshot import Snapshot, SnapshotKey
from .base import Integration, RunInfo, last_key, read_image, readable_file

__all__ = ["WandbIntegration", "require_wandb", "STEP_METRIC"]

INSTALL_HINT = 'pip install "layerwatch[wandb]"'
# The x-axis that transformers' WandbCallback declares for every key ("*").
STEP_METRIC = "train/global_step"


def require_wandb() -> Any:
    """The ``wandb`` module, or an ImportError with the install hint."""
    try:
        import wandb
    except ImportError:
        raise ImportError(
            f"sending layerwatch to Weights & Biases needs the wandb package, which is not installed; {INSTALL_HINT}"
        ) from None
    return wandb


class WandbIntegration(Integration):
    """Sends the run to a W&B run.

    Args:
        run: The W&B run to log into. None: ``wandb.run`` at each call (the run the
            Trainer's ``WandbCallback`` started).
        scalars: Log the metrics (leave them out when they come through ``Trainer.log``).
        images: Log each snapshot's frames.
        videos: Log the GIFs as videos at the end.
        table: Log the table of the last snapshot's rows at the end.
        report: Log ``report.html`` at the end, when the run directory has one.
        finish_run: Finish the W&B run in :meth:`finish` (for a run of its own).

    Raises:
        ImportError: wandb is not installed (with the install hint).
    """

    name = "wandb"

    def __init__(
        self,
        run: Any = None,
        *,
        scalars: bool = True,
        images: bool = True,
        videos: bool = True,
        table: bool = True,
        report: bool = True,
        finish_run: bool = False,
    ):
        self.wandb = require_wandb()
        self._run = run
        self.scalars = bool(scalars)
        self.images = bool(images)
        self.videos = bool(videos)
        self.table = bool(table)
        self.report = bool(report)
        self.finish_run = bool(finish_run)
        self._last_step: int | None = None

    def run(self) -> Any:
        """The W&B run logged into now.

        Raises:
            RuntimeError: there is none, saying how to start one.
        """
        run = self._run if self._run is not None else self.wandb.run
        if run is None:
            raise RuntimeError(
                "no W&B run is active; train with report_to='wandb' (the Trainer's WandbCallback starts one), "
                "or call wandb.init() before training"
            )
        return run

    def snapshot(
        self, run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float] | None,
    ) -> None:
        target = self.run()
        items = run.items(key, snaps, logs, (Scalar,) + ((Image,) if self.images else ()))
        data: dict[str, Any] = {}
        for item in items:
            if isinstance(item, Image) and read_image(run, item.path) is not None:
                data[f"layerwatch/frames/{item.name}"] = self.wandb.Image(item.path, caption=item.caption or None)
        # Without scalars (they came through Trainer.log) only the numbers the log lacks are sent.
        data.update(run.scalars(items, logs, with_logs=self.scalars))
        if data:
            # No step=: W&B's own step counts log calls and must only grow, while
            # snapshots drawn in the background arrive late. The step axis is the
            # Trainer's global step, logged with every row as the WandbCallback does.
            target.log({**data, STEP_METRIC: key.step})
        self._last_step = key.step if self._last_step is None else max(self._last_step, key.step)

    def finish(self, run: RunInfo) -> None:
        target = self.run()
        data: dict[str, Any] = {}
        last_step = self._last_step
        for split in run.splits():
            key = last_key(run, split)
            if key is not None:
                last_step = key.step if last_step is None else max(last_step, key.step)
        kinds = ((Film,) if self.videos else ()) + ((Table,) if self.table else ())
        for item in run.items(None, kinds=kinds) if kinds else ():
            if isinstance(item, Film) and readable_file(run, item.path):
                data[f"layerwatch/films/{item.name}"] = self.wandb.Video(item.path, format="gif", caption=item.caption or None)
            elif isinstance(item, Table):
                data[f"layerwatch/{item.name}"] = self.wandb.Table(columns=list(item.columns), data=item.rows)
        report = run.store.file_path("report.html")
        if self.report and os.path.exists(report):
            with open(report, encoding="utf-8") as fh:
                # inject=False: the page stays as layerwatch wrote it (no stylesheet from the network).
                data["layerwatch/report"] = self.wandb.Html(fh.read(), inject=False)
        if data:
            target.log({**data, STEP_METRIC: last_step or 0})
        if self.report and os.path.exists(report):
            artifact = self.wandb.Artifact(_artifact_name(f"layerwatch-report-{run.name}"), type="layerwatch-report")
            artifact.add_file(report, name="report.html")
            target.log_artifact(artifact)
        if self.finish_run:
            target.finish()

    def __repr__(self) -> str:
        return f"WandbIntegration(run={'wandb.run' if self._run is None else getattr(self._run, 'id', self._run)!r})"


def _artifact_name(text: str) -> str:
    # W&B artifact names allow letters, digits, '-', '_' and '.'.
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:128]
