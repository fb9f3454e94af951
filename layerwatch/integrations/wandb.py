"""Weights & Biases: the frames as images per step, the films as videos, the last
snapshot's rows as a table for W&B's projector, and the report page.

What a run adds to a W&B run:

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

import logging
import os
import re
from typing import Any, Mapping

import numpy as np

from ..measures.embeddings.files import load_layout, load_snapshot
from ..snapshot import Snapshot, SnapshotKey
from ..store import DamagedFileError
from .base import (
    Integration, RunInfo, frame_paths, label_texts, last_key, prediction_texts, readable_file, snapshot_splits, text_of,
)

logger = logging.getLogger("layerwatch")

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
        self, run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float],
    ) -> None:
        target = self.run()
        data: dict[str, Any] = {}
        if self.images:
            for split, path in frame_paths(run, key, snapshot_splits(run, key, snaps)).items():
                data[f"layerwatch/frames/{split}"] = self.wandb.Image(path, caption=f"{split} - {key.title}")
        if self.scalars:
            data.update({k: float(v) for k, v in logs.items()})
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
            if key is None:
                continue
            last_step = key.step if last_step is None else max(last_step, key.step)
            gif = run.store.gif_path(split)
            if self.videos and readable_file(run, gif):
                data[f"layerwatch/films/{split}"] = self.wandb.Video(gif, format="gif", caption=f"{split}: every snapshot")
            if self.table:
                table = self._rows_table(run, split, key)
                if table is not None:
                    data[f"layerwatch/rows/{split}"] = table
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

    def _rows_table(self, run: RunInfo, split: str, key: SnapshotKey) -> Any:
        """The last snapshot's rows with their 2-D position in every layer (None when unreadable)."""
        try:
            snap = load_snapshot(run.store, split, key, run.label_names, pooled=False)  # rows, not vectors
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
            return None
        coords: dict[str, np.ndarray] = {}
        try:
            layout = load_layout(run.store, split, key)
            for j, layer in enumerate(np.asarray(layout["layers"]).tolist()):
                if layout["layout"].shape[1] == snap.num_rows:
                    coords[f"layer_{int(layer)}_x"] = layout["layout"][j, :, 0]
                    coords[f"layer_{int(layer)}_y"] = layout["layout"][j, :, 1]
        except (FileNotFoundError, DamagedFileError) as exc:
            # The rows are worth a table even without their places (a layout that failed).
            logger.warning("layerwatch: the %s table of %s has no 2-D coordinates (%s)", split, key.title, exc)
        texts = run.texts(split)
        labels = label_texts(run, snap.labels)
        predictions = prediction_texts(run, snap.predictions)
        columns = ["row", "text", "label", "prediction", "correct", *coords]
        data = []
        for i in range(snap.num_rows):
            pred = predictions[i] if predictions is not None else None
            correct = None if predictions is None else bool(int(snap.predictions[i]) == int(snap.labels[i]))
            row = [int(snap.indices[i]), text_of(texts.get(int(snap.indices[i]))), labels[i], pred, correct]
            row.extend(float(c[i]) for c in coords.values())
            data.append(row)
        return self.wandb.Table(columns=columns, data=data)

    def __repr__(self) -> str:
        return f"WandbIntegration(run={'wandb.run' if self._run is None else getattr(self._run, 'id', self._run)!r})"


def _artifact_name(text: str) -> str:
    # W&B artifact names allow letters, digits, '-', '_' and '.'.
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:128]
