"""Attention over training: per-head statistics of every layer, filmed like the embeddings.

Front half: the capture's forward pass also returns every layer's attention weights
(eager attention for that pass only); each batch is reduced at once to per-head sums of
the statistics of :mod:`~layerwatch.measures.attention.stats` (never a (rows, heads,
tokens, tokens) tensor for all rows), and the full maps of a few fixed example rows of
``attention_split`` are kept (float16, over their real tokens, with their tokens).

Back half, per snapshot: ``attention.csv`` (split, epoch, step, layer 1..L, head 1..H,
stat, value), the statistics in the Trainer's log history, one heatmap film per statistic with a panel
per split (``attention_<stat>.gif``), the heads' drift (Jensen-Shannon divergence
of the examples' maps against the first and the previous snapshot: ``drift_first``,
``drift_prev``), a summary of how far each head moved with its dominant pattern at the
start and now (``attention_summary.png``), and the head-view page of the examples over all
snapshots (``attention_head_view.html``).
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
from ...text import position_names, text_allowed
from ..sent import SENT_KINDS, films_and_tables
from ..base import Accumulator, Context, Measurement, SplitPlan, check_example_split, example_split, pick_examples
from .accumulate import HeadStats
from .cli import add_attention_command
from .drift import TABLE, as_stats, heads_that_moved, js_divergence, pattern_labels
from .head_view import MAX_NEURON_EXAMPLES
from . import page
from .settings import Attention
from .stats import STATS, punctuation_ids, special_token_ids

logger = logging.getLogger("layerwatch")

FIELDS = ("split", "epoch", "step", "layer", "head", "stat", "value")
DRIFT = ("drift_first", "drift_prev")
FRAMES = "attention_frames"
HEAD_VIEW = "attention_head_view.html"
SUMMARY = "attention_summary.png"
# Colour scales of the films: statistics that are shares of attention live in [0, 1].
_FIXED_RANGE = {s: (0.0, 1.0) for s in ("entropy_norm", "max_weight", "first", "sep", "punct", "self", "prev", "next")}


@dataclass
class _Heat:
    values: dict  # split -> (layers, heads)


class AttentionMeasurement(Measurement):
    """Per-head attention statistics (``attention=True``)."""

    name = "attention"
    output_flags = {"output_attentions": True}
    eager_attention = True

    Settings = Attention

    def __init__(self, config, settings=None):
        super().__init__(config, settings)
        self.films: dict[str, Film] = {}
        self._figures: dict[tuple, Any] = {}
        self._first: dict[str, dict] = {}
        self._latest: dict[str, dict] = {}
        self._first_stats: dict[str, np.ndarray] = {}
        self._latest_stats: dict[str, np.ndarray] = {}
        self._latest_drift: dict[str, np.ndarray] = {}
        self.examples: dict[str, np.ndarray] = {}
        # Its own, from prepare(): the tokenizer, and the ids counted as 'sep' and 'punct'.
        self._tokenizer: Any = None
        self._sep_ids: set[int] = set()
        self._punct_ids: set[int] = set()

    # -- front half -----------------------------------------------------------------------
    def check_splits(self, splits) -> None:
        check_example_split("attention_split", self.settings.split, splits)

    def prepare(self, model, info: ModelInfo) -> None:
        tokenizer = self._tokenizer = info.tokenizer
        self._sep_ids = special_token_ids(getattr(model, "config", None), tokenizer)
        self._punct_ids = punctuation_ids(tokenizer) if tokenizer is not None else set()
        if tokenizer is None:
            logger.warning(
                "layerwatch: attention statistics without the tokenizer: 'punct' is 0 and 'sep' comes from the model "
                "config only; the Trainer hands its processing_class over, or pass tokenizer= to check_model"
            )
        labels = info.labels
        split = example_split(self.settings.split, labels)
        splits = info.indices
        if split in labels and split in splits:
            self.examples[split] = pick_examples(
                self.settings.examples, "attention_examples", split, splits[split], labels[split], self.config.seed,
            )

    def start(self, plan: SplitPlan) -> Accumulator:
        tokenizer = self._tokenizer

        def to_tokens(ids):
            if not text_allowed(self.config):  # report_text=False: positions, never the tokens
                return position_names(len(ids))
            if tokenizer is not None and hasattr(tokenizer, "convert_ids_to_tokens"):
                return [str(t) for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]
            return [str(int(i)) for i in ids]

        examples = [int(p) for p in self.examples.get(plan.split, ())]
        return HeadStats(
            plan, set(examples), self._sep_ids, self._punct_ids,
            to_tokens, neuron=set(examples[:MAX_NEURON_EXAMPLES]),
        )

    def assemble(self, part: Part, snap) -> None:
        rows = int(part.sums["rows"])
        out = {"stats": part.sums["stats_sum"] / max(rows, 1), "rows": np.array(rows)}
        if part.picked:
            positions = sorted(part.picked)
            width = max(len(part.picked[p]["ids"]) for p in positions)
            layers, heads = part.picked[positions[0]]["maps"].shape[:2]
            maps = np.zeros((len(positions), layers, heads, width, width), dtype=np.float16)
            tokens = np.full((len(positions), width), "", dtype=object)
            lengths = np.zeros(len(positions), dtype=np.int64)
            for r, p in enumerate(positions):
                kept = part.picked[p]
                n = len(kept["ids"])
                maps[r, :, :, :n, :n] = kept["maps"]
                tokens[r, :n] = kept["tokens"]
                lengths[r] = n
            out.update(positions=np.array(positions, dtype=np.int64), lengths=lengths, maps=maps, tokens=tokens.astype(str))
            with_qk = [p for p in positions if "q" in part.picked[p]]
            if with_qk:
                d = part.picked[with_qk[0]]["q"].shape[-1]
                q = np.zeros((len(with_qk), layers, heads, width, d), dtype=np.float32)
                k = np.zeros_like(q)
                for r, p in enumerate(with_qk):
                    n = len(part.picked[p]["ids"])
                    q[r, :, :, :n] = part.picked[p]["q"]
                    k[r, :, :, :n] = part.picked[p]["k"]
                out.update(neuron_q=q, neuron_k=k)
        snap.results[self.name] = out

    def hooks(self, model, record) -> list:
        """Query and key projections, for the neuron view of the first examples (BERT family):
        their outputs are read during the same forward pass."""
        from ...model_utils import unwrap
        from .neuron import query_key_hooks

        return query_key_hooks(unwrap(model), record)

    # -- back half ----------------------------------------------------------------------------
    def process(self, ctx: Context, key: SnapshotKey, snaps: dict) -> dict[str, float]:
        logs: dict[str, float] = {}
        grids: dict[str, dict[str, np.ndarray]] = {}
        for split in ctx.drawn(snaps):
            values = self._values(split, snaps[split].results.get(self.name))
            if values is None:
                continue
            rows = []
            for stat, grid in values.items():
                for (l, h), v in np.ndenumerate(grid):
                    if np.isfinite(v):
                        logs[f"layerwatch/{split}/attention_{stat}/layer_{l + 1}/head_{h + 1}"] = float(v)
                        rows.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": l + 1, "head": h + 1, "stat": stat, "value": float(v)})
            ctx.guard(f"writing {TABLE} for {split}", key, ctx.store.replace_rows, TABLE, FIELDS, split, key, rows, owner=self.name)
            ctx.history.put(self.name, split, key, page.record(values, snaps[split].results[self.name], snaps[split]))
            for stat, grid in values.items():
                grids.setdefault(stat, {})[split] = grid
        for stat, by_split in grids.items():
            film = self._film(ctx, stat)
            frame = Frame(key, _Heat(by_split))
            if ctx.render:
                film.show(ctx, frame)
            else:
                film.add(frame)
        if ctx.render:
            ctx.guard("drawing the attention summary", key, self.write_summary, ctx)
            ctx.guard(f"writing {HEAD_VIEW}", key, self.write_head_view, ctx)
        return logs

    def _values(self, split: str, res: dict | None) -> dict[str, np.ndarray] | None:
        """Every statistic's (layers, heads) grid of one split's snapshot, the drift included;
        remembers what the next snapshot is compared with."""
        if not res or "stats" not in res:
            return None
        stats = np.asarray(res["stats"], dtype=np.float64)
        values = {s: stats[:, :, i] for i, s in enumerate(STATS)}
        if "maps" in res:
            values.update(self._drift(split, res))
        self._first_stats.setdefault(split, stats)
        self._latest_stats[split] = stats
        return values

    def _drift(self, split: str, res: dict) -> dict[str, np.ndarray]:
        current = {k: res[k] for k in ("positions", "lengths", "maps", "tokens")}
        out = {}
        for name, memory in (("drift_first", self._first), ("drift_prev", self._latest)):
            other = memory.get(split)
            if other is not None and np.array_equal(other["positions"], current["positions"]) and np.array_equal(other["lengths"], current["lengths"]):
                out[name] = js_divergence(current["maps"], other["maps"], current["lengths"])
        if "drift_first" not in out:
            self._first[split] = current
            out["drift_first"] = np.zeros(current["maps"].shape[1:3])  # the start: no drift yet
        self._latest[split] = current
        self._latest_drift[split] = out["drift_first"]
        return out

    def _film(self, ctx: Context, stat: str) -> Film:
        film = self.films.get(stat)
        if film is None:
            film = self.films[stat] = Film(
                ctx.store,
                frame_path=lambda k, st=stat: ctx.store.array_path(FRAMES, st, k, ".png"),
                gif_path=ctx.store.file_path(f"attention_{stat}.gif"),
                draw=lambda f, scale, st=stat: self._draw(ctx, st, f, scale),
                extent=None if stat in _FIXED_RANGE else _value_range,
                duration=self.config.frame_duration,
                frames_on_disk=lambda st=stat: ctx.store.keys(st, FRAMES),
            )
        return film

    def _draw(self, ctx: Context, stat: str, frame: Frame, scale) -> bytes:
        """One frame of a statistic's film: a layers x heads heatmap per split, one colour scale."""
        from ...render import figure_png
        from .render import draw_head_heatmap, head_figure

        grids = frame.data.values
        splits = sorted(grids, key=lambda s: (s != ctx.reference_split, s))
        if stat in _FIXED_RANGE:
            vmin, vmax = _FIXED_RANGE[stat]
        elif scale:
            vmin, vmax = scale[0]
        else:
            vmin, vmax = _value_range(frame)[0]
        if not vmax > vmin:
            vmax = vmin + 1e-6
        shape = grids[splits[0]].shape
        size = (tuple(shape), len(splits))
        fig = self._figures.get(size)
        if fig is None:
            one = head_figure(*shape, dpi=self.config.dpi)
            w, h = one.get_size_inches()
            from matplotlib.figure import Figure

            fig = self._figures[size] = Figure(figsize=(w * len(splits), h + 0.4), dpi=self.config.dpi)
        fig.clear()
        panels = fig.subfigures(1, len(splits), squeeze=False)[0]
        for sub, split in zip(panels, splits):
            grid = grids[split]
            draw_head_heatmap(sub, grid, list(range(1, grid.shape[0] + 1)), stat, split, vmin, vmax)
        fig.suptitle(f"attention {stat} - {frame.key.title}", parse_math=False)
        return figure_png(fig)

    def write_summary(self, ctx: Context) -> None:
        """``attention_summary.png``: how far each head of the examples' split moved, and how."""
        from matplotlib.figure import Figure

        from ...render import figure_png
        from .render import draw_head_summary

        for split, drift in self._latest_drift.items():
            if split not in self._first_stats:
                continue
            start = pattern_labels(as_stats(self._first_stats[split]))
            end = pattern_labels(as_stats(self._latest_stats[split]))
            layers, heads = drift.shape
            fig = Figure(figsize=(max(4.0, heads * 0.55 + 2.2), max(3.0, layers * 0.55 + 1.8)), dpi=self.config.dpi)
            draw_head_summary(fig, drift, start, end, list(range(1, layers + 1)), f"{split}: heads' drift since the first snapshot")
            ctx.store.write_bytes(ctx.store.file_path(SUMMARY), figure_png(fig))
            return

    def write_head_view(self, ctx: Context) -> None:
        """``attention_head_view.html``: the examples' maps over every snapshot, from the history."""
        for split in self._latest:
            html = page.head_view(ctx.history, self.name, split, ctx.label_names, text_allowed(self.config), HEAD_VIEW)
            if html is not None:
                ctx.store.write_text(ctx.store.file_path(HEAD_VIEW), html)
                return

    def render_all(self, ctx: Context) -> None:
        for film in self.films.values():
            film.redraw(ctx)
        ctx.guard("drawing the attention summary", None, self.write_summary, ctx)
        ctx.guard(f"writing {HEAD_VIEW}", None, self.write_head_view, ctx)

    def restore(self, ctx: Context, snaps: list) -> None:
        for key, by_split in snaps:
            grids: dict[str, dict[str, np.ndarray]] = {}
            for split, snap in by_split.items():
                values = self._values(split, snap.results.get(self.name))
                if values is None:
                    continue
                ctx.history.put(self.name, split, key, page.record(values, snap.results[self.name], snap))
                for stat, grid in values.items():
                    grids.setdefault(stat, {})[split] = grid
            for stat, by_split in grids.items():
                self._film(ctx, stat).add(Frame(key, _Heat(by_split)))

    def load(self, store, snap, key) -> None:
        try:
            snap.results[self.name] = store.load_arrays(self.name, snap.split, key)
        except FileNotFoundError:
            pass

    def sends(self, run: Any, key: Any, snaps: Any = None, logs: Any = None, kinds: tuple = SENT_KINDS) -> list:
        """Once the run is over, its films (a GIF per statistic) and its table."""
        return films_and_tables(run, kinds, "attention_", (TABLE,)) if key is None else []

    def summarize(self, store) -> dict[str, Any]:
        return {"attention": heads_that_moved(store)} if store.read_table(TABLE) else {}

    def info_lines(self, summary: dict[str, Any]) -> list[str]:
        lines = []
        for split, a in summary.get("attention", {}).items():
            if a["moved_most"]:
                h = a["moved_most"][0]
                lines.append(f"attention of {split!r}: layer {h['layer']} head {h['head']} moved most ({h['drift_first']:.4f} nats, "
                             f"{h['pattern_start']} -> {h['pattern_end']}); see layerwatch attention")
        return lines

    def report_sections(self, ctx: Context) -> list[dict]:
        return page.report_sections(ctx, self.name, HEAD_VIEW)

    @classmethod
    def add_commands(cls, subparsers) -> None:
        add_attention_command(subparsers)


def _value_range(frame: Frame) -> list:
    vals = np.concatenate([g[np.isfinite(g)] for g in frame.data.values.values()])
    if vals.size == 0:
        return [(0.0, 1.0)]
    lo, hi = float(vals.min()), float(vals.max())
    return [(lo, hi if hi > lo else lo + 1e-6)]
