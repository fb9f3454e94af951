"""Attention norms (Kobayashi et al. 2020, "Attention is not only a weight").

Per head h and token j, ``||f_h(x_j)||`` with ``f_h(x) = (x W_V + b_V)[head h] W_O[head h]``
(no output bias), and ``||alpha_ij f_h(x_j)|| = alpha_ij ||f_h(x_j)||``, with the shares of
attention weight and of norm that go to each token class: on the capture pass, from hooks
on every layer's value projection (:func:`value_norm_hooks`), and for one example in
full (:func:`norm_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from ...model_utils import eager_attention, forward_hooks, model_device, model_inputs, to_numpy
from ...sharding import full_weight
from .layers import SUPPORTED, LayerHandles, check_ids, find_layers, untouched

__all__ = ["NormMaps", "check_projections", "norm_maps", "norm_shares", "token_class_masks", "value_norm_hooks"]



def _head_norms(values: torch.Tensor, w_out: torch.Tensor, heads: int) -> torch.Tensor:
    """||f_h(x_j)|| = ||v_j[head h] W_O[:, head h]^T|| for (batch, tokens, hidden) values -> (batch, heads, tokens)."""
    b, t, width = values.shape
    d = width // heads
    v = values.reshape(b, t, heads, d)
    # One head at a time: (batch, tokens, hidden) per head at most, never one per head pair.
    return torch.stack(
        [torch.linalg.vector_norm(v[:, :, h] @ w_out[:, h * d : (h + 1) * d].T, dim=-1) for h in range(heads)],
        dim=1,
    )


def norm_shares(
    attn: torch.Tensor, fnorm: torch.Tensor, mask: torch.Tensor, class_masks: torch.Tensor
) -> torch.Tensor:
    """Shares of attention weight and of ``||alpha f(x)||`` that go to each token class.

    For query i and class c: weight share ``sum_{j in c} alpha_ij / sum_j alpha_ij`` and
    norm share ``sum_{j in c} alpha_ij ||f(x_j)|| / sum_j alpha_ij ||f(x_j)||``, sums over
    real keys j; both are averaged over the real queries of each row. With classes that
    partition the real tokens (:func:`token_class_masks`) each share sums to 1 over the
    classes. A row without real tokens gives NaN.

    Args:
        attn: (batch, heads, tokens, tokens) attention probabilities, queries first.
        fnorm: (batch, heads, tokens) ``||f_h(x_j)||`` per key.
        mask: (batch, tokens) attention mask (nonzero = real token).
        class_masks: (batch, classes, tokens) booleans, one mask per class.

    Returns:
        float32 (batch, heads, classes, 2): ``[..., 0]`` the weight share, ``[..., 1]`` the
        norm share.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn has shape {tuple(attn.shape)}; pass (batch, heads, tokens, tokens) probabilities")
    b, h, t, _ = attn.shape
    if tuple(fnorm.shape) != (b, h, t):
        raise ValueError(f"fnorm has shape {tuple(fnorm.shape)}; it must be (batch, heads, tokens) = {(b, h, t)}")
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be (batch, tokens) = {(b, t)}")
    if class_masks.dim() != 3 or class_masks.shape[0] != b or class_masks.shape[2] != t:
        raise ValueError(
            f"class_masks has shape {tuple(class_masks.shape)}; it must be (batch, classes, tokens) with "
            f"batch={b}, tokens={t} (token_class_masks builds it)"
        )
    real = mask.to(torch.bool)
    weights = attn.float() * real[:, None, None, :]
    normed = weights * fnorm.float()[:, :, None, :]
    classes = (class_masks.to(torch.bool) & real[:, None, :]).float()
    shares = torch.stack(
        [
            torch.einsum("bhij,bcj->bhic", weights, classes) / weights.sum(-1, keepdim=True),
            torch.einsum("bhij,bcj->bhic", normed, classes) / normed.sum(-1, keepdim=True),
        ],
        dim=-1,
    )  # (batch, heads, queries, classes, 2)
    queries = real[:, None, :, None, None]
    total = torch.where(queries, shares, torch.zeros((), dtype=shares.dtype, device=shares.device)).sum(2)
    return total / real.sum(1).float().view(b, 1, 1, 1)


def value_norm_hooks(handles: LayerHandles, record: dict[str, Any], keep_values: bool = False) -> list:
    """Forward hooks on every layer's value projection, for the capture pass (and :func:`norm_maps`).

    Each hook puts ``||f_h(x_j)||`` of its layer, a float32 (batch, heads, tokens) tensor, in
    ``record["attribution_fnorms"]`` under the layer's index, and with ``keep_values`` the
    value projection's output per head, (batch, tokens, heads * d), in
    ``record["attribution_values"]``. The hooks only read the output (no gradient, no copy
    kept beyond these).

    Returns:
        ``[(module, hook), ...]``, for :func:`~layerwatch.model_utils.forward_hooks`.
    """
    def make(i: int, w_out: nn.Module):
        def hook(_module, _inputs, output):
            # The output projection is read whole: gathered under sharding (every rank runs
            # this hook in the same lockstep forward), with a LoRA adapter's update added.
            values = handles.per_head(output.detach().float())
            record.setdefault("attribution_fnorms", {})[i] = _head_norms(
                values, full_weight(w_out).to(values.device), handles.num_heads,
            )
            if keep_values:
                record.setdefault("attribution_values", {})[i] = values.clone()

        return hook

    return [(v, make(i, o)) for i, (v, o) in enumerate(zip(handles.values, handles.outputs))]


def check_projections(model: nn.Module, handles: LayerHandles) -> None:
    """Raise a ValueError naming the layers without a value or an output projection."""
    missing = [i for i, (v, o) in enumerate(zip(handles.values, handles.outputs)) if v is None or o is None]
    if missing:
        paths = {"bert": "attention.self.value and attention.output.dense", "llama": "self_attn.v_proj and "
                 "self_attn.o_proj"}.get(handles.family, "attention.v_lin and attention.out_lin")
        raise ValueError(
            f"model {type(model).__name__}: layers {missing} have no {paths} (nn.Linear); attention norms "
            f"support {SUPPORTED} with those projections"
        )


@dataclass(frozen=True)
class NormMaps:
    """Full attention-norm maps of one example (Kobayashi et al. 2020).

    Attributes:
        fnorm: float32 (layers, heads, tokens): ``||f_h(x_j)||``.
        attention: float32 (layers, heads, tokens, tokens): ``alpha_ij``, queries first.
        weighted: float32 (layers, heads, tokens, tokens): ``||alpha_ij f_h(x_j)||``.
        mixed: float32 (layers, heads, tokens): ``||sum_j alpha_ij f_h(x_j)||`` per query.
    """

    fnorm: np.ndarray
    attention: np.ndarray
    weighted: np.ndarray
    mixed: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays by name, for ``np.savez``."""
        return {"fnorm": self.fnorm, "attention": self.attention, "weighted": self.weighted, "mixed": self.mixed}


def norm_maps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> NormMaps:
    """``||f_h(x_j)||`` and ``||alpha_ij f_h(x_j)||`` of every layer and head for one example.

    One forward pass in eval mode with eager attention; the model's modes, attention
    implementation and RNG states are restored afterwards.

    Args:
        model: a supported model (:func:`find_layers`).
        input_ids: (1, tokens) integer ids.
        attention_mask: (1, tokens).
        token_type_ids: (1, tokens) or None.

    Returns:
        :class:`NormMaps`.
    """
    check_ids("input_ids", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; pass one example, shape (1, tokens)")
    check_ids("attention_mask", attention_mask, tuple(input_ids.shape))
    if token_type_ids is not None:
        check_ids("token_type_ids", token_type_ids, tuple(input_ids.shape))
    device = model_device(model)
    kwargs = model_inputs(model, {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    handles = find_layers(model)
    check_projections(model, handles)
    record: dict[str, Any] = {}
    with (untouched(model), torch.no_grad(), eager_attention(model),
          forward_hooks(value_norm_hooks(handles, record, keep_values=True))):
        out = model(**kwargs, output_attentions=True)
        attentions = getattr(out, "attentions", None)
        if attentions is None or len(attentions) != handles.num_layers:
            raise ValueError(f"model {type(model).__name__} returned no attention probabilities with output_attentions=True")
        heads = handles.num_heads
        fnorm, attn, mixed = [], [], []
        for i, (a, o) in enumerate(zip(attentions, handles.outputs)):
            f, v = record["attribution_fnorms"][i], record["attribution_values"][i]
            a = a[0].float()  # (heads, tokens, tokens)
            t = a.shape[-1]
            d = v.shape[-1] // heads
            vh = v[0].reshape(t, heads, d).transpose(0, 1)  # (heads, tokens, d)
            context = a @ vh  # sum_j alpha_ij v_j per head
            w = full_weight(o).to(context.device)
            mixed.append(torch.stack([
                torch.linalg.vector_norm(context[h] @ w[:, h * d : (h + 1) * d].T, dim=-1) for h in range(heads)
            ]))
            fnorm.append(f[0])
            attn.append(a)
        fnorm_t, attn_t, mixed_t = torch.stack(fnorm), torch.stack(attn), torch.stack(mixed)
        weighted = attn_t * fnorm_t[:, :, None, :]
    return NormMaps(*(to_numpy(x).astype(np.float32) for x in (fnorm_t, attn_t, weighted, mixed_t)))


# -- token classes -----------------------------------------------------------------------------
def token_class_masks(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cls_ids: Iterable[int],
    sep_ids: Iterable[int],
    punct_ids: Iterable[int],
) -> torch.Tensor:
    """Boolean masks of the token classes of a batch; they partition the real tokens.

    Args:
        input_ids: (batch, tokens).
        attention_mask: (batch, tokens); padding belongs to no class.
        cls_ids: ids counted as "cls" (``[tokenizer.cls_token_id]``, ``<s>``).
        sep_ids: ids counted as "sep" (``[tokenizer.sep_token_id]``, ``</s>``).
        punct_ids: ids counted as "punct"
            (:func:`~layerwatch.measures.attention.stats.punctuation_ids`).

    Returns:
        bool (batch, 4, tokens) in the order of
        :data:`~layerwatch.measures.attribution.accumulate.TOKEN_CLASSES`.
    """
    check_ids("input_ids", input_ids)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; pass (batch, tokens)")
    check_ids("attention_mask", attention_mask, tuple(input_ids.shape))

    def member(ids: Iterable[int]) -> torch.Tensor:
        ids = torch.as_tensor([int(i) for i in ids], dtype=input_ids.dtype, device=input_ids.device)
        return torch.isin(input_ids, ids)

    real = attention_mask.to(torch.bool)
    cls = member(cls_ids) & real
    sep = member(sep_ids) & real & ~cls
    punct = member(punct_ids) & real & ~cls & ~sep
    other = real & ~cls & ~sep & ~punct
    return torch.stack([cls, sep, punct, other], dim=1)
