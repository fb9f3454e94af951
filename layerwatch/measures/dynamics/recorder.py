"""Recording training dynamics from the training forward passes themselves (torch).

A forward hook on the model the Trainer trains reads, for every pass in training mode
with gradients enabled while a training step is under way, the batch's logits and labels
(``labels`` is among the forward's keyword arguments) and reduces them on the device to
a few numbers per row: the gold label's probability, the margin and the probabilities'
argmax. Nothing is written to the model's outputs, no random number is drawn and no
tensor of the graph is kept: the loss, gradients, random state and batch order are those
of a run without it.

The Trainer drops the dataset's columns the model does not take, so a batch row is known
by its token ids: each training row's ids without padding (by the attention mask, and
without pad tokens, so left and right padding agree) are hashed once per training
dataset, and the batch rows are hashed the same way on the device. Rows whose ids are the
same (duplicates) share a hash; a visit goes to the duplicate with the batch's label that
has the fewest visits in the epoch so far.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ... import distributed as dist
from ...distributed import Part

logger = logging.getLogger("layerwatch")

# Two random weight tables for two independent hashes (a fixed numpy generator: torch's
# random state is never touched). Values below 2**24 and ids below 2**20 keep every sum
# of up to 2**18 tokens inside int64.
_MAX_TOKENS = 1 << 16
_WEIGHTS = np.random.default_rng(20201230).integers(1, 1 << 24, size=(2, _MAX_TOKENS), dtype=np.int64)
_FLUSH_EVERY = 512  # batches kept on the device between two moves to the CPU
_SUMS = ("visits", "prob_sum", "margin_sum", "correct_sum", "label_sum")


def row_hashes(ids: torch.Tensor, mask: torch.Tensor | None, pad_id: int | None, weights: torch.Tensor) -> torch.Tensor:
    """``(batch, 3)`` int64: two hashes of each row's real tokens and their number.

    A token is real where ``mask`` is 1 and it is not ``pad_id``; its place is counted
    among the real tokens only, so the padding's side and length do not matter.
    """
    ids = ids.long()
    real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    if pad_id is not None:
        real = real & (ids != pad_id)
    place = (real.long().cumsum(1) - 1).clamp(min=0, max=weights.shape[1] - 1)
    value = (ids.remainder(1 << 20) + 1) * real.long()
    h1 = (value * weights[0][place]).sum(1)
    h2 = (value * weights[1][place]).sum(1)
    return torch.stack([h1, h2, real.long().sum(1)], dim=1)


def dataset_hashes(ids_rows: list, mask_rows: list | None, pad_id: int | None, batch: int = 512) -> np.ndarray:
    """:func:`row_hashes` of every row of a dataset's ``input_ids`` (lists of ids), on the CPU."""
    weights = torch.from_numpy(_WEIGHTS)
    out = []
    for start in range(0, len(ids_rows), batch):
        chunk = ids_rows[start:start + batch]
        width = max(1, max(len(r) for r in chunk))
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            m = mask_rows[start + i] if mask_rows is not None else [1] * len(r)
            mask[i, : len(r)] = torch.as_tensor(list(m), dtype=torch.long)
        out.append(row_hashes(ids, mask, pad_id, weights).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)


class RowIndex:
    """Dataset rows by hash; duplicates (rows with the same ids) known and counted."""

    def __init__(self, hashes: np.ndarray, labels: np.ndarray | None):
        self.n = len(hashes)
        self.by_key: dict[tuple, list[int]] = {}
        for i, h in enumerate(map(tuple, hashes.tolist())):
            self.by_key.setdefault(h, []).append(i)
        self.labels = labels
        self.duplicates = sum(len(v) for v in self.by_key.values() if len(v) > 1)

    def locate(self, keys: np.ndarray, labels: np.ndarray, visits: np.ndarray) -> np.ndarray:
        """Dataset row of each visit (-1 where none matches); ``visits`` (this epoch's so
        far, per row) chooses among duplicates and is updated."""
        out = np.full(len(keys), -1, dtype=np.int64)
        for i, (key, y) in enumerate(zip(map(tuple, keys.tolist()), labels.tolist())):
            rows = self.by_key.get(key)
            if not rows:
                continue
            if len(rows) > 1:
                if self.labels is not None:
                    same = [r for r in rows if int(self.labels[r]) == y]
                    rows = same or rows
                rows = [min(rows, key=lambda r: (visits[r], r))]
            out[i] = rows[0]
            visits[rows[0]] += 1
        return out


class Recorder:
    """Per-row sums of the current epoch's training visits, fed by a forward hook.

    Args:
        index: The training rows by hash.
        num_outputs: Outputs of the classification head.
        pad_id: The model's pad token id (None: padding only by the attention mask).
    """

    def __init__(self, index: RowIndex, num_outputs: int, pad_id: int | None):
        self.index = index
        self.num_outputs = num_outputs
        self.pad_id = pad_id
        self.armed = False
        self.disabled: str | None = None
        self.unmatched = 0
        self._pending: list[tuple[torch.Tensor, ...]] = []
        self._weights: dict[Any, torch.Tensor] = {}
        self._handles: list = []
        self.reset()

    # -- the epoch's sums -------------------------------------------------------------
    def reset(self) -> None:
        n, c = self.index.n, self.num_outputs
        self.sums = {
            "visits": np.zeros(n, dtype=np.float64), "prob_sum": np.zeros((n, c), dtype=np.float64),
            "margin_sum": np.zeros(n, dtype=np.float64), "correct_sum": np.zeros(n, dtype=np.float64),
            "label_sum": np.zeros(n, dtype=np.float64),
        }
        self._pending.clear()

    def load(self, sums: dict[str, np.ndarray]) -> None:
        """Take up the sums a checkpoint kept of an epoch under way (a resume)."""
        for k in _SUMS:
            if k in sums and np.shape(sums[k]) == self.sums[k].shape:
                self.sums[k] = np.array(sums[k], dtype=np.float64)

    # -- the hook ------------------------------------------------------------------------
    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self._handles.append(model.register_forward_hook(self._hook, with_kwargs=True))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.armed = False

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self.armed or self.disabled or not module.training or not torch.is_grad_enabled():
            return
        try:
            self._record(args, kwargs, output)
        except Exception as exc:  # never let the measurement stop training
            self._disable(f"recording failed ({type(exc).__name__}: {exc})")

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        logger.warning("layerwatch: dynamics: %s; training goes on without it", reason)

    def _record(self, args: tuple, kwargs: dict, output: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        labels = kwargs.get("labels")
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, dict):
            logits = output.get("logits")
        if ids is None or not torch.is_tensor(ids):
            return self._disable("a training batch came without input_ids, so its rows cannot be known")
        if labels is None or logits is None:
            return self._disable("a training pass had no labels or no logits to measure")
        if (
            logits.ndim != 2 or logits.shape[-1] != self.num_outputs or labels.ndim != 1
            or labels.dtype.is_floating_point
        ):
            return self._disable(
                f"the measures are for single-label classification, but a training batch has logits of shape "
                f"{tuple(logits.shape)} and labels of shape {tuple(labels.shape)} ({labels.dtype})"
            )
        with torch.no_grad():
            device = logits.device
            weights = self._weights.get(device)
            if weights is None:
                weights = self._weights[device] = torch.from_numpy(_WEIGHTS).to(device)
            mask = kwargs.get("attention_mask")
            keys = row_hashes(ids.detach(), mask.detach() if torch.is_tensor(mask) else None, self.pad_id, weights)
            z = logits.detach().float()
            y = labels.detach().long()
            valid = (y >= 0) & (y < z.shape[1])
            g = y.clamp(0, z.shape[1] - 1)
            probs = z.softmax(-1)
            gold = z.gather(1, g[:, None])[:, 0]
            other = z.scatter(1, g[:, None], float("-inf")).max(-1).values
            # Kept on the device until the epoch ends (or a checkpoint), or until enough
            # batches wait that their memory matters: no synchronisation per batch.
            self._pending.append((keys, y, valid, probs, gold - other))
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    # -- reducing ------------------------------------------------------------------------
    def flush(self) -> None:
        """Move the pending visits to the per-row sums (CPU)."""
        if not self._pending:
            return
        keys, y, valid, probs, margin = (torch.cat(parts).cpu().numpy() for parts in zip(*self._pending))
        self._pending.clear()
        keys, y, probs, margin = keys[valid], y[valid], probs[valid].astype(np.float64), margin[valid].astype(np.float64)
        counted = self.sums["visits"].copy()
        rows = self.index.locate(keys, y, counted)
        found = rows >= 0
        self.unmatched += int((~found).sum())
        rows, y, probs, margin = rows[found], y[found], probs[found], margin[found]
        s = self.sums
        np.add.at(s["visits"], rows, 1.0)
        np.add.at(s["prob_sum"], rows, probs)
        np.add.at(s["margin_sum"], rows, margin)
        np.add.at(s["correct_sum"], rows, (probs.argmax(1) == y).astype(np.float64))
        np.add.at(s["label_sum"], rows, y.astype(np.float64))

    def gathered(self) -> dict[str, np.ndarray] | None:
        """Every rank's sums added up, on the main process (None elsewhere)."""
        self.flush()
        part = dist.gather_part(Part(sums=dict(self.sums)), 0)
        return None if part is None else {k: np.asarray(v) for k, v in part.sums.items()}


def epoch_lines(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per visited row: its label, prediction, mean gold probability, mean margin, share
    correct and visits, from an epoch's summed visits."""
    visits = sums["visits"]
    rows = np.flatnonzero(visits > 0)
    v = visits[rows]
    label = np.rint(sums["label_sum"][rows] / v).astype(np.int64)
    mean_probs = sums["prob_sum"][rows] / v[:, None]
    return {
        "row": rows, "label": label, "predicted": mean_probs.argmax(1), "gold_prob": mean_probs[np.arange(len(rows)), label],
        "margin": sums["margin_sum"][rows] / v, "correct": sums["correct_sum"][rows] / v, "visits": v.astype(np.int64),
    }
