"""What a measurement sends to TensorBoard, W&B and MLflow (:meth:`Measurement.sends
<layerwatch.measures.base.Measurement.sends>`): one small type per kind of item, which each
integration shows in its own way. Numpy only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Scalar:
    """A number of one snapshot, at its step; ``tag`` as the Trainer's log names it
    (``layerwatch/<split>/<metric>/...``). TensorBoard scalar, W&B and MLflow metric."""

    tag: str
    value: float


@dataclass
class Image:
    """A picture of one snapshot, a PNG file of the run: TensorBoard image
    ``layerwatch/<name>``, W&B image ``layerwatch/frames/<name>``."""

    name: str
    path: str
    caption: str = ""


@dataclass
class Vectors:
    """Per-row vectors of one snapshot for TensorBoard's Embedding Projector, one matrix per
    layer (``vectors``: layers x rows x dim), tagged ``layerwatch/<name>/layer_<layer>``,
    with a metadata row of texts per row under ``header``."""

    name: str
    layers: list[int]
    vectors: np.ndarray
    header: list[str]
    metadata: list[list[str]]


@dataclass
class Film:
    """A GIF of the whole run, sent at the end: W&B video ``layerwatch/films/<name>``,
    MLflow artifact."""

    name: str
    path: str
    caption: str = ""


@dataclass
class Table:
    """A table sent at the end: W&B table ``layerwatch/<name>``."""

    name: str
    columns: list[str]
    rows: list[list]


@dataclass
class File:
    """A file of the run sent at the end (a CSV table): MLflow artifact."""

    path: str


SENT_KINDS = (Scalar, Image, Vectors, Film, Table, File)




def films_and_tables(run: Any, kinds: tuple, gif_prefix: str, tables: tuple[str, ...]) -> list:
    """A measurement's end-of-run items: a :class:`Film` of every ``<gif_prefix>*.gif`` in
    the run directory, and a :class:`File` of each of its ``tables`` that exists."""
    items: list = []
    root = run.store.root
    if Film in kinds and os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            if name.startswith(gif_prefix) and name.endswith(".gif"):
                items.append(Film(name[:-4], os.path.join(root, name), name[:-4].replace("_", " ")))
    if File in kinds:
        items.extend(File(run.store.table_path(t)) for t in tables if os.path.exists(run.store.table_path(t)))
    return items
