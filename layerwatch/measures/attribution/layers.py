"""The parts of a supported model that attribution and attention norms read, and the
guard that keeps a training run untouched while they run.

Supported: the BERT family (BERT, RoBERTa, ELECTRA, MiniLM, ...), DistilBERT and
Llama-style decoders (:data:`SUPPORTED`).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ...model_utils import checked_precision, kept_modes, model_device, own_forward
from ...sharding import is_linear

__all__ = ["SUPPORTED", "LayerHandles", "find_layers"]

SUPPORTED = (
    "the BERT family (a base model with .embeddings.word_embeddings and .encoder.layer: "
    "BERT, RoBERTa, ELECTRA, MiniLM, ...), DistilBERT (.embeddings.word_embeddings and "
    ".transformer.layer) and Llama-style decoders (.embed_tokens and .layers with self_attn.v_proj and "
    "self_attn.o_proj: Llama, Mistral, Qwen2, ...; grouped-query attention included)"
)


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
            f"attention norms need {SUPPORTED}{wrapped}"
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


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
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
    device = model_device(model)
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


def first_output(output: Any) -> torch.Tensor:
    # transformers 5 layers return a tensor, transformers 4 a tuple whose first item it is.
    return output[0] if isinstance(output, (tuple, list)) else output


def check_ids(name: str, value: Any, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids, not {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        raise ValueError(f"{name} has dtype {value.dtype}; pass integer ids (torch.long)")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)}; it must match input_ids, {shape}")
    return value
