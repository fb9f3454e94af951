"""The dynamics' files in the run directory: names, and the small readers that several
parts (the measurement, the page, ``layerwatch suspects``) share. numpy and json only."""

from __future__ import annotations

import json
import os
from typing import Any

TABLE = "dynamics.csv"
SUSPECTS = "dynamics_suspects.csv"
SUSPECT_FIELDS = (
    "split", "epoch", "step", "rank", "row", "aum", "confidence", "variability", "correctness", "label", "label_name",
    "predicted", "predicted_name", "visits", "text",
)
MAPS = "datamaps"
CHECKPOINT_FILE = "layerwatch_dynamics.npz"
TRAIN = "train"
SINGLE_LABEL_ONLY = "the dynamics measures are for single-label classification"


def meta_path(store: Any) -> str:
    return os.path.join(store.root, "dynamics", "meta.json")


def texts_path(store: Any) -> str:
    return os.path.join(store.root, "dynamics", "texts.json")


def read_meta(store: Any) -> dict:
    try:
        with open(meta_path(store), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def read_texts(store: Any, split: str) -> dict[int, str]:
    """Texts of a split's rows: every training row (``dynamics/texts.json``), else the monitored rows."""
    if split == TRAIN and os.path.exists(texts_path(store)):
        with open(texts_path(store), encoding="utf-8") as fh:
            data = json.load(fh)
        return {int(i): str(t) for i, t in zip(data.get("indices", []), data.get("texts", []))}
    return store.load_texts(split)
