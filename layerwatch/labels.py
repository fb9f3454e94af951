"""The run's label vocabulary: one numbering of the classes for every split, rank and resume.

Labels are read once per split when the callback is built and classified as integers,
strings or floats (a regression). The vocabulary is then fixed for the whole run:

- integer labels keep their values as class ids (they are what the model trains on);
- string labels are numbered by the model's ``id2label`` when it names them (so a label
  id is the head's output index), else in sorted order of the strings found in all
  monitored splits together, never per split;
- float labels that are not whole numbers are a regression target.

It is stored in ``run.json`` and a resumed run must find the same one.

The classification head's outputs are matched to the vocabulary by :func:`match_head`:
where they cannot be matched, model accuracy and error marks are left out rather than
computed on ids that mean different things.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .data import plain

_DEFAULT_HEAD_NAME = re.compile(r"^LABEL_\d+$")


def _where(split: str) -> str:
    return f"split {split!r}" if split else "the dataset"


def classify(raw: Sequence[Any], split: str = "", column: str = "labels") -> tuple[str, list]:
    """Tell what a label column holds: ``("int" | "str" | "float", values)``.

    Raises:
        ValueError: naming the split, the column and the offending row for multi-label
            rows, missing labels, negative class ids, values of mixed kinds or of other
            types.
    """
    where = _where(split)
    values = [plain(v) for v in raw]  # 0-d tensors, numpy scalars: as the plain format gives them
    if not values:
        return "int", []
    strings = numbers_ = 0
    for i, v in enumerate(values):
        if isinstance(v, (list, tuple, np.ndarray)):
            raise ValueError(
                f"{where}: column {column!r} holds multi-label rows (row {i} is {v!r}); layerwatch colours each "
                "point by one label: add a column with one label per row and pass label_column= its name"
            )
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise ValueError(f"{where}: column {column!r} has a missing label at row {i}; drop such rows first")
        if isinstance(v, str):
            strings += 1
        elif isinstance(v, (numbers.Number, np.number)) and not isinstance(v, complex):
            numbers_ += 1
        else:
            raise ValueError(
                f"{where}: column {column!r} holds a {type(v).__name__} at row {i} ({v!r}); labels must be "
                "integers (classes), strings (class names) or floats (a regression target)"
            )
        if strings and numbers_:
            raise ValueError(
                f"{where}: column {column!r} mixes strings and numbers (row 0 holds {values[0]!r}, row {i} holds "
                f"{v!r}); use one kind of label, for example map every class to its name"
            )
    if strings:
        return "str", values
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{where}: column {column!r} holds a non-finite label at row {bad} ({values[bad]!r})")
    if np.all(arr == np.round(arr)):
        ints = arr.astype(np.int64)
        if ints.min() < 0:
            raise ValueError(
                f"{where}: column {column!r} holds negative labels ({int(ints.min())}); "
                "drop ignored rows (label -100) or map classes to 0..K-1"
            )
        return "int", ints.tolist()
    return "float", arr.tolist()


@dataclass(frozen=True)
class LabelVocabulary:
    """How the run numbers and names its labels.

    Attributes:
        kind: ``"class"`` or ``"regression"``.
        names: legend text per class id.
        keys: what each class id stands for in the data: the label string, or the
            integer itself.
        source: ``"int"``, ``"str"`` or ``"float"``: what the label columns held.
    """

    kind: str
    names: tuple[str, ...] = ()
    keys: tuple = ()
    source: str = "int"

    @property
    def num_classes(self) -> int:
        return len(self.keys)

    @property
    def regression(self) -> bool:
        return self.kind == "regression"

    def encode(self, raw: Sequence[Any], split: str = "", column: str = "labels") -> np.ndarray:
        """The ids of ``raw`` labels (float32 targets for a regression).

        Raises:
            ValueError: a label is not one of the vocabulary's, naming it and its row.
        """
        kind, values = classify(raw, split, column)
        if self.regression:
            if kind == "str":
                raise ValueError(f"{_where(split)}: column {column!r} holds strings but the run's labels are regression targets")
            return np.asarray(values, dtype=np.float32)
        if kind == "float":
            raise ValueError(
                f"{_where(split)}: column {column!r} holds non-integer numbers but the run's labels are classes; "
                "use one kind of label in every split"
            )
        if (kind == "str") != (self.source == "str"):
            raise ValueError(
                f"{_where(split)}: column {column!r} holds {'strings' if kind == 'str' else 'integers'} but the run's "
                f"labels are {'strings' if self.source == 'str' else 'integers'}; use one kind of label in every split"
            )
        lookup = {k: i for i, k in enumerate(self.keys)}
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            code = lookup.get(v)
            if code is None:
                shown = list(self.keys) if len(self.keys) <= 20 else f"{len(self.keys)} classes"
                raise ValueError(
                    f"{_where(split)}: label {v!r} (row {i} of column {column!r}) is not one of the run's labels "
                    f"{shown}; the labels are fixed when the run starts"
                )
            out[i] = code
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "names": list(self.names), "keys": list(self.keys), "source": self.source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LabelVocabulary":
        return cls(
            kind=str(data["kind"]), names=tuple(str(n) for n in data.get("names", ())),
            keys=tuple(data.get("keys", ())), source=str(data.get("source", "int")),
        )

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def canonical(columns: Mapping[str, tuple[str, list]]) -> LabelVocabulary:
    """The vocabulary that the labels alone give (sorted strings, integers as they are).

    Args:
        columns: ``{split: classify(...) result}`` of every monitored split's whole column.

    Raises:
        ValueError: splits hold different kinds of labels.
    """
    kinds = {kind for kind, _ in columns.values()}
    if len(kinds) > 1:
        detail = ", ".join(f"{s!r}: {k}" for s, (k, _) in columns.items())
        raise ValueError(
            f"the splits hold different kinds of labels ({detail}); use one kind of label (class ids, class "
            "names or regression targets) in every split"
        )
    kind = kinds.pop() if kinds else "int"
    if kind == "float":
        return LabelVocabulary("regression", source="float")
    if kind == "str":
        keys = tuple(sorted({v for _, values in columns.values() for v in values}))
        return LabelVocabulary("class", names=keys, keys=keys, source="str")
    top = max((max(values) for _, values in columns.values() if values), default=0)
    keys = tuple(range(int(top) + 1))
    return LabelVocabulary("class", names=tuple(str(k) for k in keys), keys=keys, source="int")


def _head_names(id2label: Any, num_labels: int | None, defaults: bool = False) -> list[str] | None:
    """The head's class names by output index, or None when they are the default LABEL_i
    (unless ``defaults``: as legend text they are better than nothing)."""
    if not id2label or not num_labels:
        return None
    names = []
    for i in range(int(num_labels)):
        name = id2label.get(i, id2label.get(str(i))) if isinstance(id2label, Mapping) else None
        if name is None:
            return None
        names.append(str(name))
    if not defaults and all(_DEFAULT_HEAD_NAME.match(n) for n in names):
        return None
    return names


def _match_names(wanted: Sequence[str], offered: Sequence[str]) -> list[int] | None:
    """Index in ``offered`` of each of ``wanted`` (exactly, else ignoring case), or None."""
    exact = {n: i for i, n in enumerate(offered)}
    folded = {n.casefold(): i for i, n in enumerate(offered)}
    out = []
    for w in wanted:
        i = exact.get(w, folded.get(str(w).casefold()))
        if i is None:
            return None
        out.append(i)
    return out


def resolve(
    base: LabelVocabulary,
    label_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    id2label: Any = None,
    num_labels: int | None = None,
) -> LabelVocabulary:
    """The run's vocabulary: ``base`` numbered and named with what the user and model say.

    Args:
        base: :func:`canonical` of the monitored splits.
        label_names: the user's names per class id (integer labels).
        feature_names: the dataset's ``ClassLabel`` names.
        id2label, num_labels: the model config's.
    """
    if base.regression:
        return base
    head = _head_names(id2label, num_labels)
    if base.source == "str":
        if label_names is not None:
            # The user's order; it must name exactly the strings found.
            if sorted(map(str, label_names)) != sorted(base.keys):
                raise ValueError(
                    f"label_names={list(label_names)} must list exactly the label strings found in the splits "
                    f"{list(base.keys)} (in the order you want), or be left out"
                )
            keys = tuple(str(n) for n in label_names)
            return LabelVocabulary("class", names=keys, keys=keys, source="str")
        if head is not None and _match_names(base.keys, head) is not None:
            # Number the strings as the head does, so a label id is an output index.
            keys = _keys_in_head_order(base.keys, head)
            return LabelVocabulary("class", names=tuple(map(str, keys)), keys=keys, source="str")
        return base
    k = base.num_classes
    # The head's default names (LABEL_0, ...) only name the classes the labels have; they
    # say nothing of how many classes there are.
    defaults = _head_names(id2label, num_labels, defaults=True)
    for names in (label_names, feature_names, head, defaults[:k] if defaults else None):
        if names is not None and len(names) >= k:
            names = [str(n) for n in names]
            return LabelVocabulary("class", names=tuple(names), keys=tuple(range(len(names))), source="int")
    return base


def _keys_in_head_order(strings: Sequence[str], head: Sequence[str]) -> tuple:
    # Each head output stands for the data string matched to it (or its own name when no
    # label of the data matches it, so every output has a key).
    matched = dict(zip(_match_names(strings, head) or [], strings))
    return tuple(matched.get(i, head[i]) for i in range(len(head)))


@dataclass(frozen=True)
class HeadMatch:
    """How the classification head's outputs map to the run's label ids.

    ``to_label[j]`` is the label id of output ``j`` (-1 when it stands for no label);
    None when the outputs cannot be matched, with ``reason`` saying why.
    """

    to_label: tuple[int, ...] | None
    reason: str = ""

    def map(self, head_predictions: np.ndarray) -> np.ndarray | None:
        if self.to_label is None:
            return None
        table = np.asarray(self.to_label, dtype=np.int64)
        pred = np.asarray(head_predictions, dtype=np.int64)
        out = np.full(pred.shape, -1, dtype=np.int64)
        ok = (pred >= 0) & (pred < len(table))
        out[ok] = table[pred[ok]]
        return out


def _outputs_to_labels(output_of_label: Sequence[int], n: int) -> tuple[int, ...]:
    """Invert "label id -> head output" into "head output -> label id" (-1: no label)."""
    to_label = [-1] * n
    for label_id, out in enumerate(output_of_label):
        to_label[out] = label_id
    return tuple(to_label)


def match_head(vocab: LabelVocabulary, id2label: Any = None, num_labels: int | None = None) -> HeadMatch:
    """Match the head's outputs to ``vocab`` (see :class:`HeadMatch`).

    Integer labels are the ids the head trains on: they match output for output when the
    head has one output per class. String labels match through the head's ``id2label``.
    Anything else cannot be matched honestly.
    """
    if vocab.regression:
        return HeadMatch(None, "the labels are regression targets")
    if not num_labels or int(num_labels) < 2:
        return HeadMatch(None, "the model has no classification head with two or more outputs")
    n = int(num_labels)
    head = _head_names(id2label, n)
    if vocab.source == "int":
        if n == vocab.num_classes:
            return HeadMatch(tuple(range(n)))
        found = _match_names(vocab.names, head) if head is not None else None
        if found is not None:
            return HeadMatch(_outputs_to_labels(found, n))
        return HeadMatch(
            None,
            f"the classification head has {n} outputs but the labels have {vocab.num_classes} classes; pass "
            "label_names= with one name per output (as in the model's id2label) so they can be matched",
        )
    found = _match_names(vocab.keys, head) if head is not None else None
    if found is not None:
        return HeadMatch(_outputs_to_labels(found, n))
    return HeadMatch(
        None,
        f"the labels are strings ({', '.join(map(repr, vocab.keys[:5]))}{', ...' if len(vocab.keys) > 5 else ''}) "
        "and the model's id2label does not name them; set the model config's id2label/label2id to these names",
    )
