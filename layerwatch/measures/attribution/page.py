"""The attribution measurement's part of the pages, drawn from the run's history (never by
re-reading earlier snapshots' files): its section of the report (each example's layers x
tokens conductance with its tokens coloured by their attribution, and the attention
weight and norm shares per layer and token class, at the snapshot the page's slider
selects; an example lights up when its row is pinned) and the norm-share picture.

What it files in the history per split and snapshot (:func:`record`): the norm shares
averaged over heads (layers, token classes, weight/norm) and, for each example, its
dataset row, label, tokens, conductance and token attributions.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...pages.sections import heatmap_film
from ...text import shown_tokens
from .accumulate import TOKEN_CLASSES


def _layer(row: int) -> str:
    return "embeddings" if row == 0 else f"layer {row}"


def record(res: dict, snap: Any, label_names: list | None, texts: bool) -> dict:
    """What the history keeps of one split's snapshot (``res``: its arrays of this measurement)."""
    out: dict[str, Any] = {}
    if "shares" in res:
        shares = np.asarray(res["shares"], dtype=np.float64)  # (layers, heads, classes, 2)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(shares)
            count = finite.sum(axis=1)
            out["shares"] = np.where(count > 0, np.where(finite, shares, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    if "conductance" in res:
        examples = []
        for r, position in enumerate(np.asarray(res["positions"])):
            n = int(res["lengths"][r])
            value = snap.labels[position]
            label = label_names[int(value)] if label_names and 0 <= int(value) < len(label_names) else str(value)
            examples.append({
                "row": int(snap.indices[position]), "label": label,
                "tokens": shown_tokens(res["tokens"][r][:n], texts),
                "conductance": np.asarray(res["conductance"][r][:, :n], dtype=np.float64),
                "attributions": np.asarray(res["token_attributions"][r][:n], dtype=np.float64),
            })
        out["examples"] = examples
    return out


def shares_over_training(history: Any, name: str, split: str) -> tuple[list, np.ndarray, np.ndarray] | None:
    """``(keys, weight, norm)``: each (snapshots, layers, classes), the shares averaged over heads."""
    got = [(k, r["shares"]) for k, r in history.get(name, split) if "shares" in r]
    if not got:
        return None
    shape = got[-1][1].shape
    got = [(k, s) for k, s in got if s.shape == shape]
    stacked = np.stack([s for _, s in got])
    return [k for k, _ in got], stacked[..., 0], stacked[..., 1]


def report_sections(ctx: Any, name: str) -> list[dict]:
    """The attribution section: the examples' conductance films and the norm shares."""
    history = ctx.history
    splits = history.splits(name)
    films = []
    for split in splits:
        by_row: dict[int, list] = {}
        for key, r in history.get(name, split):
            for ex in r.get("examples", ()):
                by_row.setdefault(ex["row"], []).append((key, ex))
        for row, got in sorted(by_row.items()):
            last = got[-1][1]
            shape = last["conductance"].shape
            got = [(k, ex) for k, ex in got if ex["conductance"].shape == shape]
            films.append(heatmap_film(
                f"{split} row {row} ({last['label']})", [k for k, _ in got], [ex["conductance"] for _, ex in got],
                [_layer(l) for l in range(shape[0])], last["tokens"], group="conductance by layer and token",
                split=split, row=row, diverging=True, unit="conductance",
                strip=(last["tokens"], [ex["attributions"] for _, ex in got]),
            ))
    for split in splits:
        shares = shares_over_training(history, name, split)
        if shares is None:
            continue
        keys, weight, norm = shares
        layers = [f"layer {l}" for l in range(1, weight.shape[1] + 1)]
        for what, values in (("attention weight", weight), ("attention norm ||alpha f(x)||", norm)):
            films.append(heatmap_film(
                f"{split}: {what} share", keys, list(values), layers, list(TOKEN_CLASSES),
                group="norm shares by token class", split=split, value_range=(0.0, 1.0), unit="share",
            ))
    if not films:
        return []
    root = ctx.store.root
    links = [{"text": f, "href": f} for f in sorted(os.listdir(root)) if f.startswith("attribution_") and f.endswith(".gif")]
    return [{
        "title": "Attribution",
        "text": "Which layers and tokens decide for the chosen rows, at the snapshot the slider shows: each "
                "example's conductance by layer and token (red pushes the explained logit up, blue down), its "
                "tokens coloured by their integrated gradients; pin a row in the layouts to light its example up. "
                "The norm shares say where attention weight and attention norm go (`norms.csv`).",
        "images": [], "links": links, "films": films,
    }]
