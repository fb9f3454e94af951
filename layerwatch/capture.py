"""Forward passes over a fixed subset, pooled batch by batch.

Only the pooled vectors are kept: memory grows with rows x layers x hidden, never with
tokens. The model's train/eval mode is restored afterwards; ``torch.inference_mode``
leaves ``requires_grad`` flags and ``.grad`` tensors untouched.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .config import POOLINGS, check_choice, resolve_layers
from .data import Labels, encode_labels, get_column, num_rows, read_inputs, resolve_label_column, stratified_subset
from .pooling import pool


@dataclass
class Snapshot:
    """The pooled vectors of one split at one moment of training.

    Attributes:
        pooled: float32 array (layers, rows, hidden).
        labels: (rows,) int64 class ids, or float32 targets for a regression.
        layers: (layers,) hidden-state indices (0 = embedding output).
        indices: (rows,) the dataset rows, in the order of ``pooled``'s second axis.
        predictions: (rows,) the classification head's argmax, or None without a head.
        epoch, step: when it was taken (0, 0 = before training).
        split: the split's name.
    """

    pooled: np.ndarray
    labels: np.ndarray
    layers: np.ndarray
    indices: np.ndarray
    predictions: np.ndarray | None = None
    epoch: int = 0
    step: int = 0
    split: str = ""
    label_names: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def num_layers(self) -> int:
        return int(self.pooled.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.pooled.shape[1])


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def count_hidden_states(model: torch.nn.Module) -> int | None:
    """Hidden states the model returns (embeddings + layers), read from its config."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    return int(n) + 1 if isinstance(n, int) else None


def _forward_kwargs(model: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return {"input_ids", "attention_mask"}


def _batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # Longest rows first: each batch pads only to its own longest row, and an
    # out-of-memory error, if any, comes on the first batch rather than the last.
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _pad(rows: list[np.ndarray], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def capture(
    model: torch.nn.Module,
    dataset: Any,
    layers: str | Sequence[int] = "all",
    pooling: str = "mean",
    batch_size: int = 32,
    label_column: str | None = None,
    indices: Sequence[int] | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = False,
    split: str = "",
) -> Snapshot:
    """Run ``model`` over rows of ``dataset`` and keep each layer's pooled vectors.

    Args:
        model: A Hugging Face model that returns ``hidden_states`` (any encoder, with or
            without a task head).
        dataset: A tokenized ``datasets.Dataset`` (or dict of columns) with ``input_ids``,
            ideally ``attention_mask``, and a label column.
        layers: ``"all"`` or hidden-state indices (0 = embedding output, 1..L = layers).
        pooling: ``"mean"`` over unmasked tokens, or ``"cls"`` for the first token.
        batch_size: Rows per forward pass.
        label_column: Label column; ``None`` looks for ``labels``, then ``label``.
        indices: Dataset rows to capture, in this order. Default: all rows, or a stratified
            subset of ``max_samples`` drawn with ``seed`` when ``max_samples`` is given.
        progress: Show a progress bar.
        split: Name used in messages and stored with the snapshot.

    Returns:
        A :class:`Snapshot` whose ``pooled`` is float32 (layers, rows, hidden).
    """
    check_choice("pooling", pooling, POOLINGS)
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    column = resolve_label_column(dataset, label_column, split)
    if indices is None:
        all_labels = encode_labels(get_column(dataset, column), split, column)
        if max_samples is not None:
            indices = stratified_subset(all_labels.values, max_samples, seed, all_labels.kind)
        else:
            indices = np.arange(num_rows(dataset), dtype=np.int64)
        labels = Labels(all_labels.values[indices], all_labels.kind, all_labels.names)
    else:
        indices = np.asarray(indices, dtype=np.int64)
        labels = encode_labels(get_column(dataset, column, indices), split, column)
    if len(indices) == 0:
        where = f"split {split!r}" if split else "the dataset"
        raise ValueError(f"{where} has no rows to capture; pass a dataset with at least one row")

    config = getattr(model, "config", None)
    pad_id = getattr(config, "pad_token_id", None)
    inputs = read_inputs(dataset, indices, pad_id)
    lengths = np.array([len(r) for r in inputs["input_ids"]])
    accepted = _forward_kwargs(model)
    device = model_device(model)
    pad_value = int(pad_id) if isinstance(pad_id, int) else 0

    pooled: np.ndarray | None = None
    predictions: np.ndarray | None = None
    chosen: tuple[int, ...] = ()
    batches = _batches(lengths, batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(indices), desc=f"layerwatch capture {split}".rstrip(), unit="row", leave=False)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch_rows in batches:
                feed = {"input_ids": _pad([inputs["input_ids"][i] for i in batch_rows], pad_value)}
                feed["attention_mask"] = _pad([inputs["attention_mask"][i] for i in batch_rows], 0)
                if "token_type_ids" in inputs and "token_type_ids" in accepted:
                    feed["token_type_ids"] = _pad([inputs["token_type_ids"][i] for i in batch_rows], 0)
                feed = {k: v.to(device) for k, v in feed.items()}
                out = model(**feed, output_hidden_states=True, return_dict=True)
                hidden = getattr(out, "hidden_states", None)
                if hidden is None and isinstance(out, dict):
                    hidden = out.get("hidden_states")
                if not hidden:
                    raise ValueError(
                        f"{type(model).__name__} returned no hidden_states with output_hidden_states=True; "
                        "layerwatch needs a model that returns them (a Hugging Face encoder such as "
                        "BertModel or AutoModelForSequenceClassification)"
                    )
                if pooled is None:
                    chosen = resolve_layers(layers, len(hidden))
                    dim = hidden[chosen[0]].shape[-1]
                    pooled = np.empty((len(chosen), len(indices), dim), dtype=np.float32)
                mask = feed["attention_mask"]
                # One stacked copy to the host per batch (one device sync, not one per
                # layer); .numpy() of that copy goes into our own buffer, so nothing keeps a
                # view of a tensor the model may reuse.
                pooled[:, batch_rows] = torch.stack([pool(hidden[layer], mask, pooling) for layer in chosen]).cpu().numpy()
                logits = getattr(out, "logits", None)
                if logits is not None and logits.ndim == 2 and logits.shape[-1] > 1:
                    if predictions is None:
                        predictions = np.full(len(indices), -1, dtype=np.int64)
                    predictions[batch_rows] = logits.argmax(-1).cpu().numpy()
                # Let this batch's hidden states go before the next forward pass, or two
                # batches' worth would be alive at its peak.
                del out, hidden, logits, feed, mask
                if bar is not None:
                    bar.update(len(batch_rows))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    return Snapshot(
        pooled=pooled,
        labels=labels.values,
        layers=np.asarray(chosen, dtype=np.int64),
        indices=np.asarray(indices, dtype=np.int64),
        predictions=predictions,
        split=split,
        label_names=labels.names,
    )
