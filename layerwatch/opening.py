"""The run directory of one run: its checks, and opening it as a new run or a resumed one.

:meth:`RunOpener.open` runs on the main process, under the directory's claim and lock
(:class:`~layerwatch.store.RunStore`): it refuses a folder that holds what layerwatch did
not write, or another run (unless ``overwrite=True``); at a resume it checks that the
stored run was taken with the same settings, rows and labels, moves the snapshots it took
after the resumed step to ``superseded/`` and keeps its run id; then it writes ``run.json``
and the rows' texts. A Trainer checkpoint notes the run (:func:`write_checkpoint`), so that
a resume can tell it is the same run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping

from .config import LayerwatchConfig
from .data import get_column
from .labels import LabelVocabulary
from .rundir import holds_run, remove_run, supersede
from .store import RunStore, atomic_write_text
from .text import clean_text, text_allowed

logger = logging.getLogger("layerwatch")

CHECKPOINT_FILE = "layerwatch.json"


class RunOpener:
    """Checks and opens the run directory (see the module docstring).

    Args:
        store: The run directory.
        config: The run's settings.
        splits: The monitored splits (name -> :class:`~layerwatch.splits.MonitoredSplit`).
    """

    def __init__(self, store: RunStore, config: LayerwatchConfig, splits: Mapping[str, Any]):
        self.store = store
        self.config = config
        self.splits = splits

    def open(
        self, record: dict, run_id: str, vocab: LabelVocabulary | None, tokenizer: Any = None, resuming: bool = False,
        global_step: int = 0, checkpoint_dir: str | None = None, epoch: float | None = None,
    ) -> tuple[int | None, str]:
        """Check the run directory and write ``run.json`` (``record``, what the run says of
        itself); call it under the claim and the directory's lock.

        Returns the step up to which the stored run is taken up (None: a new run) and the
        run's id (the stored run's at a resume, else ``run_id``).
        """
        store = self.store
        store.directory.clean_temporary()
        if store.foreign_run_file():
            raise ValueError(
                f"output_dir={self.config.output_dir!r} holds a run.json that layerwatch did not write; "
                "pass another output_dir (layerwatch will not overwrite it)"
            )
        if resuming and holds_run(store):
            info = self._stored_run()
            self._check_resume(info, checkpoint_dir, vocab)
            moved = supersede(store, global_step, epoch)
            if moved:
                logger.warning(
                    "layerwatch: the run resumes at step %d; %d snapshot(s) taken after it by the run before the "
                    "resume (%s) were moved to %s", global_step, len(moved), ", ".join(moved),
                    os.path.join(self.config.output_dir, "superseded"),
                )
            run_id = info.get("run_id", run_id)
            store.write_run({**info, **record, "run_id": run_id})
            if not text_allowed(self.config):
                self.store_texts(tokenizer)  # removes the texts a run with report_text=True stored
            return global_step, run_id
        if holds_run(store):
            if not self.config.overwrite:
                raise ValueError(
                    f"output_dir={self.config.output_dir!r} already holds a layerwatch run; pass overwrite=True "
                    "to replace it, or another output_dir"
                )
            remove_run(store)
        if resuming:
            logger.warning(
                "layerwatch: training resumes at step %d but output_dir=%r holds no run; the films start here",
                global_step, self.config.output_dir,
            )
        store.write_run({"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})
        self.store_texts(tokenizer)
        return None, run_id

    def _stored_run(self) -> dict:
        try:
            return self.store.read_run()
        except FileNotFoundError:
            raise ValueError(
                f"output_dir={self.config.output_dir!r} holds layerwatch files but no run.json, so the run cannot be "
                "resumed safely; pass another output_dir, or overwrite=True to replace what is there"
            ) from None

    def _check_resume(self, info: dict, checkpoint_dir: str | None, vocab: LabelVocabulary | None) -> None:
        where = f"output_dir={self.config.output_dir!r}"
        if checkpoint_dir:
            saved = read_checkpoint(checkpoint_dir)
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
        if stored and vocab is not None and LabelVocabulary.from_json(stored).digest() != vocab.digest():
            raise ValueError(
                f"the labels differ from those of the run being resumed (it has {stored.get('names')}, now "
                f"{list(vocab.names)}); pass the same datasets and label_names as before"
            )

    def store_texts(self, tokenizer: Any = None) -> None:
        """Each split's texts, once (``texts/<split>.json``), as :mod:`layerwatch.text` rules:
        none at all with ``report_text=False``; otherwise with what UTF-8 cannot encode
        replaced, said once for the whole run (``tokenizer``: decodes rows without a text column)."""
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
                texts = _decode(tokenizer, s)
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


def write_checkpoint(folder: str, state: dict) -> None:
    """Note the run in a Trainer checkpoint, so a resume can tell it is the same run."""
    if os.path.isdir(folder):
        # Atomic, as every run file: a kill mid-write never leaves a half note to be misread.
        atomic_write_text(os.path.join(folder, CHECKPOINT_FILE), json.dumps(state, indent=2))


def read_checkpoint(folder: str) -> dict | None:
    """The run noted in a Trainer checkpoint (None when there is none, or it cannot be read)."""
    path = os.path.join(folder, CHECKPOINT_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _decode(tokenizer: Any, split: Any) -> list[str] | None:
    if tokenizer is None or not hasattr(tokenizer, "batch_decode"):
        return None
    try:
        ids = get_column(split.dataset, "input_ids", split.indices)
        return [str(t) for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    except Exception:  # texts are for the report only; a tokenizer that cannot decode leaves them out
        return None
