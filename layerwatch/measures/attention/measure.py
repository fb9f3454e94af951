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
from ...snapshot import SnapshotKey, epoch_value, sort_keys
from ...text import clean_text, position_names, shown_tokens, text_allowed
from .stats import STATS, js_divergence, pattern_labels
from .settings import Attention
from ..base import Accumulator, Batch, Context, Measurement, SplitPlan, check_example_split, example_split, pick_examples

logger = logging.getLogger("layerwatch")

FIELDS = ("split", "epoch", "step", "layer", "head", "stat", "value")
TABLE = "attention.csv"
DRIFT = ("drift_first", "drift_prev")
FRAMES = "attention_frames"
HEAD_VIEW = "attention_head_view.html"
SUMMARY = "attention_summary.png"
# Colour scales of the films: statistics that are shares of attention live in [0, 1].
_FIXED_RANGE = {s: (0.0, 1.0) for s in ("entropy_norm", "max_weight", "first", "sep", "punct", "self", "prev", "next")}


class _Stats(Accumulator):
    def __init__(self, plan: SplitPlan, picked: set[int], sep_ids, punct_ids, to_tokens, neuron: set[int] = frozenset()):
        self.plan = plan
        self.picked = picked  # positions in the whole subset
        self.neuron = neuron  # of those, the ones whose query and key vectors are kept
        self.sep_ids, self.punct_ids = sep_ids, punct_ids
        self.to_tokens = to_tokens
        self.sums: np.ndarray | None = None
        self.rows = 0
        self.kept: dict[int, dict[str, np.ndarray]] = {}

    def update(self, batch: Batch) -> None:
        import torch

        from ...model_utils import to_numpy
        from .stats import row_head_stats, token_class_masks

        attentions = batch.output("attentions")
        if not attentions:
            raise ValueError(
                "the model returned no attention weights with output_attentions=True (even in eager attention); "
                "pass attention=False for this model"
            )
        ids = batch.inputs["input_ids"]
        sep, punct = token_class_masks(ids, batch.mask, self.sep_ids, self.punct_ids)
        per_layer = [row_head_stats(a, batch.mask, sep, punct).double().sum(0) for a in attentions]
        total = to_numpy(torch.stack(per_layer))  # (layers, heads, stats)
        self.sums = total if self.sums is None else self.sums + total
        self.rows += len(batch.rows)
        for b, row in enumerate(batch.rows):
            position = int(self.plan.positions[row])
            if position not in self.picked:
                continue
            n = int(batch.mask[b].sum())
            maps = to_numpy(torch.stack([a[b, :, :n, :n] for a in attentions])).astype(np.float16)
            token_ids = to_numpy(ids[b, :n])
            self.kept[position] = {"maps": maps, "ids": token_ids, "tokens": np.array(self.to_tokens(token_ids))}
            qs, ks = batch.hooked.get("attention_q", {}), batch.hooked.get("attention_k", {})
            if position in self.neuron and len(qs) == len(ks) == len(attentions):
                heads = attentions[0].shape[1]

                def per_head(x):  # (tokens, hidden) -> (heads, tokens, d_head)
                    return x.reshape(x.shape[0], heads, -1).permute(1, 0, 2)

                self.kept[position]["q"] = to_numpy(torch.stack([per_head(qs[l][b, :n]) for l in range(len(qs))]))
                self.kept[position]["k"] = to_numpy(torch.stack([per_head(ks[l][b, :n]) for l in range(len(ks))]))

    def finish(self) -> Part:
        sums = self.sums if self.sums is not None else np.zeros((0, 0, len(STATS)))
        return Part(sums={"stats_sum": sums, "rows": np.array(self.rows)}, picked=self.kept)


@dataclass
class _Heat:
    values: dict  # split -> (layers, heads)


class AttentionMeasurement(Measurement):
    """Per-head attention statistics (``attention=True``)."""

    name = "attention"
    output_flags = {"output_attentions": True}
    eager_attention = True

    Settings = Attention

    def __init__(self, config):
        super().__init__(config)
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
        from .stats import punctuation_ids, special_token_ids

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

        from .head_view import MAX_NEURON_EXAMPLES

        examples = [int(p) for p in self.examples.get(plan.split, ())]
        return _Stats(
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
        from .neuron import _projection_pairs

        try:
            pairs = _projection_pairs(unwrap(model))
        except ValueError:  # no query/key projections to read: statistics, but no neuron view
            return []
        out = []
        for layer, (q, k) in enumerate(pairs):
            for kind, module in (("q", q), ("k", k)):
                def hook(_module, _inputs, output, kind=kind, layer=layer):
                    record.setdefault(f"attention_{kind}", {})[layer] = output

                out.append((module, hook))
        return out

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
            ctx.guard(f"writing {TABLE} for {split}", key, ctx.store.replace_rows, TABLE, FIELDS, split, key, rows)
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
            start = pattern_labels(_as_stats(self._first_stats[split]))
            end = pattern_labels(_as_stats(self._latest_stats[split]))
            layers, heads = drift.shape
            fig = Figure(figsize=(max(4.0, heads * 0.55 + 2.2), max(3.0, layers * 0.55 + 1.8)), dpi=self.config.dpi)
            draw_head_summary(fig, drift, start, end, list(range(1, layers + 1)), f"{split}: heads' drift since the first snapshot")
            ctx.store.write_bytes(ctx.store.file_path(SUMMARY), figure_png(fig))
            return

    def write_head_view(self, ctx: Context) -> None:
        """``attention_head_view.html``: the examples' maps over every stored snapshot."""
        from .head_view import head_view_html

        for split in self._latest:
            keys = sort_keys(ctx.store.keys(split, self.name))
            stored = []
            for key in keys:
                try:
                    arrays = ctx.store.load_arrays(self.name, split, key)
                    true_key = ctx.store.snapshot_key(split, key)
                except (ValueError, FileNotFoundError) as exc:
                    logger.warning("layerwatch: %s", exc)
                    continue
                if "maps" in arrays:
                    stored.append((true_key, arrays))
            if not stored:
                continue
            positions = stored[-1][1]["positions"]
            stored = [(k, a) for k, a in stored if np.array_equal(a["positions"], positions)]
            names = ctx.label_names
            try:
                snap = ctx.store.load_snapshot(split, keys[-1], pooled=False)
                labels = snap.labels[positions]
                rows = snap.indices[positions]
            except (ValueError, FileNotFoundError):
                labels, rows = np.zeros(len(positions), dtype=np.int64), positions
            examples = []
            for r in range(len(positions)):
                n = int(stored[-1][1]["lengths"][r])
                maps = np.stack([a["maps"][r, :, :, :n, :n].astype(np.float32) for _, a in stored])
                label = names[int(labels[r])] if names and 0 <= int(labels[r]) < len(names) else str(labels[r])
                example = {"tokens": shown_tokens(stored[-1][1]["tokens"][r, :n], text_allowed(self.config)), "label": f"{split} row {int(rows[r])}: {label}", "maps": maps}
                with_qk = [(i, a) for i, (_, a) in enumerate(stored) if "neuron_q" in a and r < len(a["neuron_q"])]
                if with_qk:
                    example["neuron"] = {
                        "q": np.stack([a["neuron_q"][r, :, :, :n] for _, a in with_qk]),
                        "k": np.stack([a["neuron_k"][r, :, :, :n] for _, a in with_qk]),
                        "snapshots": [i for i, _ in with_qk],
                    }
                examples.append(example)
            damaged = sorted({(int(s), int(l)) for ex in examples
                              for s, l in np.argwhere(~np.isfinite(ex["maps"]).all(axis=(2, 3, 4)))})
            if damaged:
                shown = ", ".join(f"layer {l + 1} at {stored[s][0].title}" for s, l in damaged[:6])
                logger.warning(
                    "layerwatch: the attention weights of %s hold NaN or infinity for some of the examples (the "
                    "forward pass overflowed there, as in half precision); %s marks those layers and draws the rest",
                    shown + (", ..." if len(damaged) > 6 else ""), HEAD_VIEW,
                )
            html = head_view_html(examples, [k.title for k, _ in stored], title=f"layerwatch: attention heads ({split})")
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
                for stat, grid in values.items():
                    grids.setdefault(stat, {})[split] = grid
            for stat, by_split in grids.items():
                self._film(ctx, stat).add(Frame(key, _Heat(by_split)))

    def load(self, store, snap, key) -> None:
        try:
            snap.results[self.name] = store.load_arrays(self.name, snap.split, key)
        except FileNotFoundError:
            pass

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

    def report_sections(self, store) -> list[dict]:
        import base64
        import os

        images = []
        path = store.file_path(SUMMARY)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                images.append({"caption": "how far each head moved since the first snapshot, and its pattern then and now",
                               "src": "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")})
        links = [{"text": "head view of the examples (every head, every snapshot)", "href": HEAD_VIEW}] if os.path.exists(store.file_path(HEAD_VIEW)) else []
        links += [{"text": f, "href": f} for f in sorted(os.listdir(store.root)) if f.startswith("attention_") and f.endswith(".gif")]
        if not images and not links:
            return []
        return [{"title": "Attention", "text": "Per-head attention statistics over training (attention.csv; "
                 "`layerwatch attention RUN` lists the heads that changed most).", "images": images, "links": links}]

    @classmethod
    def add_commands(cls, subparsers) -> None:
        p = subparsers.add_parser("attention", help="which attention heads changed most over training, and how")
        p.add_argument("run_dir", help="the output_dir of a run with attention=True")
        p.add_argument("--top", type=int, default=5, help="heads to list per split (default: %(default)s)")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.add_argument("--bertviz", choices=("head", "model"), help="write bertviz's view of an example's stored maps to --output")
        p.add_argument("--example", type=int, default=0, help="which stored example, 0-based (default: %(default)s)")
        p.add_argument("--snapshot", type=int, default=-1, help="which snapshot, 0-based; -1 = the last (default)")
        p.add_argument("-o", "--output", default="bertviz.html", help="file for --bertviz (default: %(default)s)")
        p.set_defaults(func=_cmd_attention)


def stored_example(root: str, example: int = 0, snapshot: int = -1) -> dict[str, Any]:
    """One stored example's attention maps at one snapshot: ``{"maps": (layers, heads, T, T),
    "tokens": [...], "split", "row", "title"}`` (for bertviz, or your own plots)."""
    from ...store import RunStore

    store = RunStore(root)
    splits = [s for s in store.splits(AttentionMeasurement.name) if store.keys(s, AttentionMeasurement.name)]
    for split in splits:
        keys = store.keys(split, AttentionMeasurement.name)
        stored = [k for k in keys if "maps" in store.load_arrays(AttentionMeasurement.name, split, k)]
        if not stored:
            continue
        try:
            key = stored[snapshot]
        except IndexError:
            raise ValueError(f"snapshot={snapshot} is out of range; the run holds {len(stored)} snapshots of examples") from None
        arrays = store.load_arrays(AttentionMeasurement.name, split, key)
        if not 0 <= example < len(arrays["positions"]):
            raise ValueError(f"example={example} is out of range; the run keeps {len(arrays['positions'])} examples (0-based)")
        n = int(arrays["lengths"][example])
        snap = store.load_snapshot(split, key, pooled=False)
        return {
            "maps": arrays["maps"][example, :, :, :n, :n].astype(np.float32),
            "tokens": shown_tokens(arrays["tokens"][example, :n], text_allowed(store.read_run().get("config"))),
            "split": split, "row": int(snap.indices[int(arrays["positions"][example])]),
            "title": store.snapshot_key(split, key).title,
        }
    raise ValueError(f"{root!r} holds no attention examples; train with attention=True")


def show_stored_in_bertviz(root: str, example: int = 0, snapshot: int = -1, view: str = "head", **kwargs: Any) -> Any:
    """Hand a stored example's maps to bertviz's ``head_view`` / ``model_view`` (in Jupyter)."""
    from .head_view import show_bertviz

    found = stored_example(root, example, snapshot)
    return show_bertviz(found["maps"], found["tokens"], view=view, **kwargs)


def _cmd_attention(args) -> int:
    import json

    from ...store import RunStore

    store = RunStore(args.run_dir)
    store.read_run()
    if args.bertviz:
        html = show_stored_in_bertviz(args.run_dir, args.example, args.snapshot, view=args.bertviz, html_action="return")
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(clean_text(getattr(html, "data", str(html))))
        print(f"bertviz {args.bertviz} view: {args.output}")
        return 0
    summary = heads_that_moved(store, top=args.top)
    if not summary:
        raise ValueError(f"{args.run_dir!r} holds no attention statistics; train with attention=True")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for split, s in summary.items():
        print(f"split {split!r}: {s['snapshots']} snapshots")
        print("  heads whose attention moved most since the first snapshot (Jensen-Shannon divergence, nats):")
        for h in s["moved_most"]:
            change = h["pattern_start"] if h["pattern_start"] == h["pattern_end"] else f"{h['pattern_start']} -> {h['pattern_end']}"
            print(f"    layer {h['layer']} head {h['head']}: {h['drift_first']:.4f} ({change})")
        means = ", ".join(f"{l}: {v:.4f}" for l, v in s["mean_drift_by_layer"].items())
        print(f"  mean drift by layer: {means}")
    return 0


def _as_stats(stats: np.ndarray) -> dict[str, np.ndarray]:
    return {s: stats[:, :, i] for i, s in enumerate(STATS)}


def _value_range(frame: Frame) -> list:
    vals = np.concatenate([g[np.isfinite(g)] for g in frame.data.values.values()])
    if vals.size == 0:
        return [(0.0, 1.0)]
    lo, hi = float(vals.min()), float(vals.max())
    return [(lo, hi if hi > lo else lo + 1e-6)]


def heads_that_moved(store, top: int = 5) -> dict[str, Any]:
    """The heads whose maps moved most since the first snapshot (drift_first at the last
    snapshot), with their dominant pattern at the first and the last snapshot."""
    rows = store.read_table(TABLE)
    out: dict[str, Any] = {}
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split]
        steps = sorted({(int(r["step"]), epoch_value(r["epoch"])) for r in mine})
        if not steps:
            continue
        first, last = steps[0], steps[-1]

        def grid(when, stat):
            cells = {(int(r["layer"]), int(r["head"])): r["value"] for r in mine
                     if (int(r["step"]), epoch_value(r["epoch"])) == when and r["stat"] == stat}
            return cells

        drift = grid(last, "drift_first")
        if not drift:
            continue
        layers = max(l for l, _ in drift)
        heads = max(h for _, h in drift)

        def labels(when):
            stats = {}
            for s in STATS:
                cells = grid(when, s)
                arr = np.full((layers, heads), np.nan)
                for (l, h), v in cells.items():
                    arr[l - 1, h - 1] = v
                stats[s] = arr
            return pattern_labels(stats)

        start, end = labels(first), labels(last)
        ranked = sorted(drift.items(), key=lambda kv: -kv[1])[:top]
        out[split] = {
            "snapshots": len(steps),
            "moved_most": [
                {"layer": l, "head": h, "drift_first": round(v, 4), "pattern_start": str(start[l - 1, h - 1]), "pattern_end": str(end[l - 1, h - 1])}
                for (l, h), v in ranked
            ],
            "mean_drift_by_layer": {
                int(l): round(float(np.mean([v for (ll, _), v in drift.items() if ll == l])), 4) for l in range(1, layers + 1)
            },
        }
    return out
