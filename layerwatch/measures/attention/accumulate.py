"""The attention measurement's share of the capture pass: each batch reduced at once.

Per batch, the statistics of :mod:`~layerwatch.measures.attention.stats` of every layer
and head, summed over the rows (never a (rows, heads, tokens, tokens) tensor for all
rows); for a few fixed example rows, their full maps (float16, over their real tokens)
with their tokens, and for the first of them the query and key vectors of the neuron view
(read by :func:`~layerwatch.measures.attention.neuron.query_key_hooks`).

torch is imported when a batch comes: reading a stored run never loads it.
"""

from __future__ import annotations

import numpy as np

from ...distributed import Part
from ..base import Accumulator, Batch, SplitPlan
from .stats import STATS, row_head_stats, token_class_masks


class HeadStats(Accumulator):
    """Per-head statistic sums of a split's rows, and the kept examples."""

    def __init__(self, plan: SplitPlan, picked: set[int], sep_ids, punct_ids, to_tokens, neuron: set[int] = frozenset()):
        self.plan = plan
        self.picked = picked  # positions in the whole subset
        self.neuron = neuron  # of those, the ones whose query and key vectors are kept
        self.sep_ids, self.punct_ids = sep_ids, punct_ids
        self.to_tokens = to_tokens
        self.sums: np.ndarray | None = None
        self.rows = 0
        self.kept: dict[int, dict[str, np.ndarray]] = {}

    def update(self, batch: Batch) -> None:
        import torch

        from ...model_utils import to_numpy
        from .neuron import per_head

        attentions = batch.output("attentions")
        if not attentions:
            raise ValueError(
                "the model returned no attention weights with output_attentions=True (even in eager attention); "
                "pass attention=False for this model"
            )
        ids = batch.inputs["input_ids"]
        sep, punct = token_class_masks(ids, batch.mask, self.sep_ids, self.punct_ids)
        per_layer = [row_head_stats(a, batch.mask, sep, punct).double().sum(0) for a in attentions]
        total = to_numpy(torch.stack(per_layer))  # (layers, heads, stats)
        self.sums = total if self.sums is None else self.sums + total
        self.rows += len(batch.rows)
        for b, row in enumerate(batch.rows):
            position = int(self.plan.positions[row])
            if position not in self.picked:
                continue
            n = int(batch.mask[b].sum())
            maps = to_numpy(torch.stack([a[b, :, :n, :n] for a in attentions])).astype(np.float16)
            token_ids = to_numpy(ids[b, :n])
            self.kept[position] = {"maps": maps, "ids": token_ids, "tokens": np.array(self.to_tokens(token_ids))}
            qs, ks = batch.hooked.get("attention_q", []), batch.hooked.get("attention_k", [])
            if position in self.neuron and len(qs) == len(ks) == len(attentions):
                heads = attentions[0].shape[1]
                self.kept[position]["q"] = to_numpy(torch.stack([per_head(q[b, :n], heads) for q in qs]))
                self.kept[position]["k"] = to_numpy(torch.stack([per_head(k[b, :n], heads) for k in ks]))

    def finish(self) -> Part:
        sums = self.sums if self.sums is not None else np.zeros((0, 0, len(STATS)))
        return Part(sums={"stats_sum": sums, "rows": np.array(self.rows)}, picked=self.kept)
