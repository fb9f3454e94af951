"""Model helpers shared by every measurement pass (capture, attention, attribution).

A leaf module: it imports torch and :mod:`layerwatch.precision` only, so that
:mod:`layerwatch.capturing` and every measurement can use it without an import circle.

Whatever accelerate, PEFT, ``torch.compile`` or the user put around the model, a pass
decides for itself (see docs/guarantees.md):

- which inputs reach the model: :func:`accepted_inputs` follows ``**kwargs`` to the
  wrapped model;
- which mode each module is in: :func:`kept_modes` records every module's ``training``
  flag and restores each one;
- in which precision it runs: :func:`own_precision` sets aside the mixed-precision
  wrapper accelerate puts on ``forward`` under ``bf16=True`` / ``fp16=True`` and opens
  the pass's own autocast context (disabled for fp32); :func:`computed_precision` says what
  was truly used, the weights' own dtype included;
- how results leave torch: :func:`to_numpy` (bf16 has no numpy dtype).
"""

from __future__ import annotations

import contextlib
import inspect
import types
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "accepted_inputs",
    "checked_precision",
    "computed_precision",
    "eager_attention",
    "inner_model",
    "kept_modes",
    "model_device",
    "model_inputs",
    "own_forward",
    "own_precision",
    "to_numpy",
    "unwrap",
    "weights_precision",
]

# Attributes under which wrappers keep the model they wrap: torch.compile, DDP / DataParallel,
# PEFT (PeftModel.model: the task model with the adapters in it; base_model is the
# encoder inside a task model), and many users' own wrappers.
_INNER = ("_orig_mod", "module", "model", "base_model")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy of ``tensor``: half-precision floats (bf16, fp16) become float32, since
    numpy has no bf16; float32, float64 and integer tensors keep their dtype."""
    tensor = tensor.detach()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.cpu().numpy()


def _is_hf_model(module: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, PreTrainedModel)


def inner_model(module: Any) -> Any:
    """The module one wrapper level inside ``module``, or None."""
    for attr in _INNER:
        inner = getattr(module, attr, None)
        if isinstance(inner, torch.nn.Module) and inner is not module:
            return inner
    get = getattr(module, "get_base_model", None)
    inner = get() if callable(get) else None
    if isinstance(inner, torch.nn.Module) and inner is not module:
        return inner
    return None


def unwrap(model: Any) -> Any:
    """The Hugging Face model inside wrappers (PEFT, DDP, ``torch.compile``), or ``model``."""
    seen = set()
    current = model
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_hf_model(current):
            return current
        current = inner_model(current)
    return model


def accepted_inputs(model: Any) -> set[str] | None:
    """The input names ``model`` accepts, or None when it takes any keyword.

    A name is accepted when the ``forward`` names it, or when the ``forward`` takes
    ``**kwargs`` and the model it wraps accepts it: PEFT's
    ``PeftModelForSequenceClassification.forward(input_ids=None, attention_mask=None, ...,
    **kwargs)`` hands ``token_type_ids`` to BERT through ``**kwargs``; ``torch.compile`` and
    users' wrappers with ``forward(**kwargs)`` do the same. The walk stops at a Hugging Face
    model (its ``**kwargs`` are options, not inputs) or at a ``forward`` without
    ``**kwargs``. A wrapper with ``**kwargs`` around no module it names (nor a single child)
    accepts anything.
    """
    names: set[str] = set()
    seen = set()
    current = model
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            params = inspect.signature(current.forward).parameters
        except (TypeError, ValueError, AttributeError):
            return None
        names |= {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        open_ended = any(p.kind == p.VAR_KEYWORD for p in params.values())
        if not open_ended or _is_hf_model(current):
            return names
        inner = inner_model(current)
        if inner is None and isinstance(current, torch.nn.Module):
            children = list(current.children())
            inner = children[0] if len(children) == 1 else None
        if inner is None:
            return None
        current = inner
    return names or None


# What every model of the families layerwatch reads takes; other inputs (token types) are
# passed only where the model accepts them.
_ALWAYS = frozenset({"input_ids", "attention_mask"})


def model_inputs(model: Any, feed: dict[str, Any]) -> dict[str, Any]:
    """The items of ``feed`` that ``model`` accepts (:func:`accepted_inputs`); None values
    and inputs it does not take (``token_type_ids`` for DistilBERT) are left out."""
    accepted = accepted_inputs(model)
    return {
        k: v for k, v in feed.items()
        if v is not None and (accepted is None or k in accepted or k in _ALWAYS)
    }


@contextlib.contextmanager
def forward_hooks(pairs: Sequence[tuple[torch.nn.Module, Any]]) -> Iterator[None]:
    """Each ``(module, hook)`` of ``pairs`` registered as a forward hook inside the block,
    all removed when it ends, also when the forward pass raises."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def eager_attention(model: Any, wanted: bool = True) -> Iterator[None]:
    """Switch the model to eager attention (the only one that returns weights) inside the
    block when ``wanted``, and back afterwards, also when the block raises."""
    target = unwrap(model)
    config = getattr(target, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = wanted and before not in (None, "eager") and hasattr(target, "set_attn_implementation")
    if switch:
        target.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            target.set_attn_implementation(before)


@contextlib.contextmanager
def kept_modes(model: torch.nn.Module, to_eval: bool = True) -> Iterator[None]:
    """Every module in eval mode inside the block (when ``to_eval``), and each one's own
    ``training`` flag back afterwards, also when the block raises.

    ``model.train(was_training)`` would set every submodule to the top module's mode; a
    submodule the user keeps in eval on purpose (a frozen encoder, batch norm with fixed
    statistics) must come back in eval.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        if to_eval:
            model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


# -- precision ---------------------------------------------------------------------------------
# Wrappers that set the precision of a forward pass from outside it: accelerate's
# convert_outputs_to_fp32 (and its ConvertOutputsToFp32 object) and torch.autocast used as a
# decorator. Each keeps what it wraps in ``__wrapped__``.
_PRECISION_WRAPPERS = frozenset({"convert_outputs_to_fp32.<locals>.forward", "autocast_decorator.<locals>.decorate_autocast"})


def _is_precision_wrapper(fn: Any) -> bool:
    fn = getattr(fn, "__func__", fn)
    if not hasattr(fn, "__wrapped__"):
        return False
    # The code's own name: functools.wraps gives the wrapper the wrapped function's __qualname__.
    code = getattr(fn, "__code__", None)
    return type(fn).__name__ == "ConvertOutputsToFp32" or getattr(code, "co_qualname", "") in _PRECISION_WRAPPERS


def _bare_forward(module: torch.nn.Module) -> Any:
    """The forward ``module`` had before a mixed-precision wrapper was put on it, or None."""
    own = vars(module).get("forward")
    if own is None or not _is_precision_wrapper(own):
        return None
    # accelerate keeps the forward it wrapped (``Accelerator.prepare_model``); it may itself
    # be a wrapper that must stay (accelerate's device-placement hooks, say).
    original = vars(module).get("_original_forward")
    fn = own if original is None else original
    while _is_precision_wrapper(fn):  # a model prepared twice keeps a wrapper as its original
        fn = getattr(fn, "__func__", fn).__wrapped__
    if isinstance(fn, types.FunctionType) and "self" in inspect.signature(fn).parameters:
        fn = types.MethodType(fn, module)
    return fn


@contextlib.contextmanager
def own_forward(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, every module's ``forward`` without the mixed-precision wrapper
    that accelerate (``bf16=True`` / ``fp16=True`` training) or a ``torch.autocast``
    decorator put on it; the wrappers are back afterwards, also when the block raises.

    Such a wrapper opens its autocast context inside ``forward``, where an autocast
    context opened around the call cannot override it.
    """
    changed = []
    try:
        for module in model.modules():
            bare = _bare_forward(module)
            if bare is not None:
                changed.append((module, vars(module)["forward"]))
                module.forward = bare
        yield
    finally:
        for module, wrapped in changed:
            module.forward = wrapped


_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@contextlib.contextmanager
def checked_precision(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, the first forward pass of ``model`` must compute in the precision
    set around the call (the autocast context, else the weights' dtype), or it raises.

    A wrapper on ``forward`` that :func:`own_forward` cannot recognise may open an autocast
    context of its own; then the pass would not run in the precision the run records, and
    a ValueError says so rather than storing vectors under a false label. Read from the
    output dtype of the first ``nn.Linear`` with floating-point weights.
    """
    linear = next((m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.is_floating_point()), None)
    kind = linear.weight.device.type if linear is not None else None
    if kind not in ("cpu", "cuda"):
        yield
        return
    state: dict[str, Any] = {}

    def before(_module, _args):
        if "done" not in state:
            on = torch.is_autocast_enabled(kind)
            state["want"] = torch.get_autocast_dtype(kind) if on else linear.weight.dtype

    def after(_module, _inputs, output):
        want = state.pop("want", None)
        if want is None or not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        state["done"] = True
        if output.dtype != want:
            got, asked = _NAMES.get(output.dtype, str(output.dtype)), _NAMES.get(want, str(want))
            raise ValueError(
                f"the forward pass of {type(model).__name__} computed in {got} although layerwatch ran it in "
                f"{asked}: a wrapper around its forward sets a precision of its own that layerwatch cannot set "
                f"aside; remove that wrapper, or pass precision={got!r} so that the run records what it computes"
            )

    handles = [model.register_forward_pre_hook(before), linear.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def weights_precision(model: torch.nn.Module) -> str | None:
    """``"bf16"`` or ``"fp16"`` when most of the model's floating-point weights are stored
    in that half precision, ``"fp32"`` otherwise; None for a model without any."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    if not counts:
        return None
    dtype = max(counts, key=counts.get)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def computed_precision(precision: str, model: torch.nn.Module) -> str:
    """What a pass asked to run in ``precision`` (a resolved one) truly computes in.

    fp32 cannot be had from weights stored in half precision (``model.to(torch.bfloat16)``):
    the pass then runs in the weights' precision and says so (``"bf16 (model weights)"``)
    rather than casting a copy of the model. A half precision asked for is what autocast
    runs the matrix products in, whatever the weights.
    """
    weights = weights_precision(model)
    if precision == "fp32" and weights in ("bf16", "fp16"):
        return f"{weights} (model weights)"
    return precision


@contextlib.contextmanager
def own_precision(model: torch.nn.Module, precision: str) -> Iterator[None]:
    """Run the block in ``precision`` (``"fp32"``, ``"bf16"`` or ``"fp16"``), whatever
    wrapper is around ``forward`` and whatever autocast context is around the call.

    Sets aside mixed-precision wrappers (:func:`own_forward`) and opens an autocast
    context of its own: disabled for fp32 (which overrides any autocast around it), or
    with the half precision's dtype; a wrapper that still decides otherwise is refused
    (:func:`checked_precision`).
    """
    from .precision import autocast_factory

    make = autocast_factory(precision, model_device(model))
    with own_forward(model), checked_precision(model), make():
        yield
