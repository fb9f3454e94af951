"""The monitored splits: their datasets, label columns and fixed subsets, checked once.

Everything that can be wrong with a split is found when the callback is built, long
before training: a name that cannot be a folder, a ``DatasetDict`` passed for one split,
no tokens, no label column, labels of mixed kinds, rows without a token, too few rows.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .config import LayerwatchConfig, check_split_name
from .data import column_names, empty_rows, get_column, num_rows, read_inputs, resolve_label_column, stratified_subset
from .labels import LabelVocabulary, canonical, classify

logger = logging.getLogger("layerwatch")


@dataclass
class MonitoredSplit:
    """One monitored split.

    Attributes:
        name: The split's name (a folder name in the run directory).
        dataset: The tokenized dataset.
        column: Its label column.
        kind: What the column holds (``"int"``, ``"str"`` or ``"float"``).
        raw: The whole column's labels as read.
        feature_names: The column's ``ClassLabel`` names, if any.
        indices: The fixed subset's dataset rows, in increasing order.
    """

    name: str
    dataset: Any
    column: str
    kind: str
    raw: list
    feature_names: tuple[str, ...] | None
    indices: np.ndarray

    @property
    def string_names(self) -> tuple[str, ...] | None:
        """The label strings of this split's column, sorted (None for numeric labels)."""
        return tuple(sorted(set(self.raw))) if self.kind == "str" else None

    def digest(self) -> str:
        """A fingerprint of the subset's rows (to check a resumed run takes the same ones)."""
        return hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]

    def labels(self, vocab: LabelVocabulary) -> np.ndarray:
        """The subset's labels in the run's ids."""
        return vocab.encode([self.raw[i] for i in self.indices], self.name, self.column)

    def texts(self, column: str | None) -> list[str] | None:
        """The subset's texts from ``column`` (default ``"text"``), or None without one."""
        col = column or "text"
        if col not in column_names(self.dataset):
            return None
        return [str(t) for t in get_column(self.dataset, col, self.indices)]


def _class_label_names(dataset: Any, column: str) -> tuple[str, ...] | None:
    features = getattr(dataset, "features", None)
    feature = features.get(column) if hasattr(features, "get") else None
    names = getattr(feature, "names", None)
    return tuple(str(n) for n in names) if names else None


def _check_dataset(name: str, dataset: Any) -> None:
    try:
        names = column_names(dataset)
    except TypeError as exc:
        raise ValueError(f"split {name!r}: {exc}") from None
    if "input_ids" not in names:
        raise ValueError(
            f"split {name!r} has no column 'input_ids' (it has {names}); pass a tokenized dataset, for example "
            "ds.map(lambda b: tokenizer(b['text'], truncation=True), batched=True)"
        )
    if num_rows(dataset) == 0:
        raise ValueError(f"split {name!r} has no rows; pass a dataset with rows or leave the split out")


def prepare_splits(splits: Any, config: LayerwatchConfig) -> tuple[dict[str, MonitoredSplit], LabelVocabulary]:
    """Check every split and choose its fixed subset.

    Returns:
        The splits by name, and the labels' canonical vocabulary (the run's vocabulary
        is resolved from it once the model is known).
    """
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError(
            "splits must be a non-empty dict of name -> dataset, for example "
            "{'train': train_ds, 'validation': val_ds}"
        )
    columns: dict[str, tuple[str, list]] = {}
    found: dict[str, tuple[Any, str, tuple | None]] = {}
    for name, dataset in splits.items():
        check_split_name(name)
        _check_dataset(name, dataset)
        column = resolve_label_column(dataset, config.label_column, name)
        columns[name] = classify(get_column(dataset, column), name, column)
        found[name] = (dataset, column, _class_label_names(dataset, column))
    base = canonical(columns)
    out = {}
    for name, (dataset, column, feature_names) in found.items():
        kind, raw = columns[name]
        codes = base.encode(raw, name, column)
        indices = stratified_subset(codes, config.max_samples, config.seed, base.kind)
        empty = _rows_without_tokens(dataset, indices)
        if empty:
            raise empty_row_error(name, empty)
        out[name] = MonitoredSplit(name, dataset, column, kind, raw, feature_names, indices)
    _check_class_counts(out, base, config)
    _warn_small_splits(out, config)
    return out, base


def _check_class_counts(splits: dict[str, MonitoredSplit], base: LabelVocabulary, config: LayerwatchConfig) -> None:
    if base.regression:
        return
    n_classes = base.num_classes
    if config.label_names is not None and base.source == "int" and len(config.label_names) < n_classes:
        raise ValueError(
            f"label_names has {len(config.label_names)} names but the labels go up to {n_classes - 1}; "
            f"pass {n_classes} names"
        )
    for s in splits.values():
        if len(s.indices) < n_classes:
            raise ValueError(
                f"split {s.name!r} keeps {len(s.indices)} rows for {n_classes} classes; a picture and its "
                "metrics need several rows per class: pass a larger split or raise max_samples"
            )


def _rows_without_tokens(dataset: Any, indices: np.ndarray) -> list[int]:
    if "attention_mask" in column_names(dataset):
        return empty_rows(read_inputs(dataset, indices, None), indices)
    ids = get_column(dataset, "input_ids", indices)
    return [int(i) for i, r in zip(indices, ids) if len(r) == 0]


def empty_row_error(split: str, rows: list[int]) -> ValueError:
    """The error for rows that hold no token (they cannot be pooled, and crash some models)."""
    where = f"split {split!r}" if split else "the dataset"
    shown = ", ".join(map(str, rows[:10])) + (f", ... ({len(rows)} in all)" if len(rows) > 10 else "")
    return ValueError(
        f"{where} has rows without any token (rows {shown}: empty input_ids or an all-zero attention_mask, "
        "as an empty text gives with some tokenizers); drop them first, for example "
        "ds.filter(lambda r: sum(r['attention_mask']) > 0)"
    )


def _warn_small_splits(splits: dict[str, MonitoredSplit], config: LayerwatchConfig) -> None:
    if config.method != "tsne":
        return
    for s in splits.values():
        n = len(s.indices)
        if n - 1 < 3 * config.perplexity:
            logger.warning(
                "layerwatch: split %r keeps %d rows, too few for t-SNE perplexity %g; it will be lowered "
                "to %g (pass perplexity= to choose, or max_samples= larger)",
                s.name, n, config.perplexity, max(1.0, (n - 1) / 3),
            )
