"""The one forward pass over a fixed subset, shared by every measurement.

Rows are read without the padding they were stored with, sorted by length and padded
per batch on the right to the batch's longest row; each batch goes through the model once
with whatever outputs the enabled measurements need, and each measurement reduces it at
once (see :mod:`layerwatch.measures.base`). Every module's own train/eval flag and the
attention implementation are restored afterwards, hooks are removed, also when the forward
pass raises; the pass runs in its own precision whatever wraps ``forward``;
``torch.inference_mode`` leaves ``requires_grad`` flags and ``.grad`` untouched.
A sharded model (FSDP, ZeRO-3) is captured in lockstep on every rank, under
``torch.no_grad`` (see :class:`Lockstep` and :mod:`layerwatch.sharding`).

:func:`capture` (the same pass without a Trainer) is public as ``layerwatch.capture``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .config import POOLINGS, LayerwatchConfig, check_choice, check_positive_int, parse_layers
from .data import empty_rows, get_column, num_rows, read_inputs, resolve_label_column, stratified_subset
from .distributed import Part, RankFailed, agree
from .labels import canonical, classify, match_head, resolve
from .measures import Measurement
from .measures.base import Batch, SplitPlan
from .measures.embeddings.measure import EmbeddingsMeasurement
from .model_info import ModelInfo
from .model_utils import (  # noqa: F401  (accepted_inputs, eager_attention, unwrap: importable from here)
    accepted_inputs, checked_precision, eager_attention, forward_hooks, kept_modes, model_device, model_inputs, own_forward,
    to_numpy, unwrap,
)
from .precision import autocast_factory, resolve_precision
from .progress import Progress
from .sharding import released
from .snapshot import Snapshot
from .splits import empty_row_error

__all__ = ["Lockstep", "Snapshot", "capture", "capture_split", "count_hidden_states", "is_decoder_only"]

COMMON = "__common__"


def count_hidden_states(model: Any) -> int | None:
    """Hidden states the model returns (embeddings + layers), read from its config."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    return int(n) + 1 if isinstance(n, int) else None


def is_decoder_only(model: Any) -> bool:
    """Whether the model reads text left to right only (GPT-2, Llama, ...)."""
    config = getattr(unwrap(model), "config", None)
    if config is None:
        return False
    if getattr(config, "is_decoder", False) and not getattr(config, "is_encoder_decoder", False):
        return True
    model_type = getattr(config, "model_type", None)
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # pragma: no cover
        return False
    # Encoders (BERT, RoBERTa, ...) can be masked language models; decoder-only models cannot.
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def check_pooling(model: Any, pooling: str) -> None:
    """Refuse a pooling that would silently take the wrong token of this model."""
    check_choice("pooling", pooling, POOLINGS)
    if pooling == "cls" and is_decoder_only(model):
        raise ValueError(
            f"pooling='cls' takes the first token, which in a decoder-only model ({type(model).__name__}) has seen "
            "nothing but itself; use pooling='last' (the last real token, what its classifier reads) or 'mean'"
        )


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


@dataclass
class Lockstep:
    """Forward calls that every rank makes together (a sharded model: FSDP, ZeRO-3).

    Under sharding a forward pass gathers each module's weights from every rank, so every
    rank must run the same number of forward calls in the same order, or all of them wait.
    ``steps`` is the most batches any rank has; a rank with fewer runs padding batches of
    one row (``filler``, a row index of the dataset) whose outputs are dropped. Before
    every call, and once at the end, the ranks agree (:func:`layerwatch.distributed.agree`): a rank whose step failed
    outside the forward pass says so there, and every rank stops together (the failing
    one re-raising its error, the others :class:`~layerwatch.distributed.RankFailed`).

    ``runner``: the module to call (the one whose forward gathers the shards; see
    :func:`layerwatch.sharding.runner`), or None for the model itself.
    """

    steps: int
    filler: int = 0
    runner: Any = None

    @staticmethod
    def steps_for(n_rows: int, world: int, batch_size: int) -> int:
        """The most batches a rank has when rank ``r`` takes positions ``r::world`` (rank 0's)."""
        most = -(-int(n_rows) // max(int(world), 1))
        return -(-most // int(batch_size))

    def check(self, error: BaseException | None) -> None:
        failures = agree(error is None, f"{type(error).__name__}: {error}" if error is not None else "")
        if error is not None:
            raise error
        if failures:
            raise RankFailed("; ".join(failures))


def capture_split(
    model: torch.nn.Module,
    dataset: Any,
    plan: SplitPlan,
    measurements: Sequence[Measurement],
    batch_size: int = 32,
    progress: "bool | Progress" = False,
    autocast: Any = None,
    lockstep: Lockstep | None = None,
) -> dict[str, Part] | None:
    """Run ``model`` once over ``plan.indices`` of ``dataset`` for every measurement.

    ``autocast``: a function giving a fresh autocast context per batch (see
    :mod:`layerwatch.precision`), or None for fp32. Either way the pass runs in that
    precision whatever wraps ``forward``: a mixed-precision wrapper (accelerate's under
    ``bf16=True`` or ``fp16=True`` training) is set aside during the pass
    (:func:`~layerwatch.model_utils.own_forward`). Each module's train/eval flag is
    restored afterwards (:func:`~layerwatch.model_utils.kept_modes`).

    ``lockstep``: for a sharded model, the forward calls every rank makes together (see
    :class:`Lockstep`); the passes then run under ``torch.no_grad`` (FSDP keeps the
    buffers it gathers into, which must stay usable by training) and ``plan`` may hold
    no rows (the rank runs padding batches only, and returns None).
    ``progress``: the snapshot's :class:`~layerwatch.progress.Progress`, or True for a
    bar (a plain line off a terminal) of this capture's own.

    Returns:
        ``{measurement name: Part}`` and, under ``"__common__"``, the head's predictions
        (``head_predictions``, output indices) when the model has a classification head.
    """
    config = getattr(model, "config", None)
    pad_id = getattr(config, "pad_token_id", None)
    pad_value = int(pad_id) if isinstance(pad_id, int) else 0
    indices = np.asarray(plan.indices, dtype=np.int64)
    device = model_device(model)
    # A rank of a sharded model may have no rows of its own: it runs padding batches only.
    has_rows = len(indices) > 0 or lockstep is None
    flags: dict[str, Any] = {}
    for m in measurements:
        flags.update(m.output_flags)
    eager = any(m.eager_attention for m in measurements)
    record: dict[str, Any] = {}
    error: BaseException | None = None
    batches: list[np.ndarray] = []
    inputs: dict[str, Any] = {}
    filler: dict[str, Any] = {}
    hooks: list = []
    accumulators: dict[str, Any] = {}
    try:
        if has_rows:
            inputs = read_inputs(dataset, indices, pad_id if isinstance(pad_id, int) else None)
            empty = empty_rows(inputs, indices)
            if empty:
                raise empty_row_error(plan.split, empty)
            lengths = np.array([len(r) for r in inputs["input_ids"]])
            batches = _batches(lengths, batch_size)
        if lockstep is not None:
            filler = read_inputs(dataset, np.asarray([lockstep.filler], dtype=np.int64), pad_id if isinstance(pad_id, int) else None)
        hooks = [pair for m in measurements for pair in m.hooks(model, record)]
        if has_rows:
            accumulators = {m.name: m.start(plan) for m in measurements}
            accumulators = {k: v for k, v in accumulators.items() if v is not None}
    except Exception as exc:
        # Under lockstep the error waits for the ranks' next agreement, which every rank reaches.
        if lockstep is None:
            raise
        error = exc

    def feed_of(source: dict, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        feed = {"input_ids": _pad([source["input_ids"][i] for i in rows], pad_value)}
        feed["attention_mask"] = _pad([source["attention_mask"][i] for i in rows], 0)
        if "token_type_ids" in source:
            feed["token_type_ids"] = _pad([source["token_type_ids"][i] for i in rows], 0)
        return {k: v.to(device) for k, v in model_inputs(model, feed).items()}

    head: np.ndarray | None = None
    outputs: int | None = None
    call = lockstep.runner if lockstep is not None and lockstep.runner is not None else model
    steps = lockstep.steps if lockstep is not None else len(batches)

    # One bar for the whole snapshot (the caller's), or this capture's own; plain lines off a terminal.
    own = not isinstance(progress, Progress)
    bar = Progress(f"capture {plan.split}".rstrip(), len(indices), enabled=bool(progress) and has_rows) if own else progress
    bar.working(f"capture {plan.split}".rstrip())
    if autocast is None:
        autocast = autocast_factory("fp32", device)
    grad_off = torch.no_grad() if lockstep is not None else torch.inference_mode()
    try:
        with (kept_modes(model), own_forward(model), checked_precision(model), grad_off,
              eager_attention(model, eager), forward_hooks(hooks)):
            for step in range(steps):
                if lockstep is not None:
                    lockstep.check(error)
                real = step < len(batches) and error is None
                try:
                    if real:
                        batch_rows = batches[step]
                        feed = feed_of(inputs, batch_rows)
                    else:
                        # A padding batch: the same forward call as the other ranks', outputs dropped.
                        batch_rows = np.zeros(0, dtype=np.int64)
                        feed = feed_of(filler, [0])
                except Exception as exc:
                    if lockstep is None:
                        raise
                    error = exc
                    continue
                record.clear()
                with autocast():
                    out = call(**feed, **flags, return_dict=True)
                if not real:
                    del out, feed
                    record.clear()
                    continue
                try:
                    batch = Batch(rows=batch_rows, inputs=feed, mask=feed["attention_mask"], outputs=out, hooked=record)
                    for acc in accumulators.values():
                        acc.update(batch)
                    logits = batch.output("logits")
                    if logits is not None and logits.ndim == 2 and logits.shape[-1] > 1:
                        if head is None:
                            head = np.full(len(indices), -1, dtype=np.int64)
                            outputs = int(logits.shape[-1])
                        head[batch_rows] = to_numpy(logits.argmax(-1))
                except Exception as exc:
                    if lockstep is None:
                        raise
                    error = exc
                # Let this batch's outputs go before the next forward pass, or two
                # batches' worth would be alive at its peak.
                batch = logits = None
                del out, feed
                record.clear()
                bar.advance(len(batch_rows))
        parts = None
        if error is None and has_rows:
            try:
                parts = {name: acc.finish() for name, acc in accumulators.items()}
                parts[COMMON] = Part(rows={"head_predictions": head} if head is not None else {}, meta={"outputs": outputs})
            except Exception as exc:
                if lockstep is None:
                    raise
                error = exc
        if lockstep is not None:
            lockstep.check(error)
    finally:
        if lockstep is not None:
            released(call)
        if own:
            bar.close()
    if has_rows and parts is not None:
        bar.done(f"captured {plan.split or 'the rows'} ({len(indices)} rows)")
    return parts


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
    precision: str = "fp32",
) -> Snapshot:
    """Run ``model`` over rows of ``dataset`` and keep each layer's pooled vectors.

    Args:
        model: A Hugging Face model that returns ``hidden_states`` (any encoder, with or
            without a task head; decoder-only models with ``pooling="last"`` or ``"mean"``).
        dataset: A tokenized ``datasets.Dataset`` (or dict of columns) with ``input_ids``,
            ideally ``attention_mask``, and a label column.
        layers: ``"all"`` or hidden-state indices (0 = embedding output, 1..L = layers).
        pooling: ``"mean"`` over unmasked tokens, ``"cls"`` for the first token, or
            ``"last"`` for the last real token.
        batch_size: Rows per forward pass.
        label_column: Label column; ``None`` looks for ``labels``, then ``label``.
        indices: Dataset rows to capture, in this order. Default: all rows, or a stratified
            subset of ``max_samples`` drawn with ``seed`` when ``max_samples`` is given.
        progress: Show a progress bar.
        split: Name used in messages and stored with the snapshot.
        precision: Numeric precision of the forward pass: ``"fp32"`` (the default here:
            the vectors of a plain forward pass), ``"bf16"`` or ``"fp16"`` (autocast), or
            ``"auto"`` (a half precision where the hardware runs it fast, as the callback
            does by default; see :mod:`layerwatch.precision`). The pooled vectors are
            float32 either way.

    Returns:
        A :class:`Snapshot` whose ``pooled`` is float32 (layers, rows, hidden). Labels are
        numbered by the whole label column (strings in sorted order, or as the model's
        ``id2label`` names them); ``predictions`` are in the same ids, or None when the
        head's outputs cannot be matched to the labels.
    """
    check_positive_int("batch_size", batch_size)
    check_pooling(model, pooling)
    device = model_device(model)
    autocast = autocast_factory(resolve_precision(precision, device), device)
    column = resolve_label_column(dataset, label_column, split)
    kind, raw = classify(get_column(dataset, column), split, column)
    cfg = getattr(model, "config", None)
    vocab = resolve(canonical({split: (kind, raw)}), id2label=getattr(cfg, "id2label", None), num_labels=getattr(cfg, "num_labels", None))
    all_labels = vocab.encode(raw, split, column)
    if indices is None:
        if max_samples is not None:
            indices = stratified_subset(all_labels, max_samples, seed, vocab.kind)
        else:
            indices = np.arange(num_rows(dataset), dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        where = f"split {split!r}" if split else "the dataset"
        raise ValueError(f"{where} has no rows to capture; pass a dataset with at least one row")
    config = LayerwatchConfig(output_dir=".", layers=parse_layers(layers), pooling=pooling, batch_size=batch_size)
    plan = SplitPlan(
        split=split, indices=indices, positions=np.arange(len(indices)), n_rows=len(indices),
        labels=all_labels[indices], layers=layers, config=config, model_info=ModelInfo(model_name=type(model).__name__),
    )
    emb = EmbeddingsMeasurement(config)
    parts = capture_split(model, dataset, plan, [emb], batch_size=batch_size, progress=progress, autocast=autocast)
    snap = Snapshot(labels=all_labels[indices], indices=indices, split=split, label_names=vocab.names or None)
    emb.assemble(parts[EmbeddingsMeasurement.name], snap)
    common = parts[COMMON]
    head = common.rows.get("head_predictions")
    if head is not None:
        snap.predictions = match_head(vocab, getattr(cfg, "id2label", None), common.meta.get("outputs")).map(head)
    return snap

