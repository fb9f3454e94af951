"""One layerwatch run: what the callback conducts.

A :class:`Monitor` holds the monitored splits, the run's label vocabulary and what it knows
of the model (:class:`~layerwatch.model_info.ModelInfo`); the callback tells it when to
check the model, open the run directory and take a snapshot, and it hands the work to the
parts that do it:

- :meth:`check_model`: every check that needs the model (layers, pooling, labels against
  the head, sharding, each measurement's own), before the first training step;
- :meth:`open`: the run directory (:class:`~layerwatch.opening.RunOpener`: a new run, or
  the stored run being resumed, refused when its settings, rows or labels differ), then
  the back half (:class:`~layerwatch.backhalf.BackHalf`, in process or a background worker);
- :meth:`snapshot`: :class:`~layerwatch.snapshotter.Snapshotter` (capture every split, agree
  across ranks, gather, store, hand to the back half);
- the training events of measurements that record from training itself.

Every failure follows one :class:`~layerwatch.errors.ErrorPolicy` (``on_error``).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Mapping

import numpy as np

from . import distributed as dist
from . import sharding
from ._version import __version__
from .backhalf import BackHalf
from .capturing import check_pooling, count_hidden_states
from .config import LayerwatchConfig, check_output_dir, resolve_layers
from .errors import ErrorPolicy
from .labels import HeadMatch, LabelVocabulary, match_head, resolve
from .measures import for_config
from .measures.base import TrainingRun
from .model_info import ModelInfo
from .model_utils import computed_precision, model_device
from .precision import autocast_factory, resolve_precision
from .opening import CHECKPOINT_FILE, RunOpener, adapter_settings, write_checkpoint
from .snapshot import SnapshotKey
from .snapshotter import Snapshotter
from .splits import prepare_splits
from .store import RunStore
from .trainer_log import TrainerLog

__all__ = ["CHECKPOINT_FILE", "Monitor", "adapter_settings", "write_checkpoint"]

logger = logging.getLogger("layerwatch")


class Monitor:
    """See the module docstring."""

    def __init__(self, splits: Mapping[str, Any], config: LayerwatchConfig):
        self.config = config
        self.splits, self.base_labels = prepare_splits(splits, config)
        check_output_dir(config.output_dir)
        self.store = RunStore(config.output_dir)
        self.reference_split = "train" if "train" in self.splits else next(iter(self.splits))
        self.measurements = for_config(config)
        for m in self.measurements:
            m.check_splits(self.splits)
        self.vocab: LabelVocabulary | None = None
        self.model_info = ModelInfo(
            precision=config.precision, head=HeadMatch(None, "the model has not been checked yet"),
            indices={name: s.indices for name, s in self.splits.items()},
            datasets={name: s.dataset for name, s in self.splits.items()},
        )
        self.errors = ErrorPolicy(config.on_error)
        self.log = TrainerLog(config.trainer_log)
        self.back_half = BackHalf(self.store, config, [type(m) for m in self.measurements], self.log, self.errors)
        self.snapshotter = Snapshotter(config, self.splits, self.measurements, self.store, self.model_info, self.errors, self.back_half)
        self.run_dir = RunOpener(self.store, config, self.splits)
        self.run_id = uuid.uuid4().hex
        self._checked = False
        self._args: Any = None  # the Trainer's arguments, handed over at open()
        self._declared: str | None = None
        self._wrapped: Any = None

    @property
    def regression(self) -> bool:
        return self.base_labels.regression

    @property
    def label_names(self) -> list[str] | None:
        return None if self.vocab is None or self.vocab.regression else list(self.vocab.names)

    @property
    def head(self) -> HeadMatch:
        return self.model_info.head

    @property
    def precision(self) -> str:
        """What the capture pass computes in (known once the model is checked)."""
        return self.model_info.precision

    @property
    def failures(self) -> list[str]:
        """Messages of every step that failed during the run."""
        return self.errors.failures

    @property
    def last_step(self) -> int:
        return self.snapshotter.last_step

    @last_step.setter
    def last_step(self, step: int) -> None:
        self.snapshotter.last_step = int(step)

    # The sharding engine and the module whose forward gathers the shards, as the capture uses them.
    @property
    def engine(self) -> str | None:
        return self.snapshotter.engine

    @engine.setter
    def engine(self, value: str | None) -> None:
        self.snapshotter.engine = value

    @property
    def runner(self) -> Any:
        return self.snapshotter.runner

    @runner.setter
    def runner(self, value: Any) -> None:
        self.snapshotter.runner = value

    # The back half, as the callback and tools look at it.
    @property
    def pipeline(self):
        return self.back_half.pipeline

    @property
    def worker(self):
        return self.back_half.worker

    @property
    def integrations(self) -> list:
        return self.back_half.integrations

    @property
    def run_view(self):
        return self.back_half.run_view

    # -- before training -------------------------------------------------------------
    def check_model(self, model: Any, tokenizer: Any = None) -> None:
        """Check the model against the settings and labels (raises a ValueError that says
        what to do), and fix the run's label vocabulary."""
        info = self.model_info
        n_states = count_hidden_states(model)
        if n_states is not None:
            info.layers = resolve_layers(self.config.layers, n_states)
        check_pooling(model, self.config.pooling)
        cfg = getattr(model, "config", None)
        id2label, num_labels = getattr(cfg, "id2label", None), getattr(cfg, "num_labels", None)
        feature_names = next((s.feature_names for s in self.splits.values() if s.feature_names), None)
        self.vocab = resolve(self.base_labels, self.config.label_names, feature_names, id2label, num_labels)
        info.head = match_head(self.vocab, id2label, num_labels)
        info.labels = {name: s.labels(self.vocab) for name, s in self.splits.items()}
        info.label_names = self.label_names
        if self.config.highlight_errors is True and info.head.to_label is None:
            raise ValueError(
                f"highlight_errors=True, but the model's outputs cannot be matched to the labels: {info.head.reason} "
                "(or pass highlight_errors=None to mark errors only where they can be)"
            )
        device = model_device(model)
        resolved = resolve_precision(self.config.precision, device)
        # What the capture truly computes in: fp32 asked of weights stored in bf16 is bf16.
        info.precision = computed_precision(resolved, model)
        info.autocast = autocast_factory(resolved, device)
        info.model_name, info.tokenizer = type(model).__name__, tokenizer
        self._check_sharding(model)
        for m in self.measurements:
            m.prepare(model, info)
        self._checked = True

    def sharded_by(self, declared: str | None, wrapped: Any = None) -> None:
        """What the training arguments say (``"fsdp"``, ``"zero3"`` or None) and the wrapped
        model the Trainer trains (``trainer.model_wrapped``), for :meth:`check_model`."""
        self._declared, self._wrapped = declared, wrapped

    def _check_sharding(self, model: Any) -> None:
        """Find the engine that shards ``model`` and refuse, before the first step, what
        layerwatch cannot do under it."""
        found = sharding.engine(model) or sharding.engine(self._wrapped)
        if found is None and self._declared is not None and self._wrapped is None:
            # FSDP1 hides its wrapper from callbacks: without the Trainer no one can tell.
            raise ValueError(
                f"training shards the model ({self._declared}), but LayerwatchCallback was handed the unwrapped model "
                "only and cannot find the module whose forward gathers the shards; call watch.attach(trainer) before "
                "trainer.train() (or build the callback with layerwatch.watch(trainer, ...))"
            )
        self.engine = found
        self.runner = sharding.runner(model, self._wrapped) if found else None
        if found is None:
            return
        if found == "fsdp1" and self.runner is model:
            raise ValueError(
                "the model is sharded by FSDP (version 1), whose shards only the FullyShardedDataParallel wrapper's "
                "forward gathers, and no wrapper was found around the model; call watch.attach(trainer) before "
                "trainer.train(), or train with FSDP2 (fsdp_config={'version': 2})"
            )
        if self.config.measure("attribution") is not None:
            raise NotImplementedError(
                f"attribution=True is not supported when {sharding.ENGINES[found]} shards the model: its integrated gradients "
                "need a backward pass, and under sharding every backward pass gathers and reduces gradients on all "
                "ranks into the training gradients, so it would change training (or hang, run on the main process "
                "alone). Pass attribution=False (embeddings and attention=True work under sharding), or run "
                "layerwatch.capture and layerwatch.measures.attribution.ig.attribute on a saved checkpoint"
            )

    def open(
        self, model: Any, global_step: int, checkpoint_dir: str | None = None, args: Any = None, epoch: float | None = None,
    ) -> None:
        """Prepare the run directory (main process), then agree with every rank.

        ``global_step > 0`` is a resume: the stored run must have been taken with the
        same settings, rows and labels; snapshots it took after ``global_step`` are moved
        to ``superseded/`` (``epoch``: the checkpoint's epoch, for files whose names give no step).
        """
        resuming = global_step > 0
        self._args = args
        dist.together(
            self._open_main if dist.is_main() else (lambda *a: None), model, resuming, global_step, checkpoint_dir, epoch,
        )
        if resuming:
            self.last_step = int(global_step)

    def _open_main(
        self, model: Any, resuming: bool, global_step: int, checkpoint_dir: str | None, epoch: float | None = None,
    ) -> None:
        store = self.store
        # Before anything is checked, written or removed: one run at a time in a folder.
        store.directory.claim()
        try:
            with store.lock():
                restore_up_to, self.run_id = self.run_dir.open(
                    self.run_info(model), self.run_id, self.vocab, self.model_info.tokenizer, resuming=resuming,
                    global_step=global_step, checkpoint_dir=checkpoint_dir, epoch=epoch,
                )
            self.back_half.start(self.label_names, self.regression, self.reference_split, restore_up_to, self._args)
        except BaseException:
            store.directory.release()
            raise

    def run_info(self, model: Any) -> dict:
        import sklearn
        import torch
        import transformers

        config = getattr(model, "config", None)
        vocab = self.vocab
        return {
            "layerwatch_version": __version__,
            "config": self.config.to_dict(),
            "model_name": getattr(config, "_name_or_path", None) or type(model).__name__,
            "model_class": type(model).__name__,
            "label_names": self.label_names,
            "label_kind": "regression" if self.regression else "class",
            "labels": vocab.to_json() if vocab is not None else None,
            "head_match": {"to_label": list(self.head.to_label) if self.head.to_label else None, "reason": self.head.reason},
            "reference_split": self.reference_split,
            "precision": self.precision,
            "adapter": adapter_settings(model),
            "sharding": self.engine,
            "measurements": [m.name for m in self.measurements],
            "methods": {m.name: m.describe() for m in self.measurements if m.describe()},
            "splits": {
                s.name: {"rows": int(len(s.indices)), "label_column": s.column, "subset": s.digest()}
                for s in self.splits.values()
            },
            "versions": {
                "layerwatch": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
            },
        }

    # -- training passes (measurements that record from training itself) -------------------
    def training_begin(self, model: Any, args: Any, state: Any, dataloader: Any, tokenizer: Any, checkpoint: str | None) -> None:
        run = TrainingRun(
            model, args, state, dataloader, self.store, tokenizer, self.model_info.head_names, self.splits, checkpoint,
        )
        for m in self.measurements:
            self._training_event(m, "train_begin", run)

    def training_step(self, armed: bool) -> None:
        for m in self.measurements:
            m.train_step(armed)

    def training_epoch_end(self, state: Any) -> None:
        for m in self.measurements:
            self._training_event(m, "train_epoch_end", state)

    def training_save(self, folder: str, state: Any) -> None:
        for m in self.measurements:
            self._training_event(m, "train_save", folder, state)

    def training_end(self, state: Any) -> None:
        for m in self.measurements:
            self._training_event(m, "train_end", state)

    def _training_event(self, m: Any, event: str, *a: Any) -> None:
        self.errors.run(f"{m.name} ({event})", None, getattr(m, event), *a)

    # -- snapshots -----------------------------------------------------------------
    def snapshot(self, model: Any, key: SnapshotKey, state: Any = None, args: Any = None, fatal: bool = False) -> None:
        """Capture every split and send the snapshot down the back half (:meth:`Snapshotter.take`).

        ``fatal``: a failure stops training (the first snapshot, before any step, whose
        failure is a bad configuration); otherwise failures follow ``on_error``.
        """
        if not self._checked:
            self.check_model(model)
        self.snapshotter.take(model, key, state, args, fatal)

    def collect(self, state: Any = None, args: Any = None, block: bool = False) -> None:
        """Report what the background worker finished (everything, when ``block``)."""
        self.back_half.collect(state, args, block)

    def close(self, state: Any = None, args: Any = None) -> None:
        try:
            self.back_half.close(state, args)
            if self.failures:
                logger.warning("layerwatch: %d step(s) of snapshots failed during training; see the warnings above", len(self.failures))
        finally:
            self.store.directory.release()  # the run is over: another may use the folder

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "output_dir": os.path.abspath(self.config.output_dir),
            "last_step": int(self.last_step),
            "subsets": {s.name: s.digest() for s in self.splits.values()},
        }
