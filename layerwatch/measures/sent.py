"""What a measurement sends to TensorBoard, W&B and MLflow (:meth:`Measurement.sends
<layerwatch.measures.base.Measurement.sends>`): one small type per kind of item, which each
integration shows in its own way. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

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


