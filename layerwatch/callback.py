"""The Trainer callback: schedules snapshots and hands them down the pipeline."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import time
import uuid
import weakref
from typing import Any, Mapping

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from . import __version__
from .capture import Snapshot, capture, count_hidden_states
from .config import LayerwatchConfig, check_output_dir, check_split_name, resolve_layers
from .data import encode_labels, get_column, num_rows, resolve_label_column, stratified_subset, column_names
from .pipeline import Pipeline
from .store import RUN_FILE, RunStore, SnapshotKey

logger = logging.getLogger("layerwatch")

# Files and folders a run directory holds; ``overwrite=True`` removes exactly these.
_RUN_ENTRIES = ("embeddings", "layouts", "frames", "metrics.csv", RUN_FILE)


class _Split:
    """A monitored split: its dataset, label column and fixed subset."""

    def __init__(self, name: str, dataset: Any, config: LayerwatchConfig):
        self.name = check_split_name(name)
        self.dataset = dataset
        self.column = resolve_label_column(dataset, config.label_column, name)
        if "input_ids" not in column_names(dataset):
            raise ValueError(
                f"split {name!r} has no column 'input_ids' (it has {column_names(dataset)}); pass a tokenized "
                "dataset, for example ds.map(lambda b: tokenizer(b['text'], truncation=True), batched=True)"
            )
        if num_rows(dataset) == 0:
            raise ValueError(f"split {name!r} has no rows; pass a dataset with rows or leave the split out")
        labels = encode_labels(get_column(dataset, self.column), name, self.column)
        self.kind = labels.kind
        self.string_names = labels.names
        self.feature_names = _class_label_names(dataset, self.column)
        self.indices = stratified_subset(labels.values, config.max_samples, config.seed, labels.kind)
        self.labels = labels.values[self.indices]


def _class_label_names(dataset: Any, column: str) -> tuple[str, ...] | None:
    feature = getattr(dataset, "features", {}).get(column) if hasattr(dataset, "features") else None
    names = getattr(feature, "names", None)
    return tuple(names) if names else None


def _reports(trainer_log: str, args: Any) -> bool:
    """Whether layerwatch's metrics go through ``Trainer.log`` (see ``trainer_log``)."""
    if trainer_log != "auto":
        return trainer_log == "report"
    targets = getattr(args, "report_to", None)
    if isinstance(targets, str):
        targets = [targets]
    return any(t not in (None, "none") for t in (targets or []))


def _find_trainer() -> Any:
    """The Trainer whose loop called us, so that metrics go through ``Trainer.log``.

    Callbacks are not handed the Trainer; logging through it (rather than appending to
    ``state.log_history``) is what lets TensorBoard, W&B or MLflow callbacks see them.
    """
    frame = inspect.currentframe()
    try:
        for _ in range(12):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            obj = frame.f_locals.get("self")
            if obj is not None and hasattr(obj, "callback_handler") and callable(getattr(obj, "log", None)):
                return obj
    finally:
        del frame
    return None


_LIVE: "weakref.WeakValueDictionary[str, LayerwatchCallback]" = weakref.WeakValueDictionary()


class LayerwatchCallback(TrainerCallback, ExportableState):
    """Snapshot every layer of the model at the start of training and after each epoch.

    For each split, a fixed stratified subset of rows is run through the model with
    hidden states; each layer's pooled vectors are stored, laid out in 2-D, measured,
    drawn as one frame per snapshot and stitched into ``<output_dir>/<split>.gif``.

    Args:
        splits: ``{"train": train_ds, "validation": val_ds}``: tokenized datasets with
            ``input_ids``, ``attention_mask`` and a label column.
        output_dir: The run directory.
        **settings: Any field of :class:`~layerwatch.config.LayerwatchConfig`
            (``max_samples``, ``method``, ``layers``, ``pooling``, ``every_n_steps``, ...).

    Bad settings raise here, before training; the model is checked at ``on_train_begin``,
    before the first step.
    """

    def __init__(self, splits: Mapping[str, Any] | None, output_dir: str = "layerwatch_run", **settings: Any):
        if splits is None:
            live = _LIVE.get(os.path.abspath(os.fspath(output_dir)))
            if live is None:
                raise ValueError("splits=None: pass the datasets to monitor, e.g. splits={'train': train_ds}")
            # Rebuilt by the Trainer from a checkpoint: take over the live callback's data.
            self.__dict__.update({k: v for k, v in live.__dict__.items() if k != "resume_state"})
            return
        unknown = sorted(set(settings) - set(LayerwatchConfig.__dataclass_fields__))
        if unknown:
            allowed = ", ".join(sorted(LayerwatchConfig.__dataclass_fields__))
            raise TypeError(f"LayerwatchCallback got unknown settings {unknown}; allowed: {allowed}")
        self.config = LayerwatchConfig(output_dir=output_dir, **settings)
        if not isinstance(splits, Mapping) or not splits:
            raise ValueError(
                "splits must be a non-empty dict of name -> dataset, for example "
                "{'train': train_ds, 'validation': val_ds}"
            )
        self.splits = {name: _Split(name, ds, self.config) for name, ds in splits.items()}
        kinds = {s.kind for s in self.splits.values()}
        if len(kinds) > 1:
            raise ValueError("some splits hold class labels and others regression targets; use one kind of label")
        self.regression = kinds == {"regression"}
        self._check_class_counts()
        self._warn_small_splits()
        check_output_dir(self.config.output_dir)
        self.store = RunStore(self.config.output_dir)
        self.reference_split = "train" if "train" in self.splits else next(iter(self.splits))
        self.pipeline: Pipeline | None = None
        self.label_names: list[str] | None = None
        self.layers: tuple[int, ...] | None = None
        self._last_step_captured = -1
        self._run_id = uuid.uuid4().hex
        self._worker = None
        self.failures: list[str] = []
        _LIVE[os.path.abspath(self.config.output_dir)] = self

    # -- checks that need no model ------------------------------------------
    def _check_class_counts(self) -> None:
        if self.regression:
            return
        n_classes = max(int(s.labels.max()) + 1 for s in self.splits.values())
        if self.config.label_names is not None and len(self.config.label_names) < n_classes:
            raise ValueError(
                f"label_names has {len(self.config.label_names)} names but the labels go up to {n_classes - 1}; "
                f"pass {n_classes} names"
            )
        for s in self.splits.values():
            if len(s.labels) < n_classes:
                raise ValueError(
                    f"split {s.name!r} keeps {len(s.labels)} rows for {n_classes} classes; a picture and its "
                    "metrics need several rows per class: pass a larger split or raise max_samples"
                )

    def _warn_small_splits(self) -> None:
        if self.config.method != "tsne":
            return
        for s in self.splits.values():
            n = len(s.indices)
            if n - 1 < 3 * self.config.perplexity:
                logger.warning(
                    "layerwatch: split %r keeps %d rows, too few for t-SNE perplexity %g; it will be lowered "
                    "to %g (pass perplexity= to choose, or max_samples= larger)",
                    s.name, n, self.config.perplexity, max(1.0, (n - 1) / 3),
                )

    # -- checks that need the model -----------------------------------------
    def _resolve_label_names(self, model: Any) -> list[str] | None:
        if self.regression:
            return None
        n_classes = max(int(s.labels.max()) + 1 for s in self.splits.values())
        if self.config.label_names is not None:
            return list(self.config.label_names)
        for s in self.splits.values():
            if s.string_names is not None:
                return list(s.string_names)
            if s.feature_names is not None and len(s.feature_names) >= n_classes:
                return list(s.feature_names)
        id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
        names = [id2label.get(i, id2label.get(str(i))) for i in range(n_classes)]
        if all(names):
            return [str(n) for n in names]
        return [str(i) for i in range(n_classes)]

    def setup(self, model: Any) -> None:
        """Check the model against the settings and prepare the run directory."""
        n_states = count_hidden_states(model)
        if n_states is not None:
            self.layers = resolve_layers(self.config.layers, n_states)
        self.label_names = self._resolve_label_names(model)
        self.pipeline = Pipeline(
            self.store, self.config, self.label_names, regression=self.regression,
            reference_split=self.reference_split,
        )
        if self.config.background and self._worker is None and _dist_rank_world()[0] == 0:
            from .worker import BackgroundWorker

            self._worker = BackgroundWorker(
                self.store.root, self.config, self.label_names, self.regression, self.reference_split,
            )

    def _prepare_run_dir(self, model: Any, resuming: bool) -> None:
        existing = os.path.exists(self.store.run_path)
        if existing and not resuming:
            if not self.config.overwrite:
                raise ValueError(
                    f"output_dir={self.config.output_dir!r} already holds a layerwatch run; pass overwrite=True "
                    "to replace it, or another output_dir"
                )
            for entry in _RUN_ENTRIES:
                path = os.path.join(self.store.root, entry)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
            for split in os.listdir(self.store.root):
                if split.endswith(".gif") or (split.startswith("metrics_") and split.endswith(".png")):
                    os.remove(os.path.join(self.store.root, split))
        if existing and resuming:
            info = self.store.read_run()
            self._run_id = info.get("run_id", self._run_id)
        else:
            info = {"run_id": self._run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        info.update(self.run_info(model))
        self.store.write_run(info)

    def run_info(self, model: Any) -> dict:
        import sklearn
        import torch
        import transformers

        config = getattr(model, "config", None)
        return {
            "layerwatch_version": __version__,
            "config": self.config.to_dict(),
            "model_name": getattr(config, "_name_or_path", None) or type(model).__name__,
            "model_class": type(model).__name__,
            "label_names": self.label_names,
            "label_kind": "regression" if self.regression else "class",
            "reference_split": self.reference_split,
            "splits": {s.name: {"rows": int(len(s.indices)), "label_column": s.column} for s in self.splits.values()},
            "versions": {
                "layerwatch": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
            },
        }

    # -- snapshots -----------------------------------------------------------
    def capture_all(self, model: Any, key: SnapshotKey) -> dict[str, Snapshot] | None:
        """Capture every split; under DDP each rank takes its share and rank 0 gets them all.

        Returns the snapshots on the main process (after storing them), None elsewhere.
        """
        rank, world = _dist_rank_world()
        snaps = {}
        for s in self.splits.values():
            share = s.indices[rank::world] if world > 1 else s.indices
            part = None
            if len(share):
                part = capture(
                    model, s.dataset, layers=self.layers or self.config.layers, pooling=self.config.pooling,
                    batch_size=self.config.batch_size, label_column=s.column, indices=share,
                    progress=self.config.progress and rank == 0, split=s.name,
                )
            snap = _gather(part, s.indices, world, rank) if world > 1 else part
            if snap is None:
                continue
            snap.epoch, snap.step, snap.split = key.epoch, key.step, s.name
            self.layers = tuple(int(v) for v in snap.layers)
            self.store.save_snapshot(snap, key)
            snaps[s.name] = snap
        return snaps if rank == 0 else None

    def snapshot(self, model: Any, key: SnapshotKey, trainer: Any = None, state: Any = None) -> None:
        """Capture every split and send it down the pipeline; failures follow ``on_error``."""
        if self.pipeline is None:
            self.setup(model)
        started = time.perf_counter()
        first = self._is_first(key)
        try:
            try:
                snaps = self.capture_all(model, key)
            except Exception as exc:
                # The first capture runs before any training step: a failure there is a bad
                # configuration (no hidden states, layers out of range) and stops the run now.
                if first or self.config.on_error == "raise":
                    raise
                self._report(key, "capture", exc)
                return
            if snaps is None:  # another rank: rank 0 draws
                return
            if self._worker is not None:
                self._worker.submit(snaps, key)
                self._last_step_captured = key.step
                self._collect(trainer, state, block=False)
                return
            try:
                logs = self.pipeline.process(snaps, key)
            except Exception as exc:
                if self.config.on_error == "raise":
                    raise
                self._report(key, "drawing", exc)
                return
        finally:
            _barrier()
        self._last_step_captured = key.step
        logger.info("layerwatch: %s done in %.1fs", key.title, time.perf_counter() - started)
        self._log(logs, trainer, state)

    def _log(self, logs: dict, trainer: Any, state: Any) -> None:
        if not logs:
            return
        if trainer is not None and _reports(self.config.trainer_log, getattr(trainer, "args", None)):
            # Trainer.log clears control.should_log; keep the Trainer's own pending log
            # (and, under DDP, the collective that comes with it on every rank).
            control = getattr(trainer, "control", None)
            pending = getattr(control, "should_log", None)
            trainer.log(dict(logs))
            if control is not None and pending is not None:
                control.should_log = pending
        else:
            state = state if state is not None else getattr(trainer, "state", None)
            if state is not None:
                state.log_history.append({**logs, "epoch": state.epoch, "step": state.global_step})

    def _collect(self, trainer: Any, state: Any, block: bool) -> None:
        """Report what the background worker finished (everything, when ``block``)."""
        if self._worker is None:
            return
        for key, fut in self._worker.finished(block):
            exc = fut.exception()
            if exc is not None:
                if self.config.on_error == "raise":
                    raise exc
                self._report(key, "drawing (background)", exc)
            else:
                self._log(fut.result(), trainer, state)

    def _report(self, key: SnapshotKey, stage: str, exc: BaseException) -> None:
        msg = (
            f"layerwatch: {stage} of snapshot {key.title} failed ({type(exc).__name__}: {exc}); "
            "training goes on and the next snapshot tries again (on_error='raise' makes this fatal)"
        )
        logger.warning(msg)
        self.failures.append(msg)

    def _is_first(self, key: SnapshotKey) -> bool:
        return key.epoch == 0 and key.step == 0

    def _key(self, state: Any, epoch: int | None = None) -> SnapshotKey:
        if epoch is None:
            epoch = int(np.floor((state.epoch or 0) + 1e-6))
        return SnapshotKey(epoch=epoch, step=int(state.global_step), with_step=self.config.every_n_steps is not None)

    def _takes_part(self, state: Any) -> bool:
        # Under DDP every rank captures its share; without it only the main process works.
        return state.is_world_process_zero or _dist_rank_world()[1] > 1

    # -- resuming --------------------------------------------------------------
    def state(self) -> dict:
        """What a checkpoint keeps of this callback (the Trainer's stateful-callback mechanism).

        Datasets cannot travel in a checkpoint, so the callback rebuilt from this state takes
        its splits and settings from the live callback of the same ``output_dir``.
        """
        return {
            "args": {"splits": None, "output_dir": self.config.output_dir},
            "attributes": {
                "resume_state": {
                    "run_id": self._run_id,
                    "last_step": int(self._last_step_captured),
                    "subset": {s.name: _digest(s.indices) for s in self.splits.values()},
                }
            },
        }

    def _check_resume(self) -> None:
        saved = getattr(self, "resume_state", None)
        if not saved:
            return
        if saved.get("run_id") and os.path.exists(self.store.run_path):
            stored = self.store.read_run().get("run_id")
            if stored and stored != saved["run_id"]:
                raise ValueError(
                    f"the checkpoint belongs to layerwatch run {saved['run_id']} but output_dir="
                    f"{self.config.output_dir!r} holds run {stored}; point output_dir at the run being resumed"
                )
        for name, digest in saved.get("subset", {}).items():
            if name in self.splits and _digest(self.splits[name].indices) != digest:
                raise ValueError(
                    f"split {name!r} now yields other rows than the run being resumed; pass the same dataset, "
                    "max_samples and seed as before"
                )

    # -- Trainer events ------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("LayerwatchCallback needs the model; use it as a callback of transformers.Trainer")
        _check_not_sharded(args)
        self.setup(model)
        if not self._takes_part(state):
            return
        resuming = state.global_step > 0
        if state.is_world_process_zero:
            self._check_resume()
            self._prepare_run_dir(model, resuming)
            if resuming:
                (self._worker or self.pipeline).restore(up_to_step=state.global_step)
        if resuming:
            self._last_step_captured = int(state.global_step)
            return
        self.snapshot(model, self._key(state, epoch=0), _find_trainer(), state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        n = self.config.every_n_steps
        if n and self._takes_part(state) and state.global_step % n == 0 and state.global_step != self._last_step_captured:
            self.snapshot(model, self._key(state), _find_trainer(), state)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.config.every_n_steps is None and self._takes_part(state):
            self.snapshot(model, self._key(state, epoch=int(round(state.epoch or 0))), _find_trainer(), state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.config.every_n_steps and self._takes_part(state) and state.global_step != self._last_step_captured:
            self.snapshot(model, self._key(state), _find_trainer(), state)
        if self._worker is not None:
            # The last snapshot is finished before train() returns.
            try:
                self._collect(_find_trainer(), state, block=True)
            finally:
                self._worker.close()
                self._worker = None
        if self.failures:
            logger.warning("layerwatch: %d snapshot(s) failed during training; see the warnings above", len(self.failures))


# -- several processes ------------------------------------------------------------

def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if _dist_rank_world()[1] > 1:
        dist.barrier()


def _gather(part: Snapshot | None, indices: np.ndarray, world: int, rank: int) -> Snapshot | None:
    """Gather each rank's share (rows ``rank::world`` of the subset) on rank 0, in subset order."""
    import torch.distributed as dist

    payload = None if part is None else (part.pooled, part.predictions, part.labels, part.layers)
    parts: list | None = [None] * world if rank == 0 else None
    dist.gather_object(payload, parts, dst=0)
    if rank != 0:
        return None
    first = next(p for p in parts if p is not None)
    n_layers, _, dim = first[0].shape
    pooled = np.empty((n_layers, len(indices), dim), dtype=np.float32)
    labels = np.empty(len(indices), dtype=first[2].dtype)
    predictions = None if first[1] is None else np.empty(len(indices), dtype=np.int64)
    for r, p in enumerate(parts):
        if p is None:
            continue
        pooled[:, r::world] = p[0]
        labels[r::world] = p[2]
        if predictions is not None:
            predictions[r::world] = p[1]
    return Snapshot(pooled=pooled, labels=labels, layers=first[3], indices=np.asarray(indices), predictions=predictions)


def _check_not_sharded(args: Any) -> None:
    """Sharded parameters (FSDP, DeepSpeed ZeRO-3) would need a gathered forward pass."""
    sharded = bool(getattr(args, "fsdp", None))
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        sharded = sharded or is_deepspeed_zero3_enabled()
    except ImportError:
        pass
    if sharded:
        raise NotImplementedError(
            "layerwatch supports DDP (torchrun / accelerate launch with data parallelism) but not yet sharded "
            "models (FSDP, DeepSpeed ZeRO-3); train with DDP, or remove LayerwatchCallback and run "
            "layerwatch.capture on the saved model after training"
        )


def _digest(indices: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
