"""Query and key vectors of every head, for the neuron view of one example.

Attention weights are ``softmax(q . k / sqrt(d))`` per head; the neuron view shows the
terms of that dot product. :func:`query_key_hooks` are the capture pass's forward hooks on
the query and key projections (the measurement keeps the vectors of its first examples);
:func:`query_key_capture` runs one forward pass over one example with the same hooks and
returns, per layer and head, the vectors and the attention map the model computed, so
that the page (or a test) can recompute the map from the vectors.

Supported: self-attention modules holding ``query`` and ``key`` ``nn.Linear``
projections (BERT and the models that copy its attention: RoBERTa, ALBERT, ELECTRA,
MiniLM, ...) and DistilBERT's ``q_lin`` / ``k_lin``, also with PEFT adapters (LoRA)
around them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...model_utils import eager_attention, forward_hooks, kept_modes, model_device, model_inputs, own_precision, to_numpy
from ...sharding import is_linear

__all__ = ["SUPPORTED_ATTENTION", "attention_scores", "eager_attention", "per_head", "query_key_capture", "query_key_hooks"]

SUPPORTED_ATTENTION = (
    "self-attention modules with `query` and `key` nn.Linear projections (BERT, RoBERTa, ALBERT, ELECTRA, "
    "MiniLM, ...) or DistilBERT's `q_lin` and `k_lin`"
)
# Attribute names of the query and key projections, per family.
_PROJECTIONS = (("query", "key"), ("q_lin", "k_lin"))


def _projection_pairs(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    pairs = []
    for module in model.modules():
        for q_name, k_name in _PROJECTIONS:
            q, k = getattr(module, q_name, None), getattr(module, k_name, None)
            # A LoRA layer around a projection counts: the hooks read what it outputs.
            if is_linear(q) and is_linear(k):
                pairs.append((q, k))
                break
    if not pairs:
        raise ValueError(
            f"{type(model).__name__} has no attention module with query and key projections; the neuron view "
            f"supports {SUPPORTED_ATTENTION}; use the head view alone for this model"
        )
    return pairs


def query_key_hooks(model: nn.Module, record: dict[str, Any]) -> list:
    """Forward hooks on every layer's query and key projections, for the capture pass.

    Each hook appends its projection's output (batch, tokens, heads * d_head) to
    ``record["attention_q"]`` or ``record["attention_k"]``, in call order: one entry per
    layer, also for a model that shares one layer across depths (ALBERT calls the same
    projection once per layer). A model without such projections gets no hook
    (statistics, but no neuron view).

    Returns:
        ``[(module, hook), ...]``, for :func:`~layerwatch.model_utils.forward_hooks`.
    """
    try:
        pairs = _projection_pairs(model)
    except ValueError:  # no query/key projections to read: statistics, but no neuron view
        return []
    out = []
    for q, k in dict.fromkeys(pairs):  # a shared layer's projections hooked once
        for kind, module in (("q", q), ("k", k)):
            def hook(_module, _inputs, output, kind=kind):
                record.setdefault(f"attention_{kind}", []).append(output)

            out.append((module, hook))
    return out


def per_head(vectors: torch.Tensor, heads: int) -> torch.Tensor:
    """A projection's output for one row, (tokens, heads * d_head), as (heads, tokens, d_head)."""
    return vectors.reshape(vectors.shape[0], heads, -1).permute(1, 0, 2)


def _one_row(name: str, value: Any) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[0] != 1:
        raise ValueError(
            f"{name} has shape {tuple(torch.as_tensor(value).shape)}; expected (T,) or (1, T); pass one example"
        )
    return tensor


def query_key_capture(
    model: nn.Module,
    input_ids: Any,
    attention_mask: Any,
    token_type_ids: Any = None,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Query and key vectors of every head and layer for ONE example, and its attention.

    One forward pass with the capture pass's own hooks (:func:`query_key_hooks`; eager
    attention, evaluation mode, no gradients, in ``precision`` whatever wraps ``forward``;
    the model's attention implementation and each module's training mode are restored
    afterwards); the hooks are removed when it ends, also when it raises. Only the example's
    real tokens are kept, so ``softmax(attention_scores(q, k))`` equals ``attention``. The hooks read the
    projections' outputs, never their weights, so a sharded model (FSDP, ZeRO-3) works
    when every rank calls this function with it, as its forward pass needs.

    Args:
        model: A supported transformers model (see :data:`SUPPORTED_ATTENTION`).
        input_ids: (T,) or (1, T) token ids.
        attention_mask: Same shape, nonzero for real tokens.
        token_type_ids: Optional, same shape; left out for a model that takes none.
        precision: ``"fp32"`` (autocast off, a mixed-precision wrapper on ``forward`` set
            aside), ``"bf16"`` or ``"fp16"`` (autocast).

    Returns:
        A dict of numpy arrays: ``q`` and ``k`` (layers, heads, n, d_head) float32,
        ``attention`` (layers, heads, n, n) float32 (query on axis 2), and ``positions``
        (n,) int64, the indices of the n real tokens within the input.

    Raises:
        ValueError: for an unsupported model or input that is not one example.
    """
    _projection_pairs(model)  # an unsupported model is named before anything runs
    ids = _one_row("input_ids", input_ids)
    mask = _one_row("attention_mask", attention_mask)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}; expected {tuple(ids.shape)} like input_ids")
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = _one_row("token_type_ids", token_type_ids)
    device = model_device(model)
    inputs = {k: v.to(device) for k, v in model_inputs(model, inputs).items()}

    captured: dict[str, list[torch.Tensor]] = {}
    with (kept_modes(model), own_precision(model, precision), eager_attention(model), torch.no_grad(),
          forward_hooks(query_key_hooks(model, captured))):
        outputs = model(**inputs, output_attentions=True)
    captured = {kind: captured.get(f"attention_{kind}", []) for kind in ("q", "k")}

    attentions = getattr(outputs, "attentions", None) or ()
    if not attentions or not len(captured["q"]) == len(captured["k"]) == len(attentions):
        raise ValueError(
            f"{type(model).__name__} returned {len(attentions)} attention maps for {len(captured['q'])} query "
            f"projections called; the neuron view supports encoder models with {SUPPORTED_ATTENTION}"
        )
    positions = torch.nonzero(mask[0] != 0).flatten()
    q_layers, k_layers, maps = [], [], []
    for index, attn in enumerate(attentions):
        heads = attn.shape[1]
        for kind, out in (("q", q_layers), ("k", k_layers)):
            # A copy on the host, in float32: the projection's output buffer is not ours to keep.
            vectors = per_head(captured[kind][index][0].detach().float().cpu().clone(), heads)  # (heads, T, d_head)
            out.append(vectors[:, positions])
        maps.append(attn[0].detach().float().cpu()[:, positions][:, :, positions])
    return {
        "q": to_numpy(torch.stack(q_layers)),
        "k": to_numpy(torch.stack(k_layers)),
        "attention": to_numpy(torch.stack(maps)),
        "positions": to_numpy(positions).astype(np.int64),
    }


def attention_scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The attention scores ``q . k / sqrt(d_head)`` (before the softmax), in float64.

    Args:
        q: (..., n, d_head) query vectors.
        k: (..., n, d_head) key vectors of the same heads.

    Returns:
        (..., n, n) scores, query on the second-to-last axis.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    if q.shape != k.shape or q.ndim < 2:
        raise ValueError(f"q has shape {q.shape} and k {k.shape}; expected the same (..., n, d_head) shape")
    return q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
