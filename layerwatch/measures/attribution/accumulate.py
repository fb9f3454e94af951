"""The attribution measurement's share of the capture pass: attention norm shares per batch.

The hooks of :func:`~layerwatch.measures.attribution.norms.value_norm_hooks` give every
layer's ``||f_h(x_j)||``; with the attention weights of the same pass, each batch is
reduced at once to the shares of attention weight and of norm per token class, summed
over its rows. torch is imported when a batch comes: reading a stored run never loads it.
"""

from __future__ import annotations

import numpy as np

from ...distributed import Part
from ..base import Accumulator, Batch, SplitPlan

TOKEN_CLASSES = ("cls", "sep", "punct", "other")
"""The token classes of the norm shares, in the order of their axis (see
:func:`~layerwatch.measures.attribution.norms.norm_shares`)."""


class ShareSums(Accumulator):
    """Sums over a split's rows of each layer and head's weight and norm shares per token class."""

    def __init__(self, plan: SplitPlan, heads: int, class_ids: tuple):
        self.plan = plan
        self.heads = heads
        self.class_ids = class_ids
        self.sums: np.ndarray | None = None
        self.rows = 0

    def update(self, batch: Batch) -> None:
        import torch

        from ...model_utils import to_numpy
        from .norms import norm_shares, token_class_masks

        attentions = batch.output("attentions")
        fnorms = batch.hooked.get("attribution_fnorms", {})
        if not attentions or len(fnorms) != len(attentions):
            raise ValueError(
                "attention norms need the attention weights and every layer's value projection of the capture pass; "
                "this model gave neither (pass attribution=False)"
            )
        classes = token_class_masks(batch.inputs["input_ids"], batch.mask, *self.class_ids)
        shares = torch.stack([norm_shares(a, fnorms[i].to(a.device), batch.mask, classes) for i, a in enumerate(attentions)])
        total = to_numpy(shares.double().sum(1))  # (layers, heads, classes, 2)
        self.sums = total if self.sums is None else self.sums + total
        self.rows += len(batch.rows)

    def finish(self) -> Part:
        sums = self.sums if self.sums is not None else np.zeros((0, self.heads, 4, 2))
        return Part(sums={"shares_sum": sums, "rows": np.array(self.rows)})
