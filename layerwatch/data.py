"""Reading rows and labels from the user's datasets, and choosing the fixed subset.

A "dataset" is a Hugging Face ``datasets.Dataset`` (or anything with ``column_names`` and
``__getitem__`` by column name, or a plain ``dict`` of equal-length columns) that is already
tokenized: it has ``input_ids``, usually ``attention_mask``, and a label column.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

LABEL_CANDIDATES = ("labels", "label")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _is_dataset_dict(dataset: Any) -> bool:
    # A DatasetDict is a dict whose values are datasets, not columns.
    return isinstance(dataset, dict) and any(hasattr(v, "column_names") for v in dataset.values())


def column_names(dataset: Any) -> list[str]:
    if _is_dataset_dict(dataset):
        raise TypeError(
            f"got a DatasetDict (with splits {list(dataset.keys())}) where one split belongs; pass one split per "
            "entry, for example splits={'train': ds['train'], 'validation': ds['validation']}"
        )
    if isinstance(dataset, dict):
        return list(dataset.keys())
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise TypeError(
            f"cannot read columns from a {type(dataset).__name__}; pass a datasets.Dataset "
            "or a dict of equal-length columns (input_ids, attention_mask, labels)"
        )
    if isinstance(names, dict):  # a DatasetDict
        raise TypeError(
            f"got a DatasetDict (with splits {list(names)}) where one split belongs; pass one split per entry, "
            "for example splits={'train': ds['train'], 'validation': ds['validation']}"
        )
    return list(names)


def num_rows(dataset: Any) -> int:
    if isinstance(dataset, dict):
        lengths = {len(v) for v in dataset.values()}
        if len(lengths) > 1:
            raise ValueError(f"the columns of the dict have different lengths {sorted(lengths)}")
        return lengths.pop() if lengths else 0
    return len(dataset)


def plain(value: Any) -> Any:
    """A value read from a dataset as plain Python: the one normalisation of every cell read.

    A dataset hands out the same label or token row in many forms, by its format
    (``with_format("torch")``, ``"numpy"``, a dict of tensors or arrays): a 0-d tensor of
    any dtype (``torch.tensor(1)``, bfloat16, bool), a numpy scalar (``np.int64(1)``,
    ``np.str_("a")``), a 0-d array, or a tensor or array row. Each becomes what the plain
    format gives: a Python ``int``/``float``/``bool``/``str``, or a (nested) list for a
    row. Anything else is returned as it is.
    """
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and hasattr(value, "ndim"):  # torch tensors, numpy arrays and scalars (and alike)
        return tolist()
    return value


def plain_column(column: Any) -> list:
    """A whole column (a list, a datasets ``Column``, a 1-d tensor or array) as a list of :func:`plain` values."""
    tolist = getattr(column, "tolist", None)
    if callable(tolist) and hasattr(column, "ndim"):
        out = tolist()  # one call for a whole tensor or array column
        return out if isinstance(out, list) else [out]
    return [plain(v) for v in column]


def get_column(dataset: Any, name: str, indices: Sequence[int] | None = None) -> list:
    """One column as a list of plain Python values (:func:`plain`), optionally restricted
    to ``indices`` (in that order)."""
    if isinstance(dataset, dict):
        col = dataset[name]
        return [plain(col[int(i)]) for i in indices] if indices is not None else plain_column(col)
    if indices is not None:
        if hasattr(dataset, "select"):
            return plain_column(dataset.select(list(map(int, indices)))[name])
        col = dataset[name]
        return [plain(col[int(i)]) for i in indices]
    return plain_column(dataset[name])


def resolve_label_column(dataset: Any, label_column: str | None, split: str = "") -> str:
    """Find the label column, or raise naming the columns that exist."""
    names = column_names(dataset)
    where = f"split {split!r}" if split else "the dataset"
    if label_column is not None:
        if label_column not in names:
            raise ValueError(
                f"{where} has no column {label_column!r}; pass label_column= one of {names}"
            )
        return label_column
    for cand in LABEL_CANDIDATES:
        if cand in names:
            return cand
    raise ValueError(
        f"{where} has no label column ('labels' or 'label'); pass label_column= one of {names}"
    )


def stratified_subset(labels: np.ndarray, max_samples: int, seed: int, kind: str = "class") -> np.ndarray:
    """Choose at most ``max_samples`` row indices, in proportion to each label, seeded.

    Every class keeps at least one row when ``max_samples`` allows it. Returns the chosen
    indices in increasing order.
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    if n <= max_samples:
        return np.arange(n, dtype=np.int64)
    if kind != "class":
        return np.sort(rng.choice(n, size=max_samples, replace=False)).astype(np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts / n * max_samples
    take = np.floor(quota).astype(int)
    if max_samples >= len(classes):
        take = np.maximum(take, 1)
    # Largest remainders fill what flooring left (or trim what the minimum of one added).
    while take.sum() < max_samples:
        room = np.where(take < counts, quota - take, -np.inf)
        take[int(np.argmax(room))] += 1
    while take.sum() > max_samples:
        spare = np.where(take > 1, take - quota, -np.inf)
        take[int(np.argmax(spare))] -= 1
    chosen = []
    for cls, k in zip(classes, take):
        rows = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(rows, size=int(k), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def read_inputs(dataset: Any, indices: Sequence[int], pad_token_id: int | None) -> dict[str, list[np.ndarray]]:
    """Read the model inputs of ``indices``, one unpadded int64 array per row.

    Padding stored with the rows (on either side) is trimmed by the attention mask, so a
    row reaches the model the same way however it was stored (the capture pads each batch
    on the right, only to its own longest row). Without an ``attention_mask`` the mask is
    rebuilt from ``pad_token_id``.
    """
    names = column_names(dataset)
    if "input_ids" not in names:
        raise ValueError(
            f"the dataset has no column 'input_ids' (it has {names}); tokenize it first, "
            "for example ds.map(lambda b: tokenizer(b['text'], truncation=True), batched=True)"
        )
    cols = {k: get_column(dataset, k, indices) for k in MODEL_INPUTS if k in names}
    ids = [np.asarray(r, dtype=np.int64).reshape(-1) for r in cols["input_ids"]]
    if "attention_mask" in cols:
        masks = [np.asarray(r, dtype=np.int64).reshape(-1) for r in cols["attention_mask"]]
    elif pad_token_id is not None:
        masks = [(r != pad_token_id).astype(np.int64) for r in ids]
    else:
        raise ValueError(
            "the dataset has no 'attention_mask' column and the model config has no pad_token_id, "
            "so padding cannot be told from tokens; tokenize with return_attention_mask=True"
        )
    out: dict[str, list[np.ndarray]] = {"input_ids": [], "attention_mask": []}
    if "token_type_ids" in cols:
        out["token_type_ids"] = []
        types = [np.asarray(r, dtype=np.int64).reshape(-1) for r in cols["token_type_ids"]]
    for i, (r, m) in enumerate(zip(ids, masks)):
        if len(m) != len(r):
            raise ValueError(
                f"row {int(indices[i])}: input_ids has {len(r)} tokens but attention_mask has {len(m)}; "
                "tokenize input_ids and attention_mask together"
            )
        real = np.flatnonzero(m)
        # Stored padding is cut off on both sides (right padding as encoders store it, left
        # padding as decoder-only tokenizers do); the capture pads each batch on the right
        # again, so every row reaches the model in the same canonical form. A hole inside
        # a row (mask 0 between real tokens) is kept, with its mask.
        start, end = (int(real[0]), int(real[-1]) + 1) if len(real) else (0, 0)
        out["input_ids"].append(r[start:end])
        out["attention_mask"].append(m[start:end])
        if "token_type_ids" in out:
            out["token_type_ids"].append(types[i][start:end])
    return out


def empty_rows(inputs: dict[str, list[np.ndarray]], indices: Sequence[int]) -> list[int]:
    """Dataset rows (of ``indices``) that hold no real token."""
    return [int(indices[i]) for i, m in enumerate(inputs["attention_mask"]) if not np.any(m)]
