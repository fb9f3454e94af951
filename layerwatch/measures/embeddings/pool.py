"""The embeddings' share of the capture pass: each batch's hidden states pooled at once.

Every monitored layer's hidden states are pooled over the real tokens
(:mod:`layerwatch.pooling`) as each batch comes, so memory grows with rows x layers x
hidden, never with tokens. torch is imported when a batch comes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import resolve_layers
from ...distributed import Part
from ..base import Accumulator, Batch, SplitPlan


class Pool(Accumulator):
    """The pooled vectors of a split's rows: (rows, layers, hidden) float32."""

    def __init__(self, plan: SplitPlan, pooling: str, layers: Any, model_name: str):
        self.n = len(plan.indices)
        self.pooling = pooling
        self.layers = layers
        self.model_name = model_name
        self.pooled: np.ndarray | None = None

    def update(self, batch: Batch) -> None:
        import torch

        from ...model_utils import to_numpy
        from ...pooling import pool

        hidden = batch.output("hidden_states")
        if not hidden:
            raise ValueError(
                f"{self.model_name} returned no hidden_states with output_hidden_states=True; "
                "layerwatch needs a model that returns them (a Hugging Face encoder such as "
                "BertModel or AutoModelForSequenceClassification)"
            )
        if self.pooled is None:
            self.layers = resolve_layers(self.layers, len(hidden))
            dim = hidden[self.layers[0]].shape[-1]
            self.pooled = np.empty((self.n, len(self.layers), dim), dtype=np.float32)
        # One stacked copy to the host per batch (one device sync, not one per layer);
        # .numpy() of that copy goes into our own buffer, so nothing keeps a view of a
        # tensor the model may reuse.
        stacked = torch.stack([pool(hidden[layer], batch.mask, self.pooling) for layer in self.layers], dim=1)
        self.pooled[batch.rows] = to_numpy(stacked)

    def finish(self) -> Part:
        pooled = self.pooled if self.pooled is not None else np.zeros((self.n, 0, 0), dtype=np.float32)
        return Part(rows={"pooled": pooled}, meta={"layers": [int(l) for l in (self.layers or ())]})
