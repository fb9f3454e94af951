"""Taking one snapshot: capture, agree across ranks, gather, assemble, store, hand over.

A :class:`Snapshotter` runs the capture pass over every monitored split (under DDP each rank
its share; a sharded model in lockstep), lets the ranks agree that every share was taken,
gathers the shares on the main process, assembles each split's
:class:`~layerwatch.snapshot.Snapshot` (the head's predictions matched to the labels, each
measurement's arrays), lets each measurement do its own work after the pass, stores the
arrays before anything is drawn, and hands the snapshot to the back half
(:class:`~layerwatch.backhalf.BackHalf`). A failure follows the run's
:class:`~layerwatch.errors.ErrorPolicy`, and all ranks fail or skip together.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from . import distributed as dist
from .backhalf import BackHalf
from .capturing import COMMON, Lockstep, capture_split
from .config import LayerwatchConfig
from .errors import ErrorPolicy, reason
from .measures.base import Measurement, SplitPlan
from .model_info import ModelInfo
from .progress import Progress, quiet
from .snapshot import Snapshot, SnapshotKey
from .store import RunStore

logger = logging.getLogger("layerwatch")


class Snapshotter:
    """Takes the snapshots of one run (see the module docstring).

    Args:
        config: The run's settings.
        splits: The monitored splits (name -> :class:`~layerwatch.splits.MonitoredSplit`).
        measurements: The run's measurements (their front halves).
        store: The run directory.
        model_info: What the monitor knows of the model (filled by its check).
        errors: The run's error policy.
        back_half: Where the stored snapshots go.
    """

    def __init__(
        self, config: LayerwatchConfig, splits: Mapping[str, Any], measurements: Sequence[Measurement], store: RunStore,
        model_info: ModelInfo, errors: ErrorPolicy, back_half: BackHalf,
    ):
        self.config = config
        self.splits = splits
        self.measurements = list(measurements)
        self.store = store
        self.model_info = model_info
        self.errors = errors
        self.back_half = back_half
        self.last_step = -1
        # Seconds the last snapshot took in this process (None before the first).
        self._snapshot_seconds: float | None = None
        # Sharded training (FSDP, ZeRO-3): the engine, and the module whose forward gathers.
        self.engine: str | None = None
        self.runner: Any = None

    def take(self, model: Any, key: SnapshotKey, state: Any = None, args: Any = None, fatal: bool = False) -> None:
        """Capture every split and send the snapshot down the back half.

        ``fatal``: a failure stops training (the first snapshot, before any step, whose
        failure is a bad configuration); otherwise failures follow ``on_error``.
        """
        started = time.perf_counter()
        raise_now = fatal or self.errors.fatal
        parts, error = None, None
        rows = sum(len(s.indices) for s in self.splits.values())
        progress = Progress(
            key.title, rows + self.back_half.steps_here, enabled=self.config.progress and dist.is_main(),
            expected=self._snapshot_seconds,
        )
        try:
            parts = self.capture(model, progress)
        except Exception as exc:
            error = exc
        failures = dist.agree(error is None, reason(error) if error else "")
        if failures:
            progress.close()
            if raise_now:
                raise error if error is not None else dist.RankFailed("; ".join(failures))
            if dist.is_main():
                self.errors.fail("capture", key, "; ".join(failures) if error is None else reason(error))
            return
        gathered = dist.gather_splits(parts, {name: len(s.indices) for name, s in self.splits.items()})
        error = None
        if dist.is_main():
            try:
                self.hand_over(model, key, gathered, state, args, progress)
            except Exception as exc:
                error = exc
            finally:
                progress.close()
        failures = dist.agree(error is None, reason(error) if error else "")
        self.last_step = key.step
        if failures and raise_now:
            raise error if error is not None else dist.RankFailed("; ".join(failures))
        if error is not None:
            self.errors.fail("handing over", key, reason(error))
        if error is None:
            # What the next snapshot's progress expects to take (the same rows and work).
            self._snapshot_seconds = time.perf_counter() - started
        logger.info("layerwatch: %s done in %.1fs", key.title, time.perf_counter() - started)

    def capture(self, model: Any, progress: Progress | None = None) -> dict[str, dict]:
        """This rank's share of every split: ``{split: {measurement name: Part}}`` (None: no rows)."""
        rank, world = dist.rank_world()
        info = self.model_info
        out = {}
        for s in self.splits.values():
            positions = np.arange(len(s.indices))[rank::world] if world > 1 else np.arange(len(s.indices))
            share = s.indices[positions]
            # Sharded: every rank makes the same forward calls, a rank with fewer rows padding ones.
            lockstep = None
            if self.engine is not None:
                lockstep = Lockstep(
                    steps=Lockstep.steps_for(len(s.indices), world, self.config.batch_size),
                    filler=int(s.indices[0]), runner=self.runner,
                )
            if not len(share) and lockstep is None:
                out[s.name] = None
                continue
            plan = SplitPlan(
                split=s.name, indices=share, positions=positions, n_rows=len(s.indices),
                labels=info.labels[s.name][positions], layers=info.layers or self.config.layers,
                config=self.config, model_info=info,
            )
            out[s.name] = capture_split(
                model, s.dataset, plan, self.measurements, batch_size=self.config.batch_size,
                progress=progress if progress is not None else quiet(), autocast=info.autocast,
                lockstep=lockstep,
            )
        return out

    def assemble(self, key: SnapshotKey, name: str, parts: dict) -> Snapshot:
        """One split's gathered parts into its :class:`Snapshot`."""
        info = self.model_info
        s = self.splits[name]
        snap = Snapshot(
            labels=info.labels[name], indices=s.indices, epoch=key.epoch, step=key.step, split=name, with_step=key.with_step,
            label_names=tuple(info.label_names) if info.label_names else None,
        )
        head = parts.get(COMMON)
        to_label = info.head_to_label
        if head is not None and "head_predictions" in head.rows:
            outputs = head.meta.get("outputs")
            if outputs is not None and to_label is not None and outputs != len(to_label):
                self.errors.warn_once("outputs", f"the model returned {outputs} logits per row but its config says "
                                      f"{len(to_label)}; model accuracy and error marks are left out")
            else:
                snap.predictions = info.head.map(head.rows["head_predictions"])
                if snap.predictions is None:
                    self.errors.warn_once("head", f"model accuracy and error marks are left out: {info.head_reason}")
        for m in self.measurements:
            if m.name in parts:
                m.assemble(parts[m.name], snap)
        if self.config.highlight_errors is True and snap.predictions is None:
            raise ValueError("highlight_errors=True, but the model returned no classification logits to mark errors with")
        info.layers = tuple(int(v) for v in snap.layers)
        return snap

    def hand_over(
        self, model: Any, key: SnapshotKey, gathered: dict, state: Any, args: Any, progress: Progress | None = None,
    ) -> None:
        """Assemble, let each measurement work after the pass, store, and hand to the back half."""
        snaps = {name: self.assemble(key, name, parts) for name, parts in gathered.items() if parts is not None}
        for m in self.measurements:
            self.errors.run(m.name, key, m.after_capture, model, snaps, key, self.model_info)
        # Stored before anything is drawn: a snapshot whose drawing fails can be drawn
        # again later (`layerwatch render`).
        for snap in snaps.values():
            for m in self.measurements:
                self.errors.run(f"storing the {m.name} of {snap.split}", key, m.save, self.store, snap, key)
        self.back_half.submit(key, snaps, state, args, progress)
