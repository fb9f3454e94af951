"""Several processes (DDP): who writes, how ranks agree, how their shares are gathered.

Every collective here is reached by every rank or by none: a rank that fails a step
says so in :func:`agree`, which every rank calls, and then all ranks fail (or skip)
together instead of some of them waiting forever in a gather.

Without ``torch.distributed`` initialised everything here is the single-process case
(rank 0 of 1) and no collective is made; torch is imported only when it is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _dist():
    if "torch" not in sys.modules:  # nothing can have initialised a process group
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without DDP)."""
    dist = _dist()
    if dist is None:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return rank_world()[0] == 0


class RankFailed(RuntimeError):
    """Another rank failed a step that every rank had to finish."""


def agree(ok: bool, message: str = "") -> list[str]:
    """Every rank says whether its step succeeded; returns the failures of all ranks.

    A barrier as well: no rank returns before every rank has called it.

    Returns:
        ``["rank 1: <message>", ...]`` for the ranks that failed; empty when all succeeded.
    """
    rank, world = rank_world()
    if world == 1:
        return [] if ok else [message]
    dist = _dist()
    mine = (bool(ok), str(message))
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    return [f"rank {r}: {m}" for r, (good, m) in enumerate(everyone) if not good]


def together(step, *args: Any, **kwargs: Any) -> Any:
    """Run ``step`` on this rank, then agree; every rank raises if any rank failed.

    The failing rank re-raises its own exception; the others raise :class:`RankFailed`
    naming it, so no rank goes on to a collective the failed one will never reach.
    """
    try:
        result = step(*args, **kwargs)
    except BaseException as exc:
        agree(False, f"{type(exc).__name__}: {exc}")
        raise
    failures = agree(True)
    if failures:
        raise RankFailed("; ".join(failures))
    return result


@dataclass
class Part:
    """One rank's share of a split's measurement, ready to be gathered.

    Attributes:
        rows: per-row values of the rank's rows, in the order of its share: an array with
            the rows on axis 0 (the same trailing shape on every rank), or a list with one
            array per row whose shapes may differ (per-token values, say: ragged rows).
        sums: arrays that add up across ranks (sums of per-row statistics, counts).
        picked: ``{position in the subset: {name: array}}`` for the few chosen rows a
            measurement keeps whole (attention maps of examples, say).
        meta: small values that every rank computes alike (layer indices, ...).
    """

    rows: dict[str, Any] = field(default_factory=dict)
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    picked: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def is_ragged(value: Any) -> bool:
    """Whether per-row values are ragged: a list (or object array) with one array per row."""
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object)


def merge_parts(parts: list[Part | None], n_rows: int, world: int) -> Part:
    """Rank ``r`` holds subset positions ``r::world``: put the rows back in subset order,
    add the sums, join the picked rows.

    Ragged rows (a list with one array per row, see :class:`Part`) come back as a list of
    ``n_rows`` arrays in subset order.

    Raises:
        ValueError: no rank returned a share, or the ranks' arrays of one name disagree in
            trailing shape (naming them, and the ragged form that holds rows of any shape).
    """
    present = [(r, p) for r, p in enumerate(parts) if p is not None]
    if not present:
        raise ValueError("no rank returned a share")
    first = present[0][1]
    out = Part(meta=dict(first.meta))
    for name in first.rows:
        shares = [(r, p.rows[name]) for r, p in present]
        if any(is_ragged(v) for _, v in shares):
            full: Any = [None] * n_rows
            for r, v in shares:
                full[r::world] = [np.asarray(x) for x in v]
            out.rows[name] = full
            continue
        shapes = {r: tuple(np.shape(v)[1:]) for r, v in shares}
        if len(set(shapes.values())) > 1:
            told = ", ".join(f"{shape} on rank {r}" for r, shape in shapes.items())
            raise ValueError(
                f"rows {name!r} have trailing shape {told}; an array needs the same trailing shape on every rank. "
                "Give values whose shape differs by row as a list with one array per row (ragged rows)"
            )
        arr = shares[0][1]
        full = np.empty((n_rows, *arr.shape[1:]), dtype=arr.dtype)
        for r, v in shares:
            full[r::world] = v
        out.rows[name] = full
    for name in first.sums:
        out.sums[name] = sum(np.asarray(p.sums[name]) for _, p in present)
    for _, p in present:
        out.picked.update(p.picked)
    return out


def gather_part(part: Part | None, n_rows: int) -> Part | None:
    """Gather every rank's :class:`Part` of one split on rank 0 (None elsewhere)."""
    rank, world = rank_world()
    if world == 1:
        return part
    dist = _dist()
    parts: list | None = [None] * world if rank == 0 else None
    dist.gather_object(part, parts, dst=0)
    if rank != 0:
        return None
    return merge_parts(parts, n_rows, world)


def gather_splits(parts: dict[str, dict[str, Part] | None], n_rows: dict[str, int]) -> dict[str, dict[str, Part] | None]:
    """Gather every rank's ``{split: {measurement: Part}}`` on rank 0 in one collective
    (the rows back in subset order); other ranks get an empty dict."""
    rank, world = rank_world()
    if world == 1:
        return parts
    dist = _dist()
    everyone: list | None = [None] * world if rank == 0 else None
    dist.gather_object(parts, everyone, dst=0)
    if rank != 0:
        return {}
    out: dict[str, dict[str, Part] | None] = {}
    for split in parts:
        shares = [e.get(split) if e else None for e in everyone]
        names = next((list(sh) for sh in shares if sh), None)
        if names is None:
            out[split] = None
            continue
        out[split] = {
            name: merge_parts([sh.get(name) if sh else None for sh in shares], n_rows[split], world) for name in names
        }
    return out
