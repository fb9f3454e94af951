"""Sharded models (FSDP 1 and 2, DeepSpeed ZeRO-3): which engine holds the weights, which
module's forward gathers them, and reading one weight whole.

Under sharding each rank holds a slice of every weight; a module's weights are gathered
by collectives inside its forward pass, which every rank must run, in the same order. So
the capture runs in lockstep on every rank (see :func:`layerwatch.capturing.capture_split`),
and a weight a measurement reads is read through :func:`full_weight`, which gathers it
(a collective as well, reached by every rank because it runs in the same lockstep forward)
and lets the gathered copy go after the read.

A leaf module: torch only, no layerwatch imports.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["ENGINES", "engine", "full_weight", "is_linear", "released", "runner"]

ENGINES = {"fsdp1": "FSDP (FullyShardedDataParallel)", "fsdp2": "FSDP2 (fully_shard)", "zero3": "DeepSpeed ZeRO-3"}


def _fsdp2_type() -> Any:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - older torch
        return None
    return FSDPModule


def _fsdp1_type() -> Any:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return None
    return FullyShardedDataParallel


def engine(model: Any) -> str | None:
    """``"fsdp2"``, ``"fsdp1"``, ``"zero3"`` when ``model`` (or a module inside it) is
    sharded by that engine, else None."""
    if not isinstance(model, nn.Module):
        return None
    fsdp2, fsdp1 = _fsdp2_type(), _fsdp1_type()
    for module in model.modules():
        if fsdp2 is not None and isinstance(module, fsdp2):
            return "fsdp2"
        if fsdp1 is not None and isinstance(module, fsdp1):
            return "fsdp1"
    for p in model.parameters():
        # DeepSpeed ZeRO-3 marks each partitioned parameter with its id and status.
        if hasattr(p, "ds_id") and hasattr(p, "ds_status"):
            return "zero3"
        break
    return None


def runner(model: Any, wrapped: Any = None) -> Any:
    """The module whose ``forward`` gathers the shards of ``model``.

    FSDP2 and ZeRO-3 gather in hooks on the model's own modules, so ``model`` itself.
    FSDP1 gathers in the wrapper's ``forward`` only (``trainer.model_wrapped``), so the
    wrapper around ``model`` when one is given.
    """
    fsdp1 = _fsdp1_type()
    if wrapped is not None and wrapped is not model and fsdp1 is not None:
        for module in (wrapped, *getattr(wrapped, "modules", lambda: ())()):
            if isinstance(module, fsdp1):
                return module
    return model


def released(model: Any) -> None:
    """Give back what a capture gathered: FSDP2 keeps the root's weights whole after a
    forward (its heuristic for training, where a backward pass follows); reshard them."""
    fsdp2 = _fsdp2_type()
    if fsdp2 is None or not isinstance(model, nn.Module):
        return
    for module in model.modules():
        if isinstance(module, fsdp2):
            module.reshard()


@contextlib.contextmanager
def _gathered(params: list[nn.Parameter]) -> Iterator[None]:
    zero = [p for p in params if hasattr(p, "ds_id")]
    if not zero:
        yield
        return
    import deepspeed  # present wherever ZeRO-3 parameters exist

    with deepspeed.zero.GatheredParameters(zero, modifier_rank=None):
        yield


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    # FSDP2 outside its unit's forward: a DTensor shard; full_tensor() all-gathers it.
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def full_weight(linear: nn.Module) -> torch.Tensor:
    """The weight ``linear`` applies, whole, as a detached float32 copy.

    - Sharded: gathered for the read (FSDP2 DTensor shards, ZeRO-3 partitions) and
      released after it; every rank must call it at the same point (inside a lockstep
      forward pass, as the capture's hooks do).
    - A PEFT LoRA layer: the base weight plus the active adapters' ``B A * scaling``
      (what the adapted layer computes, unless dropout is on: the capture runs in eval mode).
    - A plain ``nn.Linear``: its weight.
    """
    base = getattr(linear, "base_layer", None)
    if isinstance(base, nn.Module) and hasattr(linear, "get_delta_weight"):
        params = [base.weight]
        adapters = [a for a in _active_adapters(linear) if a in getattr(linear, "lora_A", {})]
        for a in adapters:
            params += [linear.lora_A[a].weight, linear.lora_B[a].weight]
        with _gathered(params):
            w = _whole(base.weight).detach().float().clone()
            if not getattr(linear, "merged", False):
                for a in adapters:
                    w = w + _whole(linear.get_delta_weight(a)).detach().float()
        return w
    with _gathered([linear.weight]):
        return _whole(linear.weight).detach().float().clone()


def _active_adapters(layer: nn.Module) -> list[str]:
    active = getattr(layer, "active_adapters", None)
    if active is None:
        active = getattr(layer, "active_adapter", [])
    if isinstance(active, str):
        active = [active]
    if getattr(layer, "disable_adapters", False):
        return []
    return list(active)


def is_linear(module: Any) -> bool:
    """An ``nn.Linear``, or an adapter layer around one (PEFT LoRA's ``base_layer``)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(getattr(module, "base_layer", None), nn.Linear) and hasattr(module, "get_delta_weight")
