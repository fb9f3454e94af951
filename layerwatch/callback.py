"""The Trainer callback: schedules snapshots and hands them to the run's :class:`Monitor`."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

from transformers import TrainerCallback

from .config import LayerwatchConfig
from .measures import from_keywords, keyword_names
from .monitor import Monitor, write_checkpoint
from .snapshot import SnapshotKey, whole_epoch

logger = logging.getLogger("layerwatch")

_CORE = [f.name for f in dataclasses.fields(LayerwatchConfig) if f.name not in ("output_dir", "measures")]
_UNSET = object()


class LayerwatchCallback(TrainerCallback):
    """Snapshot every layer of the model at the start of training and after each epoch.

    For each split, a fixed stratified subset of rows is run through the model once per
    snapshot; each layer's pooled vectors are stored, laid out in 2-D, measured, drawn as
    one frame and stitched into ``<output_dir>/<split>.gif`` (and every other enabled
    measurement does its own part of the same pass).

    Args:
        splits: ``{"train": train_ds, "validation": val_ds}``: tokenized datasets with
            ``input_ids``, ``attention_mask`` and a label column.
        output_dir: The run directory.
        config: A :class:`~layerwatch.config.LayerwatchConfig`; every keyword passed
            along with it (``output_dir`` included) overrides its value, even one equal
            to the default.
        measures: The measurements besides the embeddings, each as its settings
            (``[Attention(examples=6), Attribution(steps=32), Dynamics()]``).
        Every other keyword is a setting of :class:`~layerwatch.config.LayerwatchConfig`,
        documented there, or a measurement's flat keyword: ``attention=True`` turns it on
        with its defaults, ``attention_examples=6`` sets its field ``examples`` (the same
        as ``measures=[Attention(examples=6)]``); every registered measurement has them.

    Bad settings raise here, before training; the model is checked at ``on_train_begin``
    (or earlier with :meth:`check_model`), before the first step. Call :meth:`attach` with
    the Trainer so that the numbers can go through ``Trainer.log``.
    """

    def __init__(
        self,
        splits: Mapping[str, Any],
        output_dir: Any = _UNSET,
        *,
        config: LayerwatchConfig | None = None,
        measures: Sequence[Any] | None = None,
        **settings: Any,
    ):
        given, sugar = self._read_keywords(settings)
        chosen = list(measures or ())
        named = {m.name for m in chosen if hasattr(m, "name")}
        for name, value in sugar.items():
            if name in named:
                raise ValueError(f"{name} is given twice, in measures= and as {name}=; give it once")
        if config is None:
            dirname = "layerwatch_run" if output_dir is _UNSET else output_dir
            self.config = LayerwatchConfig(
                output_dir=dirname, measures=chosen + [v for v in sugar.values() if v is not None], **given
            )
        else:
            if not isinstance(config, LayerwatchConfig):
                raise TypeError(f"config={config!r} must be a LayerwatchConfig")
            # Exactly the keywords passed override config=, whatever their values: a value
            # may equal its default and still be meant, and an array cannot be compared with ==.
            changed = dict(given)
            if output_dir is not _UNSET:
                changed["output_dir"] = output_dir
            if measures is not None or sugar:
                replaced = {m.name for m in chosen} | set(sugar)
                kept = [m for m in config.measures if m.name not in replaced] if measures is None else []
                changed["measures"] = kept + chosen + [v for v in sugar.values() if v is not None]
            self.config = config.replace(**changed) if changed else config
        self.monitor = Monitor(splits, self.config)

    @staticmethod
    def _read_keywords(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The core settings and the measurements' flat keywords (``attention=True``,
        ``attention_examples=6``), every other name refused with the closest known one."""
        allowed = set(_CORE) | set(keyword_names())
        unknown = sorted(set(settings) - allowed)
        if unknown:
            import difflib

            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, allowed, n=1)) else repr(k) for k in unknown]
            raise TypeError(
                f"LayerwatchCallback got unknown settings {unknown}: {', '.join(hints)}; allowed: "
                f"{', '.join(sorted(allowed))} (and measures=[...])"
            )
        sugar, given = from_keywords(settings)
        return given, sugar

    # -- the run's parts, for users and tools ----------------------------------------
    @property
    def store(self):
        return self.monitor.store

    @property
    def splits(self):
        return self.monitor.splits

    @property
    def failures(self) -> list[str]:
        return self.monitor.failures

    @property
    def label_names(self) -> list[str] | None:
        return self.monitor.label_names

    @property
    def pipeline(self):
        return self.monitor.pipeline

    @property
    def regression(self) -> bool:
        return self.monitor.regression

    # -- without a Trainer: the same steps, called by hand ------------------------------
    def setup(self, model: Any, tokenizer: Any = None, global_step: int = 0) -> "LayerwatchCallback":
        """Check ``model`` and open the run directory (a new run, or the stored run being
        resumed when ``global_step > 0``), as ``on_train_begin`` does before its first snapshot."""
        self.monitor.check_model(model, tokenizer)
        self.monitor.open(model, global_step)
        return self

    def snapshot(self, model: Any, key: SnapshotKey, state: Any = None) -> None:
        """Take one snapshot now (``key`` says when: ``SnapshotKey(epoch, step)``)."""
        if self.monitor.pipeline is None and self.monitor.worker is None:
            self.setup(model)
        self.monitor.snapshot(model, key, state, fatal=key.step == 0 and key.epoch == 0)

    def close(self) -> None:
        """Finish what the background worker still draws (and remove any training hook
        that a training run which raised left behind)."""
        self.monitor.training_end(None)
        self.monitor.close()

    def attach(self, trainer: Any) -> "LayerwatchCallback":
        """Hand over the Trainer (and add this callback to it if needed), so that the
        numbers go through ``Trainer.log`` when ``trainer_log`` says so. Returns self."""
        self.monitor.log.trainer = trainer
        handler = getattr(trainer, "callback_handler", None)
        if handler is not None and self not in handler.callbacks:
            trainer.add_callback(self)
        return self

    def check_model(self, model: Any, tokenizer: Any = None) -> "LayerwatchCallback":
        """Check ``model`` against the settings now (``on_train_begin`` does it anyway).

        Raises:
            ValueError: layers out of range, a pooling this model cannot use, labels that
                ``highlight_errors=True`` cannot match to the head, ...
        """
        self.monitor.check_model(model, tokenizer)
        return self

    def state_dict(self) -> dict:
        """What a checkpoint keeps of this run (written next to the Trainer's checkpoints)."""
        return self.monitor.state_dict()

    # -- Trainer events ------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if model is None:
            raise ValueError("LayerwatchCallback needs the model; use it as a callback of transformers.Trainer")
        trainer = self.monitor.log.trainer
        self.monitor.sharded_by(_declared_sharding(args), getattr(trainer, "model_wrapped", None) if trainer is not None else None)
        if self.monitor.log.needs_trainer(args) and self.monitor.log.trainer is None and self.config.trainer_log == "report":
            raise ValueError(
                "trainer_log='report' sends the numbers through Trainer.log, which needs the Trainer: call "
                "watch.attach(trainer) before trainer.train() (or use layerwatch.watch(trainer, ...))"
            )
        self.monitor.check_model(model, processing_class)
        if not _takes_part(state):
            return
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}") if state.global_step else None
        self.monitor.open(model, state.global_step, checkpoint, args=args, epoch=state.epoch)
        self.monitor.training_begin(model, args, state, kwargs.get("train_dataloader"), processing_class, checkpoint)
        if state.global_step == 0:
            self.monitor.snapshot(model, SnapshotKey(0, 0, self._with_step), state, args, fatal=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self.monitor.training_step(True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.monitor.training_step(False)
        n = self.config.every_n_steps
        if n and state.global_step % n == 0:
            self._snapshot(model, state, args)
        if _takes_part(state):
            self.monitor.collect(state, args)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if _takes_part(state):
            self.monitor.training_epoch_end(state)
        if self.config.every_n_steps is None:
            self._snapshot(model, state, args)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if _takes_part(state):
            self.monitor.training_end(state)
        # A run that stops between snapshots (max_steps, every_n_steps) gets a last one.
        self._snapshot(model, state, args)
        if _takes_part(state):
            self.monitor.close(state, args)

    def on_save(self, args, state, control, **kwargs):
        if _takes_part(state):
            self.monitor.training_save(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"), state)
        if state.is_world_process_zero:
            write_checkpoint(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"), self.state_dict())

    # -- scheduling ------------------------------------------------------------------------
    @property
    def _with_step(self) -> bool:
        return self.config.every_n_steps is not None

    def _snapshot(self, model: Any, state: Any, args: Any) -> None:
        if not _takes_part(state) or state.global_step == self.monitor.last_step:
            return
        epoch = float(state.epoch or 0)
        key = SnapshotKey(round(epoch) if whole_epoch(epoch) else epoch, state.global_step, self._with_step)
        self.monitor.snapshot(model, key, state, args)


def _takes_part(state: Any) -> bool:
    # Under DDP every rank captures its share; without it only the main process works.
    from .distributed import rank_world

    return bool(state.is_world_process_zero) or rank_world()[1] > 1


def watch(trainer: Any, splits: Mapping[str, Any], **settings: Any) -> LayerwatchCallback:
    """Build a :class:`LayerwatchCallback`, attach it to ``trainer`` and return it."""
    return LayerwatchCallback(splits, **settings).attach(trainer)


def _declared_sharding(args: Any) -> str | None:
    """What the training arguments shard the model with: ``"fsdp"``, ``"zero3"`` or None.

    Sharded training is supported (lockstep capture, see :mod:`layerwatch.sharding`);
    :meth:`Monitor.check_model` names what is not, before the first step.
    """
    if getattr(args, "fsdp", None):
        return "fsdp"
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return "zero3"
    except ImportError:
        pass
    return None
