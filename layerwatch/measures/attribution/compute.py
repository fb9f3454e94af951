"""Attribution of a classifier's logit to tokens and layers, and attention norms.

Three measurements for the BERT family (BERT, RoBERTa, ELECTRA, MiniLM, ...) and
DistilBERT, each computed without any side effect on a training run:

* **token attributions**: integrated gradients (Sundararajan et al. 2017) of one logit
  with respect to the word embeddings, on the straight path from a baseline's word
  embeddings to the input's;
* **layer conductance** (Dhamdhere et al. 2018) of the embedding output and of every
  transformer layer's output, summed over hidden units, per token, all layers from one
  interpolation path;
* **attention norms** (Kobayashi et al. 2020, "Attention is not only a weight"): per head
  h and token j, ``||f_h(x_j)||`` with ``f_h(x) = (x W_V + b_V)[head h] W_O[head h]`` (no
  output bias), and ``||alpha_ij f_h(x_j)|| = alpha_ij ||f_h(x_j)||``, with the shares of
  attention weight and of norm that go to each token class.

The integration rule
--------------------
One uniform grid ``alpha_k = k / steps``, ``k = 0..steps`` (``steps + 1`` points, both
ends included), serves every quantity:

* token attributions use the left Riemann sum, the gradient at ``alpha_0..alpha_{steps-1}``
  each weighted ``1 / steps``: Captum's ``IntegratedGradients`` and
  ``LayerIntegratedGradients`` with ``method="riemann_left", n_steps=steps``
  (:data:`CAPTUM_IG_METHOD`);
* conductance is ``sum_k (L(alpha_{k+1}) - L(alpha_k)) * dF/dL(alpha_k)``: Captum's
  ``LayerConductance`` with ``method="riemann_trapezoid", n_steps=steps``
  (:data:`CAPTUM_CONDUCTANCE_METHOD`), whose grid is ``linspace(0, 1, steps + 1)``;
* ``F(x)`` and ``F(baseline)`` are the logits at the two ends of the same grid, so they
  cost no extra forward pass and are exactly the model's logits for the input and for the
  baseline.

Captum's default Gauss-Legendre rule was not chosen: its nodes exclude both ends and
differ between ``n`` and ``n + 1`` points, so integrated gradients and conductance would
need two paths (twice the cost) and neither would yield ``F(x)`` or ``F(baseline)``.
"""

from __future__ import annotations

import contextlib
import random
import string
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...model_utils import (
    checked_precision, eager_attention, kept_modes, model_device, model_inputs, own_forward, to_numpy,
)
from ...sharding import full_weight, is_linear

__all__ = [
    "CAPTUM_CONDUCTANCE_METHOD",
    "CAPTUM_IG_METHOD",
    "METHOD",
    "TOKEN_CLASSES",
    "AttributionResult",
    "LayerHandles",
    "NormHooks",
    "NormMaps",
    "attribute",
    "baseline_ids",
    "find_layers",
    "norm_maps",
    "norm_shares",
    "punctuation_ids",
    "token_class_masks",
]

METHOD = "riemann"
"""The rule :func:`attribute` uses: the uniform grid ``k / steps``, ``k = 0..steps``."""
CAPTUM_IG_METHOD = "riemann_left"
"""Captum's ``method`` that gives the same token attributions with the same ``n_steps``."""
CAPTUM_CONDUCTANCE_METHOD = "riemann_trapezoid"
"""Captum's ``method`` that gives the same conductance with the same ``n_steps``."""
TOKEN_CLASSES = ("cls", "sep", "punct", "other")
"""The token classes of :func:`norm_shares`, in the order of its third axis."""

_SUPPORTED = (
    "the BERT family (a base model with .embeddings.word_embeddings and .encoder.layer: "
    "BERT, RoBERTa, ELECTRA, MiniLM, ...), DistilBERT (.embeddings.word_embeddings and "
    ".transformer.layer) and Llama-style decoders (.embed_tokens and .layers with self_attn.v_proj and "
    "self_attn.o_proj: Llama, Mistral, Qwen2, ...; grouped-query attention included)"
)


# -- the model's parts ------------------------------------------------------------------
@dataclass(frozen=True)
class LayerHandles:
    """The modules of a supported model that the measurements hook.

    Attributes:
        family: ``"bert"`` or ``"distilbert"``.
        word_embeddings: the word (token) embedding lookup.
        embeddings: the module whose output is word + position + type embeddings after
            LayerNorm and dropout (the input of the first transformer layer).
        layers: the transformer layers, first to last.
        values: each layer's value projection (``attention.self.value``,
            ``attention.v_lin``), or None where a layer has none by that name.
        outputs: each layer's attention output projection W_O (``attention.output.dense``,
            ``attention.out_lin``), or None likewise.
        num_heads: attention heads per layer.
        kv_heads: key/value heads per layer (fewer than ``num_heads`` under grouped-query
            attention, where query head h reads value head ``h // (num_heads // kv_heads)``).
    """

    family: str
    word_embeddings: nn.Module
    embeddings: nn.Module
    layers: tuple[nn.Module, ...]
    values: tuple[nn.Module | None, ...]
    outputs: tuple[nn.Module | None, ...]
    num_heads: int
    kv_heads: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def per_head(self, values: torch.Tensor) -> torch.Tensor:
        """Value-projection outputs (..., kv_heads * d) as (..., num_heads * d): each key/value
        head repeated for the query heads that read it (as grouped-query attention does)."""
        kv = self.kv_heads or self.num_heads
        if kv == self.num_heads:
            return values
        d = values.shape[-1] // kv
        v = values.reshape(*values.shape[:-1], kv, d)
        return v.repeat_interleave(self.num_heads // kv, dim=-2).reshape(*values.shape[:-1], self.num_heads * d)


def _get(module: Any, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def find_layers(model: nn.Module) -> LayerHandles:
    """Find the embedding and transformer-layer modules of a supported model.

    Args:
        model: a task model (``BertForSequenceClassification``, ...) or a base model;
            its ``base_model`` is searched.

    Returns:
        The modules, as :class:`LayerHandles`.

    Raises:
        ValueError: the model is not of a supported family.
    """
    # A PEFT model holds the task model (its adapters inside) behind get_base_model(). DDP is
    # not looked through: its forward would run its collectives on one rank only.
    get_base = getattr(model, "get_base_model", None)
    task = get_base() if callable(get_base) else model
    base = getattr(task, "base_model", task)
    embeddings = getattr(base, "embeddings", None)
    word = getattr(embeddings, "word_embeddings", None)
    if isinstance(_get(base, "encoder.layer"), nn.ModuleList):
        family, layers, value_path, out_path, self_path = (
            "bert", _get(base, "encoder.layer"), "attention.self.value", "attention.output.dense", "attention.self")
    elif isinstance(_get(base, "transformer.layer"), nn.ModuleList):
        family, layers, value_path, out_path, self_path = (
            "distilbert", _get(base, "transformer.layer"), "attention.v_lin", "attention.out_lin", "attention")
    elif isinstance(getattr(base, "layers", None), nn.ModuleList) and isinstance(getattr(base, "embed_tokens", None), nn.Embedding):
        # Llama-style decoders: no position embeddings are added (rotary ones act inside
        # attention), so the token embeddings are the first layer's input.
        family, layers, value_path, out_path, self_path = (
            "llama", base.layers, "self_attn.v_proj", "self_attn.o_proj", "self_attn")
        embeddings = word = base.embed_tokens
    else:
        layers = None
    if layers is None or not isinstance(word, nn.Embedding) or len(layers) == 0:
        wrapped = "; pass the wrapped model (model.module)" if isinstance(getattr(model, "module", None), nn.Module) else ""
        raise ValueError(
            f"model {type(model).__name__} (base {type(base).__name__}) is not supported: attribution and "
            f"attention norms need {_SUPPORTED}{wrapped}"
        )
    heads = None
    for attr in ("num_attention_heads", "n_heads"):
        heads = heads or getattr(_get(layers[0], self_path), attr, None)
    heads = heads or getattr(getattr(model, "config", None), "num_attention_heads", None)
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(
            f"model {type(model).__name__}: the number of attention heads could not be read from "
            f"{self_path} or config.num_attention_heads"
        )
    # A LoRA layer around a projection counts: hooks read what it outputs, full_weight what it applies.
    values = tuple(v if is_linear(v) else None for v in (_get(layer, value_path) for layer in layers))
    outputs = tuple(o if is_linear(o) else None for o in (_get(layer, out_path) for layer in layers))
    kv = getattr(getattr(model, "config", None), "num_key_value_heads", None) if family == "llama" else None
    kv = kv if isinstance(kv, int) and kv >= 1 and heads % kv == 0 else heads
    return LayerHandles(family, word, embeddings, tuple(layers), values, outputs, int(heads), int(kv))


# -- keeping the training run untouched -------------------------------------------------------
@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode, autograd on and fp32 inside; each module's mode and the RNG states
    restored after.

    fp32: autocast off, and a mixed-precision wrapper on ``forward`` (accelerate's under
    ``bf16=True`` training) set aside (:func:`~layerwatch.model_utils.own_forward`), so
    the computation runs in the weights' own precision.
    Eval mode switches dropout off, so the computation draws no random numbers; the RNG
    states are restored anyway, so that a module that draws in eval mode cannot shift a
    training run either.
    """
    rng_python = random.getstate()
    rng_numpy = np.random.get_state()
    rng_torch = torch.random.get_rng_state()
    rng_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    device = _device(model)
    no_autocast = (
        torch.autocast(device_type=device.type, enabled=False)
        if device.type in ("cpu", "cuda") else contextlib.nullcontext()
    )
    try:
        # inference_mode(False) as well as enable_grad: a caller inside torch.inference_mode
        # would otherwise get tensors that autograd cannot differentiate.
        with (kept_modes(model), own_forward(model), checked_precision(model), torch.inference_mode(False),
              torch.enable_grad(), no_autocast):
            yield
    finally:
        random.setstate(rng_python)
        np.random.set_state(rng_numpy)
        torch.random.set_rng_state(rng_torch)
        if rng_cuda is not None:
            torch.cuda.set_rng_state_all(rng_cuda)


_device = model_device


def _first(output: Any) -> torch.Tensor:
    # transformers 5 layers return a tensor, transformers 4 a tuple whose first item it is.
    return output[0] if isinstance(output, (tuple, list)) else output


# -- input checks -----------------------------------------------------------------------------
def _check_ids(name: str, value: Any, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids, not {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        raise ValueError(f"{name} has dtype {value.dtype}; pass integer ids (torch.long)")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)}; it must match input_ids, {shape}")
    return value


def _check_int(name: str, value: Any, low: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{name}={value!r} must be an integer >= {low}{extra}")
    return int(value)


# -- baseline ---------------------------------------------------------------------------------
def baseline_ids(input_ids: torch.Tensor, special_ids: Iterable[int], pad_id: int) -> torch.Tensor:
    """The baseline of the token attributions: every token but the special ones made padding.

    The positions stay where they are; pass the input's token types and attention mask
    with it, unchanged.

    Args:
        input_ids: integer ids, any shape (usually (1, tokens)).
        special_ids: ids to keep ([CLS], [SEP], ...: ``tokenizer.all_special_ids``).
        pad_id: the padding id (``tokenizer.pad_token_id``).

    Returns:
        A new tensor of the shape, dtype and device of ``input_ids``.
    """
    _check_ids("input_ids", input_ids)
    if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
        raise ValueError(f"pad_id={pad_id!r} must be an integer token id (tokenizer.pad_token_id)")
    keep = torch.as_tensor([int(i) for i in special_ids], dtype=input_ids.dtype, device=input_ids.device)
    return torch.where(torch.isin(input_ids, keep), input_ids, torch.full_like(input_ids, int(pad_id)))


# -- integrated gradients and conductance ---------------------------------------------------
@dataclass(frozen=True)
class AttributionResult:
    """Token attributions and layer conductance of one example.

    Attributes:
        token_attributions: float64 (tokens,): integrated gradients of the target logit
            with respect to the word embeddings, summed over the embedding dimension.
        conductance: float64 (layers + 1, tokens): row 0 the embedding output, row l the
            output of transformer layer l, summed over hidden units.
        f_x: the target logit at the input.
        f_baseline: the target logit at the baseline.
        completeness_gap: ``|sum(token_attributions) - (f_x - f_baseline)|``.
        target: the class index whose logit is explained.
        steps: intervals of the integration grid.
        method: the rule (:data:`METHOD`).
    """

    token_attributions: np.ndarray
    conductance: np.ndarray
    f_x: float
    f_baseline: float
    completeness_gap: float
    target: int
    steps: int
    method: str = METHOD

    @property
    def conductance_gaps(self) -> np.ndarray:
        """(layers + 1,) ``|sum over tokens of conductance - (f_x - f_baseline)|`` per layer."""
        return np.abs(self.conductance.sum(axis=1) - (self.f_x - self.f_baseline))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays by name, for ``np.savez``."""
        return {
            "token_attributions": self.token_attributions,
            "conductance": self.conductance,
            "f_x": np.float64(self.f_x),
            "f_baseline": np.float64(self.f_baseline),
            "completeness_gap": np.float64(self.completeness_gap),
            "target": np.int64(self.target),
            "steps": np.int64(self.steps),
            "method": np.str_(self.method),
        }


def attribute(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    *,
    target: int | None,
    steps: int = 32,
    batch_size: int = 8,
    baseline: torch.Tensor | None = None,
    special_ids: Sequence[int] | None = None,
) -> AttributionResult:
    """Integrated gradients over tokens and conductance of every layer, for one example.

    Only the word-embedding output is interpolated (a forward hook replaces it) while the
    model runs on the input's ids, mask and token types: it adds the position and
    token-type embeddings once, as for any input (the tutorial's double-counting, captum
    issue #506, cannot happen), and the baseline keeps the input's positions. ``F(x)`` is
    the model on the input; ``F(baseline)`` is the model on the baseline ids for BERT and
    DistilBERT, and for RoBERTa, which counts positions over non-padding ids, the model on
    the baseline ids with the input's ``position_ids``. One path of ``steps + 1`` points,
    ``batch_size`` at a time, gives the token attributions, the conductance of every
    layer, ``F(x)`` and ``F(baseline)`` (see the module's docstring for the rule).

    Nothing of a training run changes: the model runs in eval mode with autograd enabled
    (also under ``torch.no_grad`` or ``torch.inference_mode``), gradients come from
    ``torch.autograd.grad`` with respect to the interpolated embeddings and the hooked
    activations only, so no ``param.grad`` is written; modes, ``requires_grad`` flags and
    RNG states are as before, and every hook is removed, also when the forward raises.

    Args:
        model: a supported classifier (:func:`find_layers`), not wrapped by DDP.
        input_ids: (1, tokens) integer ids of one example.
        attention_mask: (1, tokens), the same for the input and the baseline.
        token_type_ids: (1, tokens) or None (the model's default), the same for both.
        target: the class index of the logit to explain; None explains the predicted class
            (one extra forward pass).
        steps: intervals of the grid (at least 2); the cost is ``steps + 1`` forward and
            backward passes.
        batch_size: grid points per forward and backward pass; the memory needed grows
            with batch_size x tokens (benchmarks/attribution_cost.py measures it).
        baseline: (1, tokens) baseline ids; None builds :func:`baseline_ids` from
            ``special_ids`` and ``model.config.pad_token_id``.
        special_ids: the ids the default baseline keeps (``tokenizer.all_special_ids``).

    Returns:
        An :class:`AttributionResult`.

    Raises:
        ValueError: an argument has a wrong type, shape or value.
    """
    handles = find_layers(model)
    _check_ids("input_ids", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; pass one example, shape (1, tokens)")
    shape = tuple(input_ids.shape)
    _check_ids("attention_mask", attention_mask, shape)
    if token_type_ids is not None:
        _check_ids("token_type_ids", token_type_ids, shape)
    steps = _check_int("steps", steps, 2, "32 is usual")
    batch_size = _check_int("batch_size", batch_size, 1, "8 is usual")
    if baseline is None:
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        if special_ids is None or pad is None:
            raise ValueError(
                "baseline=None needs special_ids= (tokenizer.all_special_ids) and model.config.pad_token_id; "
                "or pass baseline=baseline_ids(input_ids, tokenizer.all_special_ids, tokenizer.pad_token_id)"
            )
        baseline = baseline_ids(input_ids, special_ids, pad)
    _check_ids("baseline", baseline, shape)
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if target is not None:
        hint = f"a class index below num_labels={num_labels}" if num_labels else "a class index"
        target = _check_int("target", target, 0, hint)
        if num_labels and target >= num_labels:
            raise ValueError(f"target={target} must be {hint}")

    device = _device(model)
    input_ids, attention_mask, baseline = (t.to(device) for t in (input_ids, attention_mask, baseline))
    token_type_ids = None if token_type_ids is None else token_type_ids.to(device)
    with _untouched(model):
        # Clones made outside inference mode: tensors a caller made inside it cannot be
        # saved for backward.
        input_ids, attention_mask, baseline = (t.clone() for t in (input_ids, attention_mask, baseline))
        token_type_ids = None if token_type_ids is None else token_type_ids.clone()
        with torch.no_grad():
            e_x = handles.word_embeddings(input_ids).detach()
            e_b = handles.word_embeddings(baseline).detach()
            if target is None:
                target = int(_logits(model, input_ids, attention_mask, token_type_ids)[0].argmax())
        return _integrate(model, handles, input_ids, attention_mask, token_type_ids, e_x, e_b, target, steps,
                          batch_size)


def _logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None) -> torch.Tensor:
    kwargs = model_inputs(model, {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    out = model(**kwargs)
    logits = out.logits if hasattr(out, "logits") else _first(out)
    if logits.dim() != 2:
        raise ValueError(
            f"model {type(model).__name__} returns logits of shape {tuple(logits.shape)}; attribution explains "
            "a sequence classifier's (batch, classes) logits"
        )
    return logits


def _integrate(
    model: nn.Module, handles: LayerHandles, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None, e_x: torch.Tensor, e_b: torch.Tensor, target: int, steps: int,
    batch_size: int,
) -> AttributionResult:
    """Walk the grid ``batch_size`` points at a time; the sums run across chunk boundaries.

    Conductance needs ``L(alpha_{k+1}) - L(alpha_k)``: the last point of each chunk (its
    activations and gradients, per layer) is carried into the next.
    """
    n_points = steps + 1
    alphas = (torch.arange(n_points, dtype=torch.float64) / steps).to(device=e_x.device, dtype=e_x.dtype)
    tokens = input_ids.shape[1]
    n_rows = handles.num_layers + 1
    grad_sum = torch.zeros_like(e_x[0], dtype=torch.float64)  # sum of the gradients at alpha_0..alpha_{steps-1}
    conductance = torch.zeros((n_rows, tokens), dtype=torch.float64, device=e_x.device)
    carry: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # last point of the previous chunk
    f_x = f_b = float("nan")
    state: dict[str, Any] = {}

    def replace_words(_module, _inputs, _output):
        return state["path"]

    def record(index: int):
        def hook(_module, _inputs, output):
            state["acts"][index] = _first(output)
        return hook

    modules = [handles.embeddings, *handles.layers]
    handles_list = []
    try:
        handles_list.append(handles.word_embeddings.register_forward_hook(replace_words))
        handles_list += [m.register_forward_hook(record(i)) for i, m in enumerate(modules)]
        for start in range(0, n_points, batch_size):
            a = alphas[start : start + batch_size].view(-1, 1, 1)
            b = a.shape[0]
            # (1 - a) e_b + a e_x: exactly e_b at a = 0 and exactly e_x at a = 1.
            path = ((1 - a) * e_b + a * e_x).requires_grad_(True)
            state["path"], state["acts"] = path, [None] * n_rows
            logits = _logits(model, input_ids.expand(b, -1), attention_mask.expand(b, -1),
                             None if token_type_ids is None else token_type_ids.expand(b, -1))
            if target >= logits.shape[1]:
                raise ValueError(f"target={target} must be a class index below {logits.shape[1]}")
            out = logits[:, target]
            acts = state["acts"]
            if any(t is None or not t.requires_grad for t in acts):
                raise ValueError(
                    f"model {type(model).__name__}: a hooked layer's output is not on the path from the word "
                    "embeddings to the logits; attribution supports " + _SUPPORTED
                )
            # Gradients with respect to the path and the hooked activations only. The
            # parameters' AccumulateGrad nodes are not on the way to these inputs, so autograd
            # never runs them: no param.grad is written and DDP's gradient hooks (which hang
            # on those nodes) never fire.
            grads = torch.autograd.grad(out.sum(), [path, *acts])
            k = torch.arange(start, start + b, device=e_x.device)
            left = (k < steps).view(-1, 1, 1)  # the gradient at alpha = 1 enters neither sum
            grad_sum += (grads[0] * left).sum(0).double()
            new_carry = []
            for row, (act, grad) in enumerate(zip(acts, grads[1:])):
                act, grad = act.detach(), grad.detach()
                if carry is not None:
                    prev_act, prev_grad = carry[row]
                    conductance[row] += ((act[0] - prev_act) * prev_grad).sum(-1).double()
                if b > 1:
                    conductance[row] += ((act[1:] - act[:-1]) * grad[:-1]).sum(-1).double().sum(0)
                new_carry.append((act[-1].clone(), grad[-1].clone()))  # not views: free the chunk
            carry = new_carry
            if start == 0:
                f_b = float(out[0].detach())
            if start + b == n_points:
                f_x = float(out[-1].detach())
            del grads, acts, out, logits, path
            state.clear()
    finally:
        for h in handles_list:
            h.remove()
        state.clear()
    token_attr = (grad_sum / steps * (e_x[0] - e_b[0]).double()).sum(-1)
    token_attr_np = to_numpy(token_attr)
    gap = abs(float(token_attr_np.sum()) - (f_x - f_b))
    return AttributionResult(token_attr_np, to_numpy(conductance), f_x, f_b, gap, int(target), steps, METHOD)


# -- attention norms ---------------------------------------------------------------------------
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


class NormHooks:
    """Record ``||f_h(x_j)||`` of every layer during a forward pass the caller runs.

    Use it around the one capture forward pass::

        with NormHooks(model) as norms:
            out = model(**batch, output_attentions=True)
        shares = norms.shares(out.attentions, batch["attention_mask"], class_masks)

    On entering, the attention implementation is switched to ``"eager"`` (only it returns
    the probabilities in transformers 5), and switched back on leaving; hooks are removed
    on leaving, also when the forward raises. The hooks only read the value projection's
    output (no gradient, no copy kept beyond the per-head norms).

    Args:
        model: a supported model (:func:`find_layers`) whose layers all have a value and
            an output projection.
        eager: switch to eager attention inside the block.
        keep_values: keep each layer's value-projection output too (:func:`norm_maps`
            uses it for ``||sum_j alpha_ij f(x_j)||``).

    Attributes:
        fnorms: after a forward, one float32 (batch, heads, tokens) tensor per layer.
        values: with ``keep_values``, one (batch, tokens, hidden) tensor per layer.
    """

    def __init__(self, model: nn.Module, eager: bool = True, keep_values: bool = False):
        self.model = model
        self.handles = find_layers(model)
        missing = [i for i, (v, o) in enumerate(zip(self.handles.values, self.handles.outputs)) if v is None or o is None]
        if missing:
            paths = {"bert": "attention.self.value and attention.output.dense", "llama": "self_attn.v_proj and "
                     "self_attn.o_proj"}.get(self.handles.family, "attention.v_lin and attention.out_lin")
            raise ValueError(
                f"model {type(model).__name__}: layers {missing} have no {paths} (nn.Linear); attention norms "
                f"support {_SUPPORTED} with those projections"
            )
        self.eager = bool(eager)
        self.keep_values = bool(keep_values)
        self.fnorms: list[torch.Tensor | None] = [None] * self.handles.num_layers
        self.values: list[torch.Tensor | None] = [None] * self.handles.num_layers
        self._hooks: list[Any] = []
        self._attn: contextlib.ExitStack | None = None

    def _hook(self, index: int):
        w_out = self.handles.outputs[index]
        heads = self.handles.num_heads

        def hook(_module, _inputs, output):
            with torch.no_grad():
                v = self.handles.per_head(output.detach().float())
                self.fnorms[index] = _head_norms(v, full_weight(w_out).to(v.device), heads)
                if self.keep_values:
                    self.values[index] = v.clone()
        return hook

    def __enter__(self) -> "NormHooks":
        stack = contextlib.ExitStack()
        try:
            if self.eager:
                stack.enter_context(eager_attention(self.model))
            for i, v in enumerate(self.handles.values):
                self._hooks.append(v.register_forward_hook(self._hook(i)))
        except BaseException:
            self._remove()
            stack.close()
            raise
        self._attn = stack
        return self

    def _remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._remove()
        finally:
            if self._attn is not None:
                self._attn.close()
                self._attn = None

    def shares(
        self, attentions: Sequence[torch.Tensor], attention_mask: torch.Tensor, class_masks: torch.Tensor
    ) -> torch.Tensor:
        """:func:`norm_shares` of every layer of the last forward pass.

        Args:
            attentions: the forward's ``outputs.attentions``, one (batch, heads, tokens,
                tokens) tensor per layer.
            attention_mask: (batch, tokens).
            class_masks: (batch, classes, tokens) booleans (:func:`token_class_masks`).

        Returns:
            float32 (layers, batch, heads, classes, 2), on the attentions' device.
        """
        if any(f is None for f in self.fnorms):
            raise ValueError("NormHooks.shares() needs a forward pass of the model inside the `with NormHooks(model)` block")
        if attentions is None or len(attentions) != len(self.fnorms):
            got = "None" if attentions is None else f"{len(attentions)} tensors"
            raise ValueError(
                f"attentions={got}; pass the forward's outputs.attentions, one tensor for each of the "
                f"{len(self.fnorms)} layers (run the model with output_attentions=True)"
            )
        return torch.stack(
            [norm_shares(a.detach(), f.to(a.device), attention_mask.to(a.device), class_masks.to(a.device))
             for a, f in zip(attentions, self.fnorms)]
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
    _check_ids("input_ids", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; pass one example, shape (1, tokens)")
    _check_ids("attention_mask", attention_mask, tuple(input_ids.shape))
    if token_type_ids is not None:
        _check_ids("token_type_ids", token_type_ids, tuple(input_ids.shape))
    device = _device(model)
    kwargs = model_inputs(model, {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    hooks = NormHooks(model, keep_values=True)
    with _untouched(model), torch.no_grad(), hooks:
        out = model(**kwargs, output_attentions=True)
        attentions = getattr(out, "attentions", None)
        if attentions is None or len(attentions) != hooks.handles.num_layers:
            raise ValueError(f"model {type(model).__name__} returned no attention probabilities with output_attentions=True")
        heads = hooks.handles.num_heads
        fnorm, attn, mixed = [], [], []
        for a, f, v, o in zip(attentions, hooks.fnorms, hooks.values, hooks.handles.outputs):
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
_PREFIXES = ("##", "\u0120", "\u2581")  # WordPiece continuation, byte-level BPE space, SentencePiece space


def punctuation_ids(vocab: Mapping[str, int]) -> list[int]:
    """Ids of the tokens made only of punctuation (``string.punctuation`` or Unicode P*).

    Args:
        vocab: token -> id (``tokenizer.get_vocab()``).

    Returns:
        Sorted ids.
    """
    out = []
    for token, index in vocab.items():
        text = token
        for prefix in _PREFIXES:
            if text.startswith(prefix) and len(text) > len(prefix):
                text = text[len(prefix):]
        if text and all(ch in string.punctuation or unicodedata.category(ch).startswith("P") for ch in text):
            out.append(int(index))
    return sorted(out)


def token_class_masks(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cls_ids: Iterable[int],
    sep_ids: Iterable[int],
    punct_ids: Iterable[int],
) -> torch.Tensor:
    """Boolean masks of the :data:`TOKEN_CLASSES` of a batch; they partition the real tokens.

    Args:
        input_ids: (batch, tokens).
        attention_mask: (batch, tokens); padding belongs to no class.
        cls_ids: ids counted as "cls" (``[tokenizer.cls_token_id]``, ``<s>``).
        sep_ids: ids counted as "sep" (``[tokenizer.sep_token_id]``, ``</s>``).
        punct_ids: ids counted as "punct" (:func:`punctuation_ids`).

    Returns:
        bool (batch, 4, tokens) in the order of :data:`TOKEN_CLASSES`.
    """
    _check_ids("input_ids", input_ids)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; pass (batch, tokens)")
    _check_ids("attention_mask", attention_mask, tuple(input_ids.shape))

    def member(ids: Iterable[int]) -> torch.Tensor:
        ids = torch.as_tensor([int(i) for i in ids], dtype=input_ids.dtype, device=input_ids.device)
        return torch.isin(input_ids, ids)

    real = attention_mask.to(torch.bool)
    cls = member(cls_ids) & real
    sep = member(sep_ids) & real & ~cls
    punct = member(punct_ids) & real & ~cls & ~sep
    other = real & ~cls & ~sep & ~punct
    return torch.stack([cls, sep, punct, other], dim=1)
