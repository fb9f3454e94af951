"""The ``token_norms`` measurement: the L2 norm of every token's hidden state.

Front half: on the snapshot's one capture pass, each batch gives each row's norms of its
real tokens (rows have different lengths: ragged rows, gathered across ranks in subset
order). Back half: ``token_norms.csv`` (one line per token), the mean per split for the
Trainer's log and the tools, a report section and a ``layerwatch info`` line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from layerwatch.distributed import Part
from layerwatch.measures import Accumulator, Measurement
from layerwatch.measures.base import SENT_KINDS, File, Scalar, unpack_ragged
from layerwatch.snapshot import epoch_value

from .settings import TokenNorms

TABLE = "token_norms.csv"
FIELDS = ("split", "epoch", "step", "row", "token", "value")


class _Norms(Accumulator):
    def __init__(self, n: int, layer: int):
        self.norms: list = [None] * n
        self.layer = layer

    def update(self, batch) -> None:
        hidden = batch.output("hidden_states")[self.layer]
        norms = hidden.detach().float().norm(dim=-1).cpu().numpy()
        lengths = batch.mask.sum(-1).cpu().numpy()
        for j, row in enumerate(batch.rows):
            self.norms[int(row)] = norms[j, : int(lengths[j])].astype(np.float32)  # rows are right-padded

    def finish(self) -> Part:
        return Part(rows={"norms": list(self.norms)})


def mean_tag(split: str) -> str:
    return f"layerwatch/{split}/token_norms/mean"


class TokenNormsMeasurement(Measurement):
    """The L2 norm of every token's hidden state (``TokenNorms.layer``) at each snapshot."""

    name = "token_norms"
    Settings = TokenNorms
    output_flags = {"output_hidden_states": True}

    def describe(self) -> dict:
        return {"settings": self.settings.to_dict()}

    def start(self, plan):
        return _Norms(len(plan.indices), self.settings.layer)

    def process(self, ctx, key, snaps) -> dict[str, float]:
        logs = {}
        for split in ctx.drawn(snaps):
            arrays = snaps[split].results.get(self.name)
            if not arrays:
                continue
            rows = unpack_ragged(arrays, "norms")
            indices = snaps[split].indices
            lines = [
                {"split": split, "epoch": key.epoch, "step": key.step, "row": int(indices[i]), "token": t, "value": float(v)}
                for i, norms in enumerate(rows) for t, v in enumerate(norms)
            ]
            ctx.guard("token norms table", key, ctx.store.replace_rows, TABLE, FIELDS, split, key, lines)
            logs[mean_tag(split)] = float(np.mean([line["value"] for line in lines]))
        return logs

    def summarize(self, store) -> dict[str, Any]:
        lines = store.read_table(TABLE)
        out = {}
        for split in sorted({r["split"] for r in lines}):
            mine = [r for r in lines if r["split"] == split]
            last = max((int(r["step"]), epoch_value(r["epoch"])) for r in mine)
            at = [r["value"] for r in mine if (int(r["step"]), epoch_value(r["epoch"])) == last]
            out[split] = {"tokens": len(at), "rows": len({r["row"] for r in mine if (int(r["step"]), epoch_value(r["epoch"])) == last}),
                          "mean": round(float(np.mean(at)), 4)}
        return {"token_norms": out} if out else {}

    def info_lines(self, summary) -> list[str]:
        return [f"token norms of {split!r} at the last snapshot: mean {d['mean']:.4f} over {d['tokens']} tokens of {d['rows']} rows"
                for split, d in summary.get("token_norms", {}).items()]

    def report_sections(self, ctx) -> list[dict]:
        summary = self.summarize(ctx.store).get("token_norms")
        if not summary:
            return []
        text = "; ".join(f"{split}: mean {d['mean']:.4f} over {d['tokens']} tokens" for split, d in summary.items())
        return [{"title": "Token norms", "text": f"The L2 norm of every token's hidden state at the last snapshot ({text}).",
                 "images": [], "links": [{"text": TABLE, "href": TABLE}]}]

    def sends(self, run, key, snaps=None, logs=None, kinds=SENT_KINDS) -> list:
        if key is None:
            path = run.store.table_path(TABLE)
            return [File(path)] if File in kinds else []
        if Scalar not in kinds or logs is not None:
            return []  # during training its mean is in the Trainer's log already
        values: dict[str, list] = {}
        for r in run.table(TABLE):
            if r["split"] in run.splits() and int(r["step"]) == key.step and epoch_value(r["epoch"]) == key.epoch:
                values.setdefault(r["split"], []).append(r["value"])
        return [Scalar(mean_tag(split), float(np.mean(v))) for split, v in values.items()]
