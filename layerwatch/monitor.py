"""One layerwatch run: what the callback conducts.

A :class:`Monitor` holds the monitored splits, the run's label vocabulary, the run
directory and the back half (in process or in a background worker). The callback tells it
when to check the model, open the run directory and take a snapshot; it does the rest:

- :meth:`check_model`: every check that needs the model (layers, pooling, labels against
  the head, each measurement's own), before the first training step;
- :meth:`open`: a new run directory, or the stored run being resumed (refused when its
  settings, rows or labels differ);
- :meth:`snapshot`: capture every split (under DDP each rank its share), agree across
  ranks, gather, store, and hand the snapshot to the back half; a failure follows
  ``on_error``, and all ranks fail or skip together.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any, Mapping

import numpy as np

from . import __version__
from . import distributed as dist
from .config import LayerwatchConfig, check_output_dir, resolve_layers
from .labels import HeadMatch, LabelVocabulary, match_head, resolve
from .measures import for_config
from .measures.base import SplitPlan
from .pipeline import Pipeline
from .progress import Progress, quiet
from .snapshot import Snapshot, SnapshotKey
from .splits import prepare_splits
from .store import RunStore, atomic_write_text
from .text import clean_text, text_allowed
from .trainer_log import TrainerLog

logger = logging.getLogger("layerwatch")

CHECKPOINT_FILE = "layerwatch.json"


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
        self.head = HeadMatch(None, "the model has not been checked yet")
        self.layers: tuple[int, ...] | None = None
        self.context: dict[str, Any] = {}
        self.pipeline: Pipeline | None = None
        self.worker = None
        self.log = TrainerLog(config.trainer_log)
        self.run_id = uuid.uuid4().hex
        self.last_step = -1
        # Seconds the last snapshot took in this process (None before the first).
        self._snapshot_seconds: float | None = None
        self.failures: list[str] = []
        self.labels: dict[str, np.ndarray] = {}
        self.precision = config.precision
        self.integrations: list = []
        self.run_view = None
        self._checked = False
        self._warned: set[str] = set()
        # Sharded training (FSDP, ZeRO-3): the engine, and the module whose forward gathers.
        self.engine: str | None = None
        self.runner: Any = None
        self._declared: str | None = None
        self._wrapped: Any = None

    @property
    def regression(self) -> bool:
        return self.base_labels.regression

    @property
    def label_names(self) -> list[str] | None:
        return None if self.vocab is None or self.vocab.regression else list(self.vocab.names)

    # -- before training -------------------------------------------------------------
    def check_model(self, model: Any, tokenizer: Any = None) -> None:
        """Check the model against the settings and labels (raises a ValueError that says
        what to do), and fix the run's label vocabulary."""
        from .capture import check_pooling, count_hidden_states

        n_states = count_hidden_states(model)
        if n_states is not None:
            self.layers = resolve_layers(self.config.layers, n_states)
        check_pooling(model, self.config.pooling)
        cfg = getattr(model, "config", None)
        id2label, num_labels = getattr(cfg, "id2label", None), getattr(cfg, "num_labels", None)
        feature_names = next((s.feature_names for s in self.splits.values() if s.feature_names), None)
        self.vocab = resolve(self.base_labels, self.config.label_names, feature_names, id2label, num_labels)
        self.head = match_head(self.vocab, id2label, num_labels)
        self.labels = {name: s.labels(self.vocab) for name, s in self.splits.items()}
        if self.config.highlight_errors is True and self.head.to_label is None:
            raise ValueError(
                f"highlight_errors=True, but the model's outputs cannot be matched to the labels: {self.head.reason} "
                "(or pass highlight_errors=None to mark errors only where they can be)"
            )
        from .model_utils import computed_precision, model_device
        from .precision import autocast_factory, resolve_precision

        device = model_device(model)
        resolved = resolve_precision(self.config.precision, device)
        # What the capture truly computes in: fp32 asked of weights stored in bf16 is bf16.
        self.precision = computed_precision(resolved, model)
        self.context.update(
            model_name=type(model).__name__, tokenizer=tokenizer, precision=self.precision,
            autocast=autocast_factory(resolved, device),
        )
        self.context["labels"] = self.labels
        self.context["splits_indices"] = {name: s.indices for name, s in self.splits.items()}
        self.context["datasets"] = {name: s.dataset for name, s in self.splits.items()}
        self.context["head_match"] = self.head
        self._check_sharding(model)
        for m in self.measurements:
            m.prepare(model, self.context)
        self._checked = True

    def sharded_by(self, declared: str | None, wrapped: Any = None) -> None:
        """What the training arguments say (``"fsdp"``, ``"zero3"`` or None) and the wrapped
        model the Trainer trains (``trainer.model_wrapped``), for :meth:`check_model`."""
        self._declared, self._wrapped = declared, wrapped

    def _check_sharding(self, model: Any) -> None:
        """Find the engine that shards ``model`` and refuse, before the first step, what
        layerwatch cannot do under it."""
        from .sharding import ENGINES, engine, runner

        found = engine(model) or engine(self._wrapped)
        if found is None and self._declared is not None and self._wrapped is None:
            # FSDP1 hides its wrapper from callbacks: without the Trainer no one can tell.
            raise ValueError(
                f"training shards the model ({self._declared}), but LayerwatchCallback was handed the unwrapped model "
                "only and cannot find the module whose forward gathers the shards; call watch.attach(trainer) before "
                "trainer.train() (or build the callback with layerwatch.watch(trainer, ...))"
            )
        self.engine = found
        self.runner = runner(model, self._wrapped) if found else None
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
                f"attribution=True is not supported when {ENGINES[found]} shards the model: its integrated gradients "
                "need a backward pass, and under sharding every backward pass gathers and reduces gradients on all "
                "ranks into the training gradients, so it would change training (or hang, run on the main process "
                "alone). Pass attribution=False (embeddings and attention=True work under sharding), or run "
                "layerwatch.capture and layerwatch.measures.attribution.compute.attribute on a saved checkpoint"
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
        store.claim()
        try:
            with store.lock():
                restore_up_to = self._prepare_dir(model, resuming, global_step, checkpoint_dir, epoch)
            self._start_back_half(restore_up_to=restore_up_to)
        except BaseException:
            store.release()
            raise

    def _prepare_dir(
        self, model: Any, resuming: bool, global_step: int, checkpoint_dir: str | None, epoch: float | None,
    ) -> int | None:
        """Check the run directory and write run.json (under the claim and the directory's lock);
        returns the step up to which the stored run is taken up (None: a new run)."""
        store = self.store
        store.clean_temporary()
        if store.foreign_run_file():
            raise ValueError(
                f"output_dir={self.config.output_dir!r} holds a run.json that layerwatch did not write; "
                "pass another output_dir (layerwatch will not overwrite it)"
            )
        if resuming and store.holds_run():
            info = self._stored_run()
            self._check_resume(info, checkpoint_dir)
            moved = store.supersede(global_step, epoch)
            if moved:
                logger.warning(
                    "layerwatch: the run resumes at step %d; %d snapshot(s) taken after it by the run before the "
                    "resume (%s) were moved to %s", global_step, len(moved), ", ".join(moved),
                    os.path.join(self.config.output_dir, "superseded"),
                )
            self.run_id = info.get("run_id", self.run_id)
            store.write_run({**info, **self.run_info(model), "run_id": self.run_id})
            if not text_allowed(self.config):
                self._store_texts()  # removes the texts a run with report_text=True stored
            return global_step
        if store.holds_run():
            if not self.config.overwrite:
                raise ValueError(
                    f"output_dir={self.config.output_dir!r} already holds a layerwatch run; pass overwrite=True "
                    "to replace it, or another output_dir"
                )
            store.remove_run()
        if resuming:
            logger.warning(
                "layerwatch: training resumes at step %d but output_dir=%r holds no run; the films start here",
                global_step, self.config.output_dir,
            )
        store.write_run({"run_id": self.run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **self.run_info(model)})
        self._store_texts()
        return None

    def _stored_run(self) -> dict:
        try:
            return self.store.read_run()
        except FileNotFoundError:
            raise ValueError(
                f"output_dir={self.config.output_dir!r} holds layerwatch files but no run.json, so the run cannot be "
                "resumed safely; pass another output_dir, or overwrite=True to replace what is there"
            ) from None

    def _check_resume(self, info: dict, checkpoint_dir: str | None) -> None:
        where = f"output_dir={self.config.output_dir!r}"
        if checkpoint_dir:
            saved = _read_checkpoint(checkpoint_dir)
            if saved and saved.get("run_id") and info.get("run_id") and saved["run_id"] != info["run_id"]:
                raise ValueError(
                    f"the checkpoint belongs to layerwatch run {saved['run_id']} but {where} holds run "
                    f"{info['run_id']}; point output_dir at the run being resumed"
                )
        stored_splits = info.get("splits", {})
        for name, split in self.splits.items():
            digest = stored_splits.get(name, {}).get("subset")
            if digest is not None and digest != split.digest():
                raise ValueError(
                    f"split {name!r} now yields other rows than the run being resumed; pass the same dataset, "
                    "max_samples and seed as before"
                )
        diffs = self.config.resume_differences(info.get("config", {}))
        if diffs:
            raise ValueError(
                f"{where} holds a run taken with other settings: {', '.join(diffs)}. A resumed run must keep the "
                "settings that decide what is stored; pass the same values, or another output_dir to start a new run"
            )
        stored = info.get("labels")
        if stored and self.vocab is not None and LabelVocabulary.from_json(stored).digest() != self.vocab.digest():
            raise ValueError(
                f"the labels differ from those of the run being resumed (it has {stored.get('names')}, now "
                f"{list(self.vocab.names)}); pass the same datasets and label_names as before"
            )

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

    def _store_texts(self) -> None:
        """Each split's texts, once (``texts/<split>.json``), as :mod:`layerwatch.text` rules:
        none at all with ``report_text=False``; otherwise with what UTF-8 cannot encode
        replaced, said once for the whole run."""
        if not text_allowed(self.config):
            for s in self.splits.values():  # a run resumed with report_text=False keeps none either
                if self.store.remove_texts(s.name):
                    logger.warning("layerwatch: report_text=False: removed the texts of split %r stored earlier", s.name)
            return
        column = getattr(self.config, "text_column", None)
        replaced: dict[str, int] = {}
        for s in self.splits.values():
            texts = s.texts(column)
            if texts is None:
                texts = _decode(self.context.get("tokenizer"), s)
            if texts is not None:
                clean = [clean_text(t) for t in texts]
                changed = sum(a != b for a, b in zip(clean, texts))
                if changed:
                    replaced[s.name] = changed
                self.store.save_texts(s.name, s.indices, clean)
        if replaced:
            logger.warning(
                "layerwatch: %s hold characters UTF-8 cannot encode (lone surrogates, as reading a file with "
                "errors='surrogateescape' leaves); they are stored and shown with U+FFFD in their place",
                ", ".join(f"{n} text(s) of split {s!r}" for s, n in replaced.items()),
            )

    def _start_integrations(self) -> None:
        """TensorBoard, W&B and MLflow, as ``report_to`` and ``tensorboard=`` ask (main process)."""
        args = getattr(self, "_args", None)
        if args is None and self.config.tensorboard is None:
            return
        from .integrations import RunInfo, integrations_for
        from .trainer_log import reports

        trainer = self.log.trainer
        self.integrations = integrations_for(
            args, trainer=trainer, tensorboard=self.config.tensorboard,
            metrics_logged=trainer is not None and reports(self.config.trainer_log, args if args is not None else trainer.args),
            projector_layers=self.config.projector_layers,
        )
        self.run_view = RunInfo.from_store(self.store) if self.integrations else None

    def _send(self, key: SnapshotKey, snaps: dict | None, logs: dict) -> None:
        if self.integrations:
            from .integrations import send_snapshot

            self.failures.extend(send_snapshot(self.integrations, self.run_view, key, snaps, logs))

    def _start_back_half(self, restore_up_to: int | None = None) -> None:
        self._start_integrations()
        if self.config.background:
            from .worker import BackgroundWorker

            self.worker = BackgroundWorker(
                self.store.root, self.config, self.label_names, self.regression, self.reference_split,
                [type(m) for m in self.measurements],
            )
            if restore_up_to is not None:
                self.worker.restore(restore_up_to)
        else:
            self.pipeline = self._pipeline()
            if restore_up_to is not None:
                self.pipeline.restore(up_to_step=restore_up_to)

    def _pipeline(self) -> Pipeline:
        return Pipeline(
            self.store, self.config, self.label_names, regression=self.regression,
            reference_split=self.reference_split, measurements=[type(m)(self.config) for m in self.measurements],
        )

    # -- training passes (measurements that record from training itself) -------------------
    def training_begin(self, model: Any, args: Any, state: Any, dataloader: Any, tokenizer: Any, checkpoint: str | None) -> None:
        from .measures.base import TrainingRun

        head = self.head.to_label
        names = self.label_names
        head_names = [names[j] if names and 0 <= j < len(names) else str(j) for j in head] if head and names else None
        run = TrainingRun(model, args, state, dataloader, self.store, tokenizer, head_names, self.splits, checkpoint)
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
        try:
            getattr(m, event)(*a)
        except Exception as exc:
            if self.config.on_error == "raise":
                raise
            msg = f"layerwatch: {m.name} ({event}) failed ({type(exc).__name__}: {exc}); training goes on"
            logger.warning(msg)
            self.failures.append(msg)

    # -- snapshots -----------------------------------------------------------------
    def snapshot(self, model: Any, key: SnapshotKey, state: Any = None, args: Any = None, fatal: bool = False) -> None:
        """Capture every split and send the snapshot down the back half.

        ``fatal``: a failure stops training (the first snapshot, before any step, whose
        failure is a bad configuration); otherwise failures follow ``on_error``.
        """
        if not self._checked:
            self.check_model(model)
        started = time.perf_counter()
        raise_now = fatal or self.config.on_error == "raise"
        parts, error = None, None
        rows = sum(len(s.indices) for s in self.splits.values())
        back_half = len(self.measurements) if self.worker is None else 0
        progress = Progress(
            key.title, rows + back_half, enabled=self.config.progress and dist.is_main(), expected=self._snapshot_seconds,
        )
        try:
            parts = self._capture(model, progress)
        except Exception as exc:
            error = exc
        failures = dist.agree(error is None, f"{type(error).__name__}: {error}" if error else "")
        if failures:
            progress.close()
            if raise_now:
                raise error if error is not None else dist.RankFailed("; ".join(failures))
            if dist.is_main():
                self._report(key, "capture", "; ".join(failures) if error is None else f"{type(error).__name__}: {error}")
            return
        gathered = dist.gather_splits(parts, {name: len(s.indices) for name, s in self.splits.items()})
        error = None
        if dist.is_main():
            try:
                self._hand_over(model, key, gathered, state, args, progress)
            except Exception as exc:
                error = exc
            finally:
                progress.close()
        failures = dist.agree(error is None, f"{type(error).__name__}: {error}" if error else "")
        self.last_step = key.step
        if failures and raise_now:
            raise error if error is not None else dist.RankFailed("; ".join(failures))
        if error is not None:
            self._report(key, "handing over", f"{type(error).__name__}: {error}")
        if error is None:
            # What the next snapshot's progress expects to take (the same rows and work).
            self._snapshot_seconds = time.perf_counter() - started
        logger.info("layerwatch: %s done in %.1fs", key.title, time.perf_counter() - started)

    def _capture(self, model: Any, progress: Progress | None = None) -> dict[str, dict]:
        from .capture import Lockstep, capture_split

        rank, world = dist.rank_world()
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
                labels=self.labels[s.name][positions], layers=self.layers or self.config.layers,
                config=self.config, context=self.context,
            )
            out[s.name] = capture_split(
                model, s.dataset, plan, self.measurements, batch_size=self.config.batch_size,
                progress=progress if progress is not None else quiet(), autocast=self.context.get("autocast"),
                lockstep=lockstep,
            )
        return out

    def _assemble(self, key: SnapshotKey, name: str, parts: dict) -> Snapshot:
        from .capture import COMMON

        s = self.splits[name]
        snap = Snapshot(
            labels=self.labels[name], indices=s.indices, epoch=key.epoch, step=key.step, split=name, with_step=key.with_step,
            label_names=tuple(self.label_names) if self.label_names else None,
        )
        head = parts.get(COMMON)
        if head is not None and "head_predictions" in head.rows:
            outputs = head.meta.get("outputs")
            if outputs is not None and self.head.to_label is not None and outputs != len(self.head.to_label):
                self._warn_once("outputs", f"the model returned {outputs} logits per row but its config says "
                                f"{len(self.head.to_label)}; model accuracy and error marks are left out")
            else:
                snap.predictions = self.head.map(head.rows["head_predictions"])
                if snap.predictions is None:
                    self._warn_once("head", f"model accuracy and error marks are left out: {self.head.reason}")
        for m in self.measurements:
            if m.name in parts:
                m.assemble(parts[m.name], snap)
        if self.config.highlight_errors is True and snap.predictions is None:
            raise ValueError("highlight_errors=True, but the model returned no classification logits to mark errors with")
        self.layers = tuple(int(v) for v in snap.layers)
        return snap

    def _hand_over(
        self, model: Any, key: SnapshotKey, gathered: dict, state: Any, args: Any, progress: Progress | None = None,
    ) -> None:
        snaps = {name: self._assemble(key, name, parts) for name, parts in gathered.items() if parts is not None}
        for m in self.measurements:
            self._step(key, m.name, m.after_capture, model, snaps, key, self.context)
        # Stored before anything is drawn: a snapshot whose drawing fails can be drawn
        # again later (`layerwatch render`).
        for snap in snaps.values():
            for m in self.measurements:
                self._step(key, f"storing the {m.name} of {snap.split}", m.save, self.store, snap, key)
        if self.worker is not None:
            self.worker.submit(key, snaps)
            self.collect(state, args, block=False)
            return
        self._process(self.pipeline, key, snaps, state, args, progress)

    def _step(self, key: SnapshotKey, stage: str, fn: Any, *a: Any) -> None:
        try:
            fn(*a)
        except Exception as exc:
            if self.config.on_error == "raise":
                raise
            self._report(key, stage, f"{type(exc).__name__}: {exc}")

    def _process(
        self, pipeline: Pipeline, key: SnapshotKey, snaps: dict, state: Any, args: Any, progress: Progress | None = None,
    ) -> None:
        pipeline.progress = progress
        try:
            logs = pipeline.process(snaps, key)
        except Exception as exc:
            if self.config.on_error == "raise":
                raise
            self._report(key, "drawing", f"{type(exc).__name__}: {exc}")
            return
        finally:
            pipeline.progress = None
        if pipeline.failures:
            self.failures.append(_summary(key, "drawing", pipeline.failures))
        self.log.write(logs, key, state, args)
        self._send(key, snaps, logs)

    def collect(self, state: Any = None, args: Any = None, block: bool = False) -> None:
        """Report what the background worker finished (everything, when ``block``)."""
        if self.worker is None:
            return
        for result in self.worker.finished(block):
            if result.error is not None:
                if self.config.on_error == "raise":
                    raise RuntimeError(f"layerwatch: drawing (background) of snapshot {result.key.title} failed: {result.error}")
                self._report(result.key, "drawing (background)", result.error.splitlines()[0])
                continue
            if result.failures:
                # The worker's own warnings go to its stderr; say it here, once per snapshot.
                msg = _summary(result.key, "drawing (background)", result.failures)
                logger.warning("%s", msg)
                self.failures.append(msg)
            self.log.write(result.logs, result.key, state, args)
            self._send(result.key, result.snaps, result.logs)
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
        try:
            if self.worker is not None:
                try:
                    self.collect(state, args, block=True)
                finally:
                    if self.worker is not None:
                        self.worker.close()
                    self.worker = None
            if self.integrations:
                from .integrations import finish_all

                self.failures.extend(finish_all(self.integrations, self.run_view))
            if self.failures:
                logger.warning("layerwatch: %d step(s) of snapshots failed during training; see the warnings above", len(self.failures))
        finally:
            self.store.release()  # the run is over: another may use the folder

    def _report(self, key: SnapshotKey, stage: str, reason: str) -> None:
        msg = (
            f"layerwatch: {stage} of snapshot {key.title} failed ({reason}); "
            "training goes on and the next snapshot tries again (on_error='raise' makes this fatal)"
        )
        logger.warning(msg)
        self.failures.append(msg)

    def _warn_once(self, what: str, msg: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning("layerwatch: %s", msg)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "output_dir": os.path.abspath(self.config.output_dir),
            "last_step": int(self.last_step),
            "subsets": {s.name: s.digest() for s in self.splits.values()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.run_id = str(state.get("run_id", self.run_id))
        self.last_step = int(state.get("last_step", self.last_step))


def adapter_settings(model: Any) -> dict | None:
    """The adapters a PEFT model trains (LoRA and friends), by name: type, rank, alpha,
    target modules, dropout; None for a model without adapters."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or not configs:
        return None
    out = {}
    for name, cfg in configs.items():
        targets = getattr(cfg, "target_modules", None)
        if isinstance(targets, (set, frozenset, list, tuple)):
            targets = sorted(str(t) for t in targets)
        elif targets is not None:
            targets = str(targets)
        peft_type = getattr(cfg, "peft_type", None)
        entry = {
            "peft_type": getattr(peft_type, "value", None) or (str(peft_type) if peft_type is not None else None),
            "r": getattr(cfg, "r", None), "alpha": getattr(cfg, "lora_alpha", None), "target_modules": targets,
            "dropout": getattr(cfg, "lora_dropout", None), "modules_to_save": sorted(getattr(cfg, "modules_to_save", None) or []),
            "task_type": str(getattr(getattr(cfg, "task_type", None), "value", getattr(cfg, "task_type", None))),
        }
        out[str(name)] = {k: (v if isinstance(v, (int, float, str, list, type(None))) else str(v)) for k, v in entry.items()}
    return out


def _summary(key: SnapshotKey, stage: str, failures: list[str]) -> str:
    steps = "; ".join(f.removeprefix("layerwatch: ") for f in failures)
    return f"layerwatch: {stage} of snapshot {key.title} failed in {len(failures)} step(s): {steps}"


def write_checkpoint(folder: str, state: dict) -> None:
    """Note the run in a Trainer checkpoint, so a resume can tell it is the same run."""
    if os.path.isdir(folder):
        # Atomic, as every run file: a kill mid-write never leaves a half note to be misread.
        atomic_write_text(os.path.join(folder, CHECKPOINT_FILE), json.dumps(state, indent=2))


def _read_checkpoint(folder: str) -> dict | None:
    path = os.path.join(folder, CHECKPOINT_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _decode(tokenizer: Any, split: Any) -> list[str] | None:
    if tokenizer is None or not hasattr(tokenizer, "batch_decode"):
        return None
    from .data import get_column

    try:
        ids = get_column(split.dataset, "input_ids", split.indices)
        return [str(t) for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    except Exception:  # texts are for the report only; a tokenizer that cannot decode leaves them out
        return None
