"""Rows a measurement keeps: which split its examples come from, which of the monitored rows
they are, and per-row values of differing lengths packed into two plain arrays. Numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import stratified_subset


def pack_ragged(name: str, rows: Any) -> dict[str, np.ndarray]:
    """Ragged rows (one array per row, shapes differing on axis 0) as two arrays that a
    ``.npz`` file holds: ``name`` (the rows joined on axis 0) and ``name + "_offsets"``
    (``n_rows + 1`` integers: row ``i`` is ``joined[offsets[i]:offsets[i + 1]]``)."""
    arrays = [np.asarray(r) for r in rows]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays]) if arrays else []
    joined = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.float32)
    return {name: joined, f"{name}_offsets": offsets}


def unpack_ragged(arrays: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    """The rows that :func:`pack_ragged` packed under ``name``, one array per row."""
    joined, offsets = arrays[name], np.asarray(arrays[f"{name}_offsets"])
    return [joined[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def example_split(chosen: str | None, splits) -> str:
    """The split whose examples a measurement keeps: ``chosen``, else validation, train or the first."""
    if chosen is not None:
        return chosen
    names = list(splits)
    return "validation" if "validation" in names else ("train" if "train" in names else names[0])


def check_example_split(setting: str, chosen: str | None, splits) -> str:
    """:func:`example_split`, refusing a split that is not monitored (naming ``setting``)."""
    split = example_split(chosen, splits)
    if split not in splits:
        raise ValueError(f"{setting}={split!r} is not a monitored split; pass one of {sorted(splits)}")
    return split


def pick_examples(setting: Any, name: str, split: str, indices: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Positions (in the subset) of the examples a measurement keeps whole.

    Args:
        setting: A count (stratified by label, drawn with ``seed``) or dataset row indices.
        name: The setting's name, for messages.
        split, indices, labels: The split and its monitored rows and label ids.

    Raises:
        ValueError: a bad count, or a row that is not among the monitored rows.
    """
    if isinstance(setting, (int, np.integer)) and not isinstance(setting, bool):
        if setting < 1:
            raise ValueError(f"{name}={setting!r} must be a positive count or a list of dataset rows")
        kind = "class" if labels.dtype.kind in "iu" else "regression"
        return stratified_subset(labels, int(setting), seed, kind)
    try:
        rows = [int(r) for r in setting]
    except (TypeError, ValueError):
        raise ValueError(f"{name}={setting!r} must be a positive count or a list of dataset rows") from None
    if not rows:
        raise ValueError(f"{name}=[] names no row; pass a count or at least one dataset row")
    where = {int(r): i for i, r in enumerate(indices)}
    missing = [r for r in rows if r not in where]
    if missing:
        raise ValueError(
            f"{name}={rows}: row {missing[0]} is not among the {len(indices)} monitored rows of split {split!r} "
            f"(see watch.splits[{split!r}].indices); pass monitored rows, or a count"
        )
    return np.array(sorted({where[r] for r in rows}), dtype=np.int64)


