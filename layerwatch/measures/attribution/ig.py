"""Integrated gradients of a classifier's logit over the tokens, and every layer's conductance.

For the models of :mod:`~layerwatch.measures.attribution.layers`, computed without any
side effect on a training run:

* **token attributions**: integrated gradients (Sundararajan et al. 2017) of one logit
  with respect to the word embeddings, on the straight path from a baseline's word
  embeddings to the input's;
* **layer conductance** (Dhamdhere et al. 2018) of the embedding output and of every
  transformer layer's output, summed over hidden units, per token, all layers from one
  interpolation path.

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

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ...config import check_int
from ...model_utils import model_device, model_inputs, to_numpy
from .layers import SUPPORTED, LayerHandles, check_ids, find_layers, first_output, untouched

__all__ = [
    "CAPTUM_CONDUCTANCE_METHOD",
    "CAPTUM_IG_METHOD",
    "METHOD",
    "AttributionResult",
    "attribute",
    "baseline_ids",
    "head_output",
]

METHOD = "riemann"
"""The rule :func:`attribute` uses: the uniform grid ``k / steps``, ``k = 0..steps``."""
CAPTUM_IG_METHOD = "riemann_left"
"""Captum's ``method`` that gives the same token attributions with the same ``n_steps``."""
CAPTUM_CONDUCTANCE_METHOD = "riemann_trapezoid"
"""Captum's ``method`` that gives the same conductance with the same ``n_steps``."""


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
    check_ids("input_ids", input_ids)
    if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
        raise ValueError(f"pad_id={pad_id!r} must be an integer token id (tokenizer.pad_token_id)")
    keep = torch.as_tensor([int(i) for i in special_ids], dtype=input_ids.dtype, device=input_ids.device)
    return torch.where(torch.isin(input_ids, keep), input_ids, torch.full_like(input_ids, int(pad_id)))


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
    check_ids("input_ids", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; pass one example, shape (1, tokens)")
    shape = tuple(input_ids.shape)
    check_ids("attention_mask", attention_mask, shape)
    if token_type_ids is not None:
        check_ids("token_type_ids", token_type_ids, shape)
    steps = check_int("steps", steps, 2, allowed="an integer >= 2 (32 is usual)")
    batch_size = check_int("batch_size", batch_size, 1, allowed="an integer >= 1 (8 is usual)")
    if baseline is None:
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        if special_ids is None or pad is None:
            raise ValueError(
                "baseline=None needs special_ids= (tokenizer.all_special_ids) and model.config.pad_token_id; "
                "or pass baseline=baseline_ids(input_ids, tokenizer.all_special_ids, tokenizer.pad_token_id)"
            )
        baseline = baseline_ids(input_ids, special_ids, pad)
    check_ids("baseline", baseline, shape)
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if target is not None:
        hint = f"a class index below num_labels={num_labels}" if num_labels else "a class index"
        target = check_int("target", target, 0, allowed=f"an integer >= 0 ({hint})")
        if num_labels and target >= num_labels:
            raise ValueError(f"target={target} must be {hint}")

    device = model_device(model)
    input_ids, attention_mask, baseline = (t.to(device) for t in (input_ids, attention_mask, baseline))
    token_type_ids = None if token_type_ids is None else token_type_ids.to(device)
    with untouched(model):
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


def head_output(head: Any, label: int) -> int:
    """The head's output index of label id ``label`` (attribution_target='label')."""
    table = getattr(head, "to_label", None)
    if table is None:
        raise ValueError(
            "attribution_target='label' needs the head's outputs matched to the labels "
            f"({getattr(head, 'reason', '')}); pass attribution_target='prediction'"
        )
    try:
        return list(table).index(label)
    except ValueError:
        raise ValueError(f"label id {label} matches no output of the classification head") from None


def _logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None) -> torch.Tensor:
    kwargs = model_inputs(model, {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    out = model(**kwargs)
    logits = out.logits if hasattr(out, "logits") else first_output(out)
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
            state["acts"][index] = first_output(output)
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
                    "embeddings to the logits; attribution supports " + SUPPORTED
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
