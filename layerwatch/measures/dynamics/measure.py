"""The ``dynamics`` measurement: data maps and area under the margin of every training row.

Front half, training rows: a :class:`~layerwatch.measures.dynamics.recorder.Recorder`
hooked on the trained model from ``on_train_begin`` to ``on_train_end`` sums each row's
visits per epoch; at the epoch's end every rank's sums are gathered and the main process
writes the epoch's lines to ``dynamics.csv``, the cumulative measures to
``datamaps/<split>/<key>.npz``, the data map's frame and film, and the suspects table.
A checkpoint keeps the sums of the epoch under way (``layerwatch_dynamics.npz`` beside
the Trainer's files), so a resumed run counts no visit twice and loses none.

Front half, the other splits: the snapshot's own capture pass (eval mode) gives the same
measures of their monitored rows, marked ``source=capture``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import numpy as np

from ...distributed import Part, is_main
from ...errors import ErrorPolicy
from ...film import Film, Frame
from ...model_info import ModelInfo
from ...snapshot import SnapshotKey
from ..base import SENT_KINDS, Accumulator, Batch, Context, Measurement, SplitPlan, TrainingRun
from . import compute
from .files import (
    CHECKPOINT_FILE, MAPS, SINGLE_LABEL_ONLY, SUSPECT_FIELDS, SUSPECTS, TABLE, TRAIN, meta_path, read_meta, read_texts,
    texts_path,
)
from .compute import FIELDS, RowMeasures, name_of
from .page import report_sections
from .sends import end_items, snapshot_items
from .settings import Dynamics

logger = logging.getLogger("layerwatch")


class _CaptureMeasures(Accumulator):
    """The same measures of a non-training split, from the capture pass's logits."""

    def __init__(self, plan: SplitPlan, output_of_label: np.ndarray):
        n = len(plan.indices)
        labels = np.asarray(plan.labels, dtype=np.int64)
        known = (labels >= 0) & (labels < len(output_of_label))
        self.gold_out = np.where(known, output_of_label[np.where(known, labels, 0)], -1)
        self.arrays = {
            "gold_prob": np.full(n, np.nan, dtype=np.float32), "margin": np.full(n, np.nan, dtype=np.float32),
            "predicted": np.full(n, -1, dtype=np.int64), "label": self.gold_out.astype(np.int64),
        }

    def update(self, batch: Batch) -> None:
        import torch

        logits = batch.output("logits")
        if logits is None or logits.ndim != 2:
            return
        z = logits.detach().float()
        g = torch.as_tensor(self.gold_out[batch.rows], device=z.device).clamp(min=0)
        gold = z.gather(1, g[:, None])[:, 0]
        other = z.scatter(1, g[:, None], float("-inf")).max(-1).values
        out = torch.stack([z.softmax(-1).gather(1, g[:, None])[:, 0], gold - other, z.argmax(-1).float()], 1).cpu().numpy()
        self.arrays["gold_prob"][batch.rows] = out[:, 0]
        self.arrays["margin"][batch.rows] = out[:, 1]
        self.arrays["predicted"][batch.rows] = out[:, 2].astype(np.int64)

    def finish(self) -> Part:
        return Part(rows=dict(self.arrays))


class DynamicsMeasurement(Measurement):
    """Training dynamics (data maps, AUM) of every training row, and of the monitored rows
    of the other splits from the capture pass. Turned on by ``dynamics=True``."""

    name = "dynamics"
    Settings = Dynamics

    def __init__(self, config: Any, settings: Dynamics | None = None):
        super().__init__(config, settings)
        self.recorder = None
        self.store = None
        self.head_names: list[str] | None = None
        self._output_of_label: np.ndarray | None = None
        self._films: dict[str, Film] = {}
        self._history: list[dict] = []  # the training split's lines, held (restored once at a resume)
        self._errors = ErrorPolicy(config.on_error)  # its warnings, each said once a run

    def describe(self) -> dict:
        return {"settings": self.settings.to_dict(), "formulas": "Swayamdipta et al. 2020 (data maps), Pleiss et al. 2020 (AUM)"}

    # -- front half: checks -------------------------------------------------------------
    def prepare(self, model: Any, info: ModelInfo) -> None:
        to_label = info.head_to_label
        self._output_of_label = None
        if to_label is not None:
            labels = info.labels
            n_labels = 1 + max((int(v.max()) for v in labels.values() if len(v)), default=-1)
            out = np.full(max(n_labels, max(to_label) + 1, 1), -1, dtype=np.int64)
            for j, lab in enumerate(to_label):
                if lab >= 0:
                    out[lab] = j
            self._output_of_label = out

    def _single_label_problem(self, model: Any) -> str | None:
        cfg = getattr(model, "config", None)
        problem = getattr(cfg, "problem_type", None)
        num = getattr(cfg, "num_labels", None)
        if problem in ("regression", "multi_label_classification"):
            return f"this model's problem_type is {problem!r}"
        if num is not None and int(num) < 2:
            return f"this model has num_labels={num} (a regression head)"
        return None

    def _warn_once(self, what: str, msg: str) -> None:
        self._errors.warn_once(what, f"dynamics: {msg}")

    # -- front half: the other splits, from the capture pass -----------------------------
    def start(self, plan: SplitPlan) -> Accumulator | None:
        if plan.split == TRAIN:
            return None  # the training rows are measured from training itself
        if self._output_of_label is None or plan.labels.dtype.kind not in "iu":
            self._warn_once("capture", f"{SINGLE_LABEL_ONLY}; split {plan.split!r} is left out")
            return None
        return _CaptureMeasures(plan, self._output_of_label)

    # -- front half: training itself --------------------------------------------------------
    def train_begin(self, run: TrainingRun) -> None:
        """Hash the training rows and hook the model (every rank); on a resume take up the
        stored lines and the checkpoint's sums of the epoch under way."""
        from ...data import get_column
        from .recorder import Recorder, RowIndex, dataset_hashes

        self.train_end(run.state, write=False)  # a hook left by a run that crashed
        self.store = run.store
        self.head_names = run.head_names
        problem = self._single_label_problem(run.model)
        if problem is not None:
            self._warn_once("single", f"{SINGLE_LABEL_ONLY}, but {problem}; they are left out and training goes on")
            return
        dataset = getattr(run.dataloader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            self._warn_once("dataset", "the Trainer gave no training dataset with a length (an iterable dataset?), so "
                            "its rows cannot be known; the training rows are left out")
            return
        columns = set(getattr(dataset, "column_names", None) or (dataset.keys() if isinstance(dataset, dict) else []))
        if "input_ids" not in columns:
            self._warn_once("ids", "the training dataset has no input_ids column, so its rows cannot be known; the "
                            "training rows are left out")
            return
        ids = get_column(dataset, "input_ids")
        mask = get_column(dataset, "attention_mask") if "attention_mask" in columns else None
        label_col = next((c for c in ("labels", "label", "label_ids") if c in columns), None)
        labels = None
        if label_col is not None:
            raw = get_column(dataset, label_col)
            if raw and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw[:1000]):
                labels = np.asarray(raw, dtype=np.int64)
        cfg = getattr(run.model, "config", None)
        pad_id = getattr(cfg, "pad_token_id", None)
        pad_id = int(pad_id) if isinstance(pad_id, (int, np.integer)) and not isinstance(pad_id, bool) else None
        hashes = dataset_hashes(ids, mask, pad_id)
        index = RowIndex(hashes, labels)
        if index.duplicates:
            self._warn_once("dups", f"{index.duplicates} of the {index.n} training rows have the same token ids as "
                            "another row; each visit of such ids goes to the duplicate with the batch's label that "
                            "has had the fewest visits in the epoch")
        num_outputs = int(getattr(cfg, "num_labels", 0) or 0)
        self.recorder = Recorder(index, num_outputs, pad_id)
        self._history = []
        if run.state is not None and run.state.global_step > 0:
            self._resume(run)
        if is_main():
            self._write_meta(run, index, ids, mask, hashes)
        self.recorder.attach(run.model)

    def _resume(self, run: TrainingRun) -> None:
        step = int(run.state.global_step)
        if is_main():
            self._history = [r for r in run.store.read_table(TABLE) if r["split"] == TRAIN and int(r["step"]) <= step]
        path = os.path.join(run.checkpoint, CHECKPOINT_FILE) if run.checkpoint else None
        if not is_main() or not path or not os.path.exists(path):
            return
        with np.load(path, allow_pickle=False) as z:
            saved = {k: z[k] for k in z.files}
        epoch = float(saved.get("epoch", -1))
        if any(float(r["epoch"]) == epoch for r in self._history):
            return  # that epoch was written whole already
        self.recorder.load(saved)

    def _write_meta(self, run: TrainingRun, index: Any, ids: list, mask: list | None, hashes: np.ndarray) -> None:
        store = run.store
        meta = {
            "split": TRAIN, "rows": index.n, "duplicates": index.duplicates, "label_names": self.head_names,
            "settings": self.settings.to_dict(),
        }
        store.write_text(meta_path(store), json.dumps(meta, indent=2) + "\n")
        if not self.config.report_text:
            return
        texts = self._training_texts(run, ids, hashes)
        if texts is not None:
            data = {"indices": list(range(len(texts))), "texts": [str(t) for t in texts]}
            store.write_text(texts_path(store), json.dumps(data, ensure_ascii=False) + "\n")

    def _training_texts(self, run: TrainingRun, ids: list, hashes: np.ndarray) -> list | None:
        from ...data import get_column
        from .recorder import dataset_hashes

        column = self.config.text_column or "text"
        for s in (run.splits or {}).values():
            ds = s.dataset
            names = set(getattr(ds, "column_names", None) or (ds.keys() if isinstance(ds, dict) else []))
            if column not in names or "input_ids" not in names or len(ds) != len(ids):
                continue
            mask = get_column(ds, "attention_mask") if "attention_mask" in names else None
            pad = self.recorder.pad_id
            if np.array_equal(dataset_hashes(get_column(ds, "input_ids"), mask, pad), hashes):
                return get_column(ds, column)
        tok = run.tokenizer
        if tok is not None and hasattr(tok, "batch_decode"):
            try:
                return [str(t) for t in tok.batch_decode([list(r) for r in ids], skip_special_tokens=True)]
            except Exception:  # texts are for reading only; a tokenizer that cannot decode leaves them out
                return None
        return None

    def train_step(self, armed: bool) -> None:
        """Training steps are under way (``on_step_begin``) or over (``on_step_end``):
        passes outside them (evaluation, the capture) are never counted."""
        if self.recorder is not None:
            self.recorder.armed = armed

    def train_save(self, folder: str, state: Any) -> None:
        """Keep the sums of the epoch under way in the checkpoint (every rank gathers)."""
        if self.recorder is None:
            return
        sums = self.recorder.gathered()
        if sums is None or not os.path.isdir(folder):
            return
        from ...store import atomic_write

        epoch = _epoch_index(state)
        atomic_write(os.path.join(folder, CHECKPOINT_FILE), lambda fh: np.savez(fh, epoch=np.array(epoch), **sums))

    def train_epoch_end(self, state: Any) -> None:
        """Gather the epoch's sums and, on the main process, write the epoch."""
        if self.recorder is None:
            return
        sums = self.recorder.gathered()
        self.recorder.reset()
        if self.recorder.unmatched:
            self._warn_once("unmatched", f"{self.recorder.unmatched} training visit(s) could not be matched to a row "
                            "of the training dataset (does the data collator change the token ids?); they are left out")
        if sums is None or not sums["visits"].any():
            return
        from .recorder import epoch_lines

        epoch, step = _epoch_index(state), int(state.global_step)
        lines = epoch_lines(sums)
        rows = [
            {"split": TRAIN, "source": "training", "epoch": epoch, "step": step, "row": int(r), "label": int(y),
             "predicted": int(p), "gold_prob": _f(g), "margin": _f(m), "correct": _f(c), "visits": int(v)}
            for r, y, p, g, m, c, v in zip(*(lines[k] for k in ("row", "label", "predicted", "gold_prob", "margin", "correct", "visits")))
        ]
        key = SnapshotKey(epoch, step, with_step=True)
        self.store.replace_rows(TABLE, FIELDS, TRAIN, key, rows, owner=self.name)
        self._history = [r for r in self._history if not (int(r["step"]) == step and float(r["epoch"]) == epoch)] + rows
        ctx = Context(self.store, self.config, self.head_names)
        self._after_lines(ctx, TRAIN, key, compute.from_table(self._history, TRAIN))

    def train_end(self, state: Any, write: bool = True) -> None:
        """Write what is left of an epoch cut short, and remove the hook."""
        if self.recorder is None:
            return
        try:
            if write and state is not None:
                self.train_epoch_end(state)
        finally:
            self.recorder.detach()

    # -- after each epoch or snapshot: the cumulative maps, pictures and suspects -----------
    def _after_lines(self, ctx: Context, split: str, key: SnapshotKey, measures: RowMeasures | None) -> None:
        if measures is None:
            return
        ctx.guard(f"storing the data map of {split}", key, ctx.store.save_arrays, MAPS, split, key, measures.arrays())
        ctx.guard(f"the suspects of {split}", key, self._write_suspects, ctx.store, split, key, measures)
        if ctx.render:
            film = self._film(ctx.store, split)
            film.show(ctx, Frame(key, measures))

    def _film(self, store: Any, split: str) -> Film:
        film = self._films.get(split)
        if film is None:
            from .render import data_map_png

            def draw(frame: Frame, _scale: Any) -> bytes:
                title = f"data map of {split}, {frame.key.title} ({len(frame.data.rows)} rows)"
                return data_map_png(frame.data, title, self.settings, self.config.dpi)

            film = self._films[split] = Film(
                store, lambda k: store.array_path("datamap_frames", split, k, ".png"),
                store.file_path(f"datamap_{split}.gif"), draw, duration=self.config.frame_duration,
            )
        return film

    def _write_suspects(self, store: Any, split: str, key: SnapshotKey, measures: RowMeasures) -> None:
        names = self.head_names or read_meta(store).get("label_names")
        texts = read_texts(store, split) if self.config.report_text else {}
        rows = [
            {**r, "split": split, "epoch": key.epoch, "step": key.step, "label_name": name_of(names, r["label"]),
             "predicted_name": name_of(names, r["predicted"]), "text": texts.get(r["row"], "")}
            for r in compute.suspects(measures, self.settings.top)
        ]
        with store.lock():
            old = [r for r in store.read_table(SUSPECTS) if r["split"] != split]
            store.write_table(SUSPECTS, SUSPECT_FIELDS, old + rows, owner=self.name)

    # -- back half: the other splits' lines, per snapshot --------------------------------------
    def process(self, ctx: Context, key: SnapshotKey, snaps: dict) -> dict[str, float]:
        logs: dict[str, float] = {}
        for split, arrays in ctx.results(snaps, self.name, "gold_prob"):
            snap = snaps[split]
            ok = arrays["label"] >= 0
            rows = [
                {"split": split, "source": "capture", "epoch": key.epoch, "step": key.step, "row": int(r),
                 "label": int(y), "predicted": int(p), "gold_prob": _f(g), "margin": _f(m), "correct": float(p == y),
                 "visits": 1}
                for r, y, p, g, m in zip(snap.indices[ok], arrays["label"][ok], arrays["predicted"][ok],
                                         arrays["gold_prob"][ok], arrays["margin"][ok])
            ]
            ctx.guard(f"dynamics table of {split}", key, ctx.store.replace_rows, TABLE, FIELDS, split, key, rows, owner=self.name)
            if rows:
                logs[f"layerwatch/{split}/dynamics/mean_margin"] = float(np.mean([r["margin"] for r in rows]))
            if key.step > 0:  # the data map of a split measured by snapshots starts after training does
                lines = [r for r in ctx.store.read_table(TABLE) if r["split"] == split]
                self._after_lines(ctx, split, key, compute.from_table(lines, split, after_step=0))
        return logs

    def render_all(self, ctx: Context) -> None:
        for split in ctx.store.splits(MAPS):
            film = self._film(ctx.store, split)
            for k in ctx.store.keys(split, MAPS):
                z = ctx.store.load_arrays(MAPS, split, k)
                film.add(Frame(k, RowMeasures(**{f: z[f] for f in RowMeasures.__dataclass_fields__})))
            film.redraw(ctx)

    def summarize(self, store: Any) -> dict:
        lines = store.read_table(TABLE)
        out = {}
        for split in sorted({r["split"] for r in lines}):
            after = 0 if split != TRAIN else -1
            m = compute.from_table(lines, split, after_step=after)
            if m is None:
                continue
            regions = np.bincount(m.regions(self.settings.confidence_threshold, self.settings.variability_threshold), minlength=3)
            out[split] = {
                "rows": int(len(m.rows)), "epochs": int(m.epochs.max()),
                **{name: int(c) for name, c in zip(compute.REGIONS, regions)},
                "lowest_aum": round(float(m.aum.min()), 4),
            }
        return {"dynamics": out} if out else {}

    def sends(self, run: Any, key: SnapshotKey | None, snaps: Any = None, logs: Any = None, kinds: tuple = SENT_KINDS) -> list:
        return end_items(run, kinds) if key is None else snapshot_items(run, key, logs, kinds)

    def info_lines(self, summary: dict) -> list[str]:
        return [
            f"dynamics of {split!r}: {d['rows']} rows over {d['epochs']} epoch(s): {d['easy-to-learn']} easy-to-learn, "
            f"{d['ambiguous']} ambiguous, {d['hard-to-learn']} hard-to-learn; see layerwatch suspects"
            for split, d in summary.get("dynamics", {}).items()
        ]

    def report_sections(self, ctx: Any) -> list[dict]:
        return report_sections(ctx.store, self.settings, self.config.report_text)

    @classmethod
    def add_commands(cls, subparsers: Any) -> None:
        from .cli import add_suspects_command

        add_suspects_command(subparsers)


def _epoch_index(state: Any) -> int:
    """The 1-based epoch that ``state`` is in (or has just ended)."""
    return max(1, int(math.ceil(float(state.epoch or 0) - 1e-6)))


def _f(value: Any) -> float:
    return round(float(value), 6)
