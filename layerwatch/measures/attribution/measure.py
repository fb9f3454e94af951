"""Attribution over training: which layers and which tokens decide, epoch by epoch.

Two parts (``attribution=True``; see :mod:`~layerwatch.measures.attribution.ig` and
:mod:`~layerwatch.measures.attribution.norms` for the definitions):

- **Norms** ride on the capture pass: hooks on every layer's value projection give
  ``||f_h(x_j)||`` and, with the attention weights of the same pass, the shares of
  attention weight and of ``||alpha f(x)||`` that go to [CLS], [SEP], punctuation and other
  tokens, summed over all monitored rows (``norms.csv``), and full maps for the examples.
- **Attributions** of a few fixed examples of ``attribution_split`` (stratified by label,
  the same rows every time): integrated gradients of the target logit over the tokens and
  the conductance of every layer, from one interpolation path, computed on the main
  process after the capture (others wait), in eval mode, never touching parameters'
  gradients, modes or the random state.

Pictures: per example a film of its layers x tokens conductance with the tokens' attribution
as a coloured sentence (``attribution_<split>_<row>.gif``), and the weight against norm
shares per token class over training (``norm_shares_<split>.png``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...distributed import Part
from ...film import Film, Frame
from ...model_info import ModelInfo
from ...snapshot import SnapshotKey
from ...text import shown_tokens, text_allowed
from ..attention.stats import punctuation_ids
from ..sent import SENT_KINDS, films_and_tables
from ..base import Accumulator, Context, Measurement, SplitPlan, check_example_split, example_split, pick_examples
from .accumulate import TOKEN_CLASSES, ShareSums
from .settings import Attribution
from . import page

logger = logging.getLogger("layerwatch")

FIELDS = ("split", "epoch", "step", "layer", "head", "stat", "value")
TABLE = "norms.csv"
FRAMES = "attribution_frames"
TARGETS = ("label", "prediction")


@dataclass
class _Cond:
    conductance: np.ndarray
    tokens: list
    attributions: np.ndarray
    label: str


class AttributionMeasurement(Measurement):
    """Token attributions, layer conductance and attention norms (``attribution=True``)."""

    name = "attribution"
    output_flags = {"output_attentions": True}
    eager_attention = True

    Settings = Attribution

    def __init__(self, config, settings=None):
        super().__init__(config, settings)
        self.films: dict[tuple[str, int], Film] = {}
        self._figures: dict[tuple, Any] = {}
        self.examples: dict[str, np.ndarray] = {}
        self._heads = 0
        # Its own, from prepare(): the split of its examples, the precision of its passes, the
        # token classes (cls, sep, punct ids), the baseline's special tokens and padding id.
        self._split: str | None = None
        self._precision = "fp32"
        self._classes: tuple = ((), (), ())
        self._special: tuple[int, ...] = ()
        self._pad: int | None = None

    # -- front half ---------------------------------------------------------------------------
    def check_splits(self, splits) -> None:
        check_example_split("attribution_split", self.settings.split, splits)
        if self.settings.target not in TARGETS:
            raise ValueError(f"attribution_target={self.settings.target!r} is not one of 'label', 'prediction'")

    def prepare(self, model, info: ModelInfo) -> None:
        from ...model_utils import computed_precision, unwrap
        from .layers import find_layers

        inner = unwrap(model)
        handles = find_layers(inner)  # a clear ValueError for models it does not support
        # Integrated gradients and norm maps run in fp32 (the weights' precision where those are half).
        self._precision = computed_precision("fp32", inner)
        missing = [i for i, (v, o) in enumerate(zip(handles.values, handles.outputs)) if v is None or o is None]
        if missing:
            raise ValueError(
                f"attribution=True: the layers {missing} of {type(inner).__name__} have no value and output "
                "projections to take attention norms from; pass attribution=False for this model"
            )
        self._heads = handles.num_heads
        tokenizer = info.tokenizer
        config = getattr(inner, "config", None)
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        pad = pad if pad is not None else getattr(config, "pad_token_id", None)
        if pad is None:
            raise ValueError(
                "attribution=True needs a padding token for its baseline: the tokenizer and the model config have no "
                "pad_token_id; set model.config.pad_token_id"
            )
        cls_ids = [i for i in (getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "bos_token_id", None)) if i is not None]
        sep_ids = [i for i in (getattr(tokenizer, "sep_token_id", None), getattr(tokenizer, "eos_token_id", None)) if i is not None]
        special = list(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else []
        if tokenizer is None:
            logger.warning(
                "layerwatch: attribution without the tokenizer: token classes and the baseline's special tokens come "
                "from the model config only; the Trainer hands its processing_class over"
            )
            for name in ("cls_token_id", "bos_token_id"):
                if getattr(config, name, None) is not None:
                    cls_ids.append(getattr(config, name))
            for name in ("sep_token_id", "eos_token_id"):
                if getattr(config, name, None) is not None:
                    sep_ids.append(getattr(config, name))
            special = cls_ids + sep_ids
        self._classes = (tuple(cls_ids), tuple(sep_ids), tuple(sorted(punctuation_ids(tokenizer))) if tokenizer is not None else ())
        self._special = tuple(sorted(set(int(i) for i in special if i is not None)))
        self._pad = int(pad)
        labels = info.labels
        splits = info.indices
        split = example_split(self.settings.split, labels)
        if split in labels:
            self.examples[split] = pick_examples(
                self.settings.examples, "attribution_examples", split, splits[split], labels[split], self.config.seed,
            )
        self._split = split
        if self.settings.target == "label" and info.head_to_label is None:
            reason = info.head_reason
            raise ValueError(
                f"attribution_target='label' explains the logit of each row's label, but the head's outputs cannot be "
                f"matched to the labels ({reason}); pass attribution_target='prediction'"
            )

    def hooks(self, model, record) -> list:
        from ...model_utils import unwrap
        from .layers import find_layers
        from .norms import value_norm_hooks

        return value_norm_hooks(find_layers(unwrap(model)), record)

    def start(self, plan: SplitPlan) -> Accumulator:
        return ShareSums(plan, self._heads, self._classes)

    def assemble(self, part: Part, snap) -> None:
        rows = int(part.sums["rows"])
        snap.results[self.name] = {"shares": part.sums["shares_sum"] / max(rows, 1), "rows": np.array(rows)}

    def after_capture(self, model, snaps, key, info: ModelInfo) -> None:
        import torch

        from ...data import read_inputs
        from ...model_utils import to_numpy, unwrap
        from .ig import attribute, baseline_ids, head_output
        from .norms import norm_maps

        split = self._split
        positions = self.examples.get(split)
        if positions is None or split not in snaps:
            return
        snap = snaps[split]
        dataset = info.datasets[split]
        inner = unwrap(model)
        rows = snap.indices[positions]
        inputs = read_inputs(dataset, rows, self._pad)
        tokenizer = info.tokenizer
        head = info.head
        results = []
        for r, position in enumerate(positions):
            ids = torch.as_tensor(inputs["input_ids"][r])[None]
            mask = torch.as_tensor(inputs["attention_mask"][r])[None]
            types = torch.as_tensor(inputs["token_type_ids"][r])[None] if "token_type_ids" in inputs else None
            if self.settings.target == "label":
                target = head_output(head, int(snap.labels[position]))
            else:
                target = None
            base = baseline_ids(ids, self._special, self._pad)
            result = attribute(inner, ids, mask, types, target=target, steps=self.settings.steps,
                               batch_size=self.settings.batch_size, baseline=base)
            maps = norm_maps(inner, ids, mask, types)
            token_ids = to_numpy(ids[0])
            if not text_allowed(self.config):  # report_text=False: positions, never the tokens or their ids
                tokens = shown_tokens(token_ids, False)
            elif tokenizer is not None and hasattr(tokenizer, "convert_ids_to_tokens"):
                tokens = shown_tokens(tokenizer.convert_ids_to_tokens([int(i) for i in token_ids]), True)
            else:
                tokens = [str(int(i)) for i in token_ids]
            results.append((result, maps, token_ids, tokens))
        n = max(len(t) for *_, t in results)
        layers = results[0][0].conductance.shape[0]
        heads = results[0][1].fnorm.shape[1]
        count = len(results)
        out = snap.results.setdefault(self.name, {})
        out.update(
            positions=np.asarray(positions, dtype=np.int64),
            lengths=np.array([len(t) for *_, t in results], dtype=np.int64),
            tokens=_padded([t for *_, t in results], n, ""),
            token_attributions=_padded([res.token_attributions for res, *_ in results], n, 0.0),
            conductance=np.stack([np.pad(res.conductance, ((0, 0), (0, n - res.conductance.shape[1]))) for res, *_ in results]),
            f_x=np.array([res.f_x for res, *_ in results]),
            f_baseline=np.array([res.f_baseline for res, *_ in results]),
            completeness_gap=np.array([res.completeness_gap for res, *_ in results]),
            target=np.array([res.target for res, *_ in results], dtype=np.int64),
            steps=np.int64(self.settings.steps),
            fnorm=np.zeros((count, layers - 1, heads, n), dtype=np.float16),
            weighted=np.zeros((count, layers - 1, heads, n, n), dtype=np.float16),
        )
        if text_allowed(self.config):
            out["token_ids"] = _padded([x for _, _, x, _ in results], n, 0).astype(np.int64)
        for r, (_, maps, _, tokens) in enumerate(results):
            t = len(tokens)
            out["fnorm"][r, :, :, :t] = maps.fnorm
            out["weighted"][r, :, :, :t, :t] = maps.weighted

    def describe(self) -> dict[str, Any]:
        from .ig import CAPTUM_CONDUCTANCE_METHOD, CAPTUM_IG_METHOD, METHOD

        return {
            "steps": self.settings.steps, "target": self.settings.target,
            "baseline": "the same positions, token types and mask; every real token but the special ones made the pad token",
            "rule": METHOD, "captum_ig_method": CAPTUM_IG_METHOD, "captum_conductance_method": CAPTUM_CONDUCTANCE_METHOD,
            "split": self._split,
            "precision": self._precision,
        }

    # -- back half ----------------------------------------------------------------------------------
    def process(self, ctx: Context, key: SnapshotKey, snaps: dict) -> dict[str, float]:
        logs: dict[str, float] = {}
        for split, res in ctx.results(snaps, self.name, "shares"):
            shares = np.asarray(res["shares"], dtype=np.float64)  # (layers, heads, classes, 2)
            rows = []
            for (l, h, c, kind), v in np.ndenumerate(shares):
                if np.isfinite(v):
                    stat = f"{'weight' if kind == 0 else 'norm'}_share_{TOKEN_CLASSES[c]}"
                    rows.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": l + 1, "head": h + 1, "stat": stat, "value": float(v)})
            for c, cls in enumerate(TOKEN_CLASSES):
                for kind, what in ((0, "weight"), (1, "norm")):
                    logs[f"layerwatch/{split}/{what}_share_{cls}"] = float(np.nanmean(shares[:, :, c, kind]))
            ctx.guard(f"writing {TABLE} for {split}", key, ctx.store.replace_rows, TABLE, FIELDS, split, key, rows, owner=self.name)
            ctx.history.put(self.name, split, key, page.record(res, snaps[split], ctx.label_names, text_allowed(self.config)))
            if "conductance" in res:
                labels = snaps[split].labels
                for r, position in enumerate(res["positions"]):
                    row = int(snaps[split].indices[position])
                    n = int(res["lengths"][r])
                    name = ctx.label_names[int(labels[position])] if ctx.label_names and 0 <= int(labels[position]) < len(ctx.label_names) else str(labels[position])
                    frame = Frame(key, _Cond(res["conductance"][r][:, :n], shown_tokens(res["tokens"][r][:n], text_allowed(self.config)),
                                             res["token_attributions"][r][:n], name))
                    film = self._film(ctx, split, row)
                    if ctx.render:
                        film.show(ctx, frame)
                    else:
                        film.add(frame)
                    logs[f"layerwatch/{split}/attribution_gap/row_{row}"] = float(res["completeness_gap"][r])
        if ctx.render:
            ctx.guard("drawing the norm shares", key, self.write_shares, ctx)
        return logs

    def _film(self, ctx: Context, split: str, row: int) -> Film:
        film = self.films.get((split, row))
        if film is None:
            slot = f"{split}.{row}"
            film = self.films[(split, row)] = Film(
                ctx.store,
                frame_path=lambda k, s=slot: ctx.store.array_path(FRAMES, s, k, ".png"),
                gif_path=ctx.store.file_path(f"attribution_{split}_{row}.gif"),
                draw=lambda f, scale, sp=split, rw=row: self._draw(sp, rw, f, scale),
                extent=_symmetric,
                duration=self.config.frame_duration,
                frames_on_disk=lambda s=slot: ctx.store.keys(s, FRAMES),
            )
        return film

    def _draw(self, split: str, row: int, frame: Frame, scale) -> bytes:
        from matplotlib.figure import Figure

        from ...render import figure_png
        from .render import draw_conductance

        d = frame.data
        vmax = max(abs(scale[0][0]), abs(scale[0][1])) if scale else None
        size = (max(6.0, 0.45 * len(d.tokens) + 2.5), 5.0)
        fig = self._figures.get(size)
        if fig is None:
            fig = self._figures[size] = Figure(figsize=size, dpi=self.config.dpi)
        draw_conductance(fig, d.conductance, d.tokens, d.attributions,
                         title=f"{split} row {row} ({d.label}) - {frame.key.title}", vmax=vmax)
        return figure_png(fig)

    def write_shares(self, ctx: Context) -> None:
        """``norm_shares_<split>.png``: attention weight against norm share per token class, over training."""
        from matplotlib.figure import Figure

        from ...render import figure_png
        from .render import draw_norm_shares

        for split in ctx.history.splits(self.name):
            if ctx.draw_splits is not None and split not in ctx.draw_splits:
                continue
            shares = page.shares_over_training(ctx.history, self.name, split)
            if shares is None:
                continue
            keys, weight, norm = shares
            when = [(k.step, k.epoch) for k in keys]
            layers = list(range(1, weight.shape[1] + 1))
            fig = Figure(figsize=(10, 1.2 + 1.6 * len(layers)), dpi=self.config.dpi)
            draw_norm_shares(fig, [e for _, e in when], weight, norm, list(TOKEN_CLASSES),
                             title=f"{split}: attention weight (solid) and norm ||alpha f(x)|| (dashed) shares by token class")
            ctx.store.write_bytes(ctx.store.file_path(f"norm_shares_{split}.png"), figure_png(fig))

    def render_all(self, ctx: Context) -> None:
        for film in self.films.values():
            film.redraw(ctx)
        ctx.guard("drawing the norm shares", None, self.write_shares, ctx)

    def restore(self, ctx: Context, snaps: list) -> None:
        for key, by_split in snaps:
            for split, snap in by_split.items():
                res = snap.results.get(self.name)
                if res and "shares" in res:
                    ctx.history.put(self.name, split, key, page.record(res, snap, ctx.label_names, text_allowed(self.config)))
                if not res or "conductance" not in res:
                    continue
                for r, position in enumerate(res["positions"]):
                    n = int(res["lengths"][r])
                    row = int(snap.indices[position])
                    label = str(snap.labels[position])
                    if ctx.label_names and 0 <= int(snap.labels[position]) < len(ctx.label_names):
                        label = ctx.label_names[int(snap.labels[position])]
                    self._film(ctx, split, row).add(Frame(key, _Cond(
                        res["conductance"][r][:, :n], shown_tokens(res["tokens"][r][:n], text_allowed(self.config)), res["token_attributions"][r][:n], label,
                    )))

    def sends(self, run: Any, key: Any, snaps: Any = None, logs: Any = None, kinds: tuple = SENT_KINDS) -> list:
        """Once the run is over, its films (a GIF per example) and its table."""
        return films_and_tables(run, kinds, "attribution_", (TABLE,)) if key is None else []

    def summarize(self, store) -> dict[str, Any]:
        rows = store.read_table(TABLE)
        if not rows:
            return {}
        out: dict[str, Any] = {}
        for split in store.splits(self.name):
            keys = store.keys(split, self.name)
            if not keys:
                continue
            arrays = store.load_arrays(self.name, split, keys[-1])
            if "completeness_gap" in arrays:
                out[split] = {"examples": int(len(arrays["positions"])), "steps": int(arrays["steps"]),
                              "largest_completeness_gap": round(float(np.max(arrays["completeness_gap"])), 6)}
        return {"attribution": out} if out else {}

    def report_sections(self, ctx: Context) -> list[dict]:
        return page.report_sections(ctx, self.name)


def _padded(items: list, n: int, fill: Any) -> np.ndarray:
    if isinstance(fill, str):
        out = np.full((len(items), n), "", dtype=object)
    else:
        out = np.full((len(items), n), fill, dtype=np.float64)
    for i, item in enumerate(items):
        out[i, : len(item)] = item
    return out.astype(str) if isinstance(fill, str) else out


def _symmetric(frame: Frame) -> list:
    v = float(np.nanmax(np.abs(frame.data.conductance))) if frame.data.conductance.size else 1.0
    v = v if v > 0 else 1e-6
    return [(-v, v)]
