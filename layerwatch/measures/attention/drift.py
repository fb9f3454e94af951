"""How attention heads moved: drift between snapshots, each head's dominant pattern, and
the heads that moved most.

Numpy only, for the commands that read a stored run without loading torch.
:func:`js_divergence` compares two snapshots' stored maps of the same rows (the layout of
:mod:`~layerwatch.measures.attention.stats`: query on the second-to-last axis, each row's
real tokens first), :func:`pattern_labels` names each head's dominant pattern from its
averaged statistics, and :func:`heads_that_moved` reads both from ``attention.csv``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ...snapshot import epoch_value
from .stats import STATS, _shape_error

__all__ = ["BROAD_MIN", "PATTERNS", "POSITIONAL_MIN", "SPECIAL_MIN", "TABLE", "as_stats", "heads_that_moved", "js_divergence", "pattern_labels"]

TABLE = "attention.csv"
"""The measurement's table: one row per split, snapshot, layer, head and statistic."""

PATTERNS = ("positional", "to-special", "broad", "mixed")

# Thresholds of pattern_labels (see its docstring for the precedence).
POSITIONAL_MIN = 0.5  # one relative offset (self, prev or next) holds at least half the mass
SPECIAL_MIN = 0.5  # the first token and the separators together hold at least half
BROAD_MIN = 0.75  # entropy at least three quarters of the uniform distribution's


def _crop_rows(p: np.ndarray, lengths: np.ndarray, width: int, name: str) -> None:
    if lengths.ndim != 1 or len(lengths) != p.shape[0]:
        raise _shape_error("lengths", lengths, f"(rows,) = ({p.shape[0]},)", "pass each row's number of real tokens")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths has dtype {lengths.dtype}; expected integers; pass each row's number of real tokens")
    bad = np.flatnonzero((lengths < 1) | (lengths > width))
    if len(bad):
        raise ValueError(
            f"lengths[{bad[0]}]={int(lengths[bad[0]])} is outside 1..{width} (the width of {name}); "
            "pass the number of real tokens of each row"
        )


def _normalised(rows: np.ndarray) -> np.ndarray:
    total = rows.sum(-1, keepdims=True)
    return np.divide(rows, total, out=np.zeros_like(rows), where=total > 0)


def _kl_to(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``sum_j p log(p / m)`` over the last axis, with ``0 log 0 = 0`` (m > 0 where p > 0)."""
    terms = np.zeros_like(p)
    nz = p > 0
    terms[nz] = p[nz] * np.log(p[nz] / m[nz])
    return terms.sum(-1)


def js_divergence(p: np.ndarray, q: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence between two snapshots' attention maps of the same rows.

    Per row, layer, head and real query: ``JS = (KL(p || m) + KL(q || m)) / 2`` with
    ``m = (p + q) / 2``, natural log, over the real keys (each query's weights renormalised
    over them); averaged over the real queries, then over the rows. Computed in float64,
    one row at a time. Identical maps give exactly 0, swapping ``p`` and ``q`` gives the
    same bytes, and every value lies in ``[0, log 2]``. A query whose weights are all zero
    compares as an all-zero distribution (no NaN).

    Args:
        p: (rows, layers, heads, T, T) float16 or float32 maps of one snapshot; each row's
            real tokens come first (positions ``0 .. lengths[r] - 1``).
        q: The same rows at another snapshot, same shape.
        lengths: (rows,) integers, each row's number of real tokens.

    Returns:
        (layers, heads) float64 array.
    """
    p = np.asarray(p)
    q = np.asarray(q)
    if p.ndim != 5 or p.shape[-1] != p.shape[-2]:
        raise _shape_error("p", p, "(rows, layers, heads, T, T)", "pass stored attention maps of fixed rows")
    if q.shape != p.shape:
        raise _shape_error("q", q, f"the shape of p {p.shape}", "pass the same rows at the other snapshot")
    if p.shape[0] == 0:
        raise ValueError("p has no rows; pass at least one row's maps")
    lengths = np.asarray(lengths)
    _crop_rows(p, lengths, p.shape[-1], "p")
    total = np.zeros(p.shape[1:3], dtype=np.float64)
    for row, n in enumerate(lengths.tolist()):
        pr = _normalised(p[row, :, :, :n, :n].astype(np.float64))
        qr = _normalised(q[row, :, :, :n, :n].astype(np.float64))
        m = (pr + qr) / 2.0
        js = (_kl_to(pr, m) + _kl_to(qr, m)) / 2.0  # (layers, heads, n)
        total += js.mean(-1)
    # Rounding can step a hair outside the bounds that hold exactly.
    return np.clip(total / len(lengths), 0.0, math.log(2.0))


def pattern_labels(stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each head's dominant attention pattern, named from its averaged statistics.

    Rules, in order of precedence (the first that holds wins):

    1. ``"positional"``: ``max(self, prev, next) >= POSITIONAL_MIN`` (0.5): one relative
       offset alone holds at least half of each query's attention on average.
    2. ``"to-special"``: ``first + sep >= SPECIAL_MIN`` (0.5): the first token ([CLS])
       and the separators together hold at least half.
    3. ``"broad"``: ``entropy_norm >= BROAD_MIN`` (0.75): attention spread nearly as evenly
       as the uniform distribution.
    4. ``"mixed"``: none of these.

    On very short rows even uniform attention puts ``1/n`` on ``self``, so rows of two
    tokens read as positional; label heads from rows of ordinary length.

    Args:
        stats: Statistic name -> (layers, heads) array; needs ``self``, ``prev``, ``next``,
            ``first``, ``sep`` and ``entropy_norm`` (others are ignored).

    Returns:
        (layers, heads) array of str, each one of :data:`PATTERNS`.
    """
    needed = ("self", "prev", "next", "first", "sep", "entropy_norm")
    missing = [k for k in needed if k not in stats]
    if missing:
        raise ValueError(f"stats lacks {missing}; pass the averaged statistics of row_head_stats by name ({needed})")
    arrays = {k: np.asarray(stats[k], dtype=np.float64) for k in needed}
    shape = arrays["self"].shape
    for k, v in arrays.items():
        if v.ndim != 2 or v.shape != shape:
            raise _shape_error(f"stats[{k!r}]", v, f"(layers, heads) = {shape} like stats['self']", "pass one 2-D array per statistic")
    positional = np.maximum(np.maximum(arrays["self"], arrays["prev"]), arrays["next"]) >= POSITIONAL_MIN
    special = arrays["first"] + arrays["sep"] >= SPECIAL_MIN
    broad = arrays["entropy_norm"] >= BROAD_MIN
    return np.select([positional, special, broad], ["positional", "to-special", "broad"], default="mixed").astype("<U10")


def as_stats(stats: np.ndarray) -> dict[str, np.ndarray]:
    """A (layers, heads, len(STATS)) array of averaged statistics, by statistic's name."""
    return {s: stats[:, :, i] for i, s in enumerate(STATS)}


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
