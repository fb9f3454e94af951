"""The attention measurement's pages, drawn from the run's history (never by re-reading
earlier snapshots' files): its section of the report (every statistic's layers x heads
heatmap of every split, at the snapshot the page's slider selects) and the head view of
the examples over every snapshot (``attention_head_view.html``).

What it files in the history per split and snapshot (:func:`record`): every statistic's
(layers, heads) grid, the drift included, and the examples' maps with their tokens,
dataset rows and labels.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ...pages.sections import heatmap_film
from ...text import shown_tokens
from .head_view import _WEIGHT_SLACK, head_view_html, quantise_maps
from .stats import STATS

logger = logging.getLogger("layerwatch")

EXAMPLE_ARRAYS = ("positions", "lengths", "maps", "tokens", "neuron_q", "neuron_k")
# Statistics that are shares of attention live in [0, 1]: their films share that scale.
FIXED_RANGE = {s: (0.0, 1.0) for s in ("entropy_norm", "max_weight", "first", "sep", "punct", "self", "prev", "next")}


def record(values: dict[str, np.ndarray], res: dict, snap: Any) -> dict:
    """What the history keeps of one split's snapshot: the grids, and the examples' maps
    with their dataset rows and labels (``snap``: the split's snapshot)."""
    out: dict[str, Any] = {"grids": {stat: np.asarray(grid, dtype=np.float64) for stat, grid in values.items()}}
    if "maps" in res:
        examples = {k: res[k] for k in EXAMPLE_ARRAYS if k in res and k != "maps"}
        # Quantised once, as the head view shows them: a layer with a non-finite weight is
        # zeroed and marked damaged; the finite range is kept for the head view's check.
        maps = np.asarray(res["maps"], dtype=np.float32)
        damaged = ~np.isfinite(maps).all(axis=(2, 3, 4))  # (examples, layers)
        finite = np.where(damaged[:, :, None, None, None], 0.0, maps)
        examples.update(levels=quantise_maps(finite), damaged=damaged,
                        low=float(finite.min()) if finite.size else 0.0, high=float(finite.max()) if finite.size else 0.0)
        positions = np.asarray(res["positions"], dtype=np.int64)
        examples["rows"] = np.asarray(snap.indices)[positions]
        examples["labels"] = np.asarray(snap.labels)[positions]
        out["examples"] = examples
    return out


def head_view(history: Any, name: str, split: str, label_names: list | None, texts: bool, file_name: str) -> str | None:
    """The head view page of ``split``'s examples over every snapshot the history holds, or None."""
    stored = [(k, r["examples"]) for k, r in history.get(name, split) if r.get("examples")]
    if not stored:
        return None
    last = stored[-1][1]
    positions = last["positions"]
    stored = [(k, a) for k, a in stored if np.array_equal(a["positions"], positions)]
    low, high = min(a["low"] for _, a in stored), max(a["high"] for _, a in stored)
    if low < -_WEIGHT_SLACK or high > 1 + _WEIGHT_SLACK:
        raise ValueError(f"the attention maps of {split!r} hold values outside [0, 1] (from {low:.3g} to {high:.3g})")
    examples = []
    for r in range(len(positions)):
        n = int(last["lengths"][r])
        levels = np.stack([a["levels"][r, :, :, :n, :n] for _, a in stored])
        value = last["labels"][r]
        label = label_names[int(value)] if label_names and 0 <= int(value) < len(label_names) else str(value)
        example = {"tokens": shown_tokens(last["tokens"][r, :n], texts), "label": f"{split} row {int(last['rows'][r])}: {label}",
                   "levels": levels, "damaged": [[s, int(l)] for s, (_, a) in enumerate(stored) for l in np.flatnonzero(a["damaged"][r])]}
        with_qk = [(i, a) for i, (_, a) in enumerate(stored) if "neuron_q" in a and r < len(a["neuron_q"])]
        if with_qk:
            example["neuron"] = {
                "q": np.stack([a["neuron_q"][r, :, :, :n] for _, a in with_qk]),
                "k": np.stack([a["neuron_k"][r, :, :, :n] for _, a in with_qk]),
                "snapshots": [i for i, _ in with_qk],
            }
        examples.append(example)
    damaged = sorted({(s, l) for ex in examples for s, l in ex["damaged"]})
    if damaged:
        shown = ", ".join(f"layer {l + 1} at {stored[s][0].title}" for s, l in damaged[:6])
        logger.warning(
            "layerwatch: the attention weights of %s hold NaN or infinity for some of the examples (the "
            "forward pass overflowed there, as in half precision); %s marks those layers and draws the rest",
            shown + (", ..." if len(damaged) > 6 else ""), file_name,
        )
    return head_view_html(examples, [k.title for k, _ in stored], title=f"layerwatch: attention heads ({split})")


def report_sections(ctx: Any, name: str, head_view_file: str) -> list[dict]:
    """The attention section: per statistic, each split's layers x heads heatmap at the
    slider's snapshot, and links to the head view and the GIFs."""
    history = ctx.history
    splits = sorted(history.splits(name), key=lambda s: (s != ctx.reference_split, s))
    films = []
    for stat in (*STATS, "drift_first", "drift_prev"):
        for split in splits:
            got = [(k, r["grids"][stat]) for k, r in history.get(name, split) if stat in r["grids"]]
            if not got:
                continue
            layers, heads = got[-1][1].shape
            got = [(k, g) for k, g in got if g.shape == (layers, heads)]
            films.append(heatmap_film(
                f"{split}: {stat.replace('_', ' ')}", [k for k, _ in got], [g for _, g in got],
                [f"layer {l}" for l in range(1, layers + 1)], [f"head {h}" for h in range(1, heads + 1)],
                group=stat.replace("_", " "), split=split, value_range=FIXED_RANGE.get(stat),
            ))
    if not films:
        return []
    root = ctx.store.root
    links = [{"text": "head view of the examples (every head, every snapshot)", "href": head_view_file}] \
        if os.path.exists(os.path.join(root, head_view_file)) else []
    links += [{"text": f, "href": f} for f in sorted(os.listdir(root)) if f.startswith("attention_") and f.endswith(".gif")]
    return [{
        "title": "Attention",
        "text": "Per-head attention statistics over training (`attention.csv`), each split's layers x heads at the "
                "snapshot the slider shows; pick a statistic (`drift_first`: how far each head's maps of the "
                "examples moved since the first snapshot). `layerwatch attention RUN` lists the heads that changed most.",
        "images": [], "links": links, "films": films,
    }]
