"""The numeric precision of the capture's forward pass (never of training).

``precision="bf16"`` or ``"fp16"`` runs the capture's forward pass under
``torch.autocast``; ``"fp32"`` runs it with autocast disabled; ``"auto"`` picks a half precision
where the hardware runs it fast and fp32 elsewhere:

- a CPU with bf16 matrix instructions (AVX512-BF16 or AMX-BF16): ``"bf16"``;
- a CUDA GPU of compute capability 8.0 or later (Ampere on): ``"bf16"``; 7.x (Volta,
  Turing: fast fp16, bf16 only emulated): ``"fp16"``; older: ``"fp32"``;
- anything else (other CPUs, Apple and other accelerators): ``"fp32"``.

Each measurement pass runs in its precision whatever wraps the model's ``forward``:
accelerate's autocast wrapper (``TrainingArguments(bf16=True)`` or ``fp16=True``) is set
aside for the pass, and a wrapper that cannot be is refused rather than mislabelled (see
:mod:`layerwatch.model_utils`). Weights stored in half precision cannot give fp32; the run
then records ``"bf16 (model weights)"`` (:func:`~layerwatch.model_utils.computed_precision`).

Pooling runs outside autocast and accumulates in float32, so the stored vectors are
float32 whatever the choice. ``benchmarks/precision_fidelity.py`` measures how far a half
precision capture's vectors and metrics are from fp32's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Callable

from .config import PRECISIONS, check_choice

logger = logging.getLogger("layerwatch")

__all__ = ["autocast_available", "autocast_factory", "cpu_has_bf16", "cuda_half", "resolve_precision"]

# x86 feature flags of bf16 matrix instructions, as /proc/cpuinfo names them. Without them
# torch emulates bf16 matrix products on the CPU, which is no faster than fp32.
_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=None)
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16).

    Read from ``cpuinfo`` (Linux's ``/proc/cpuinfo``); where there is none (other systems)
    the answer is False, so ``"auto"`` stays at fp32 there.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return bool(set(flags.split(":", 1)[-1].split()) & _CPU_BF16_FLAGS)


def cuda_half(device: Any) -> str:
    """The half precision a CUDA GPU runs fast: ``"bf16"``, ``"fp16"``, or ``"fp32"`` for none."""
    import torch

    major, _ = torch.cuda.get_device_capability(device)
    if major >= 8:
        return "bf16"
    if major >= 7:
        return "fp16"
    return "fp32"


def _kind(device: Any) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def autocast_available(kind: str) -> bool:
    """Whether ``torch.autocast`` runs on devices of type ``kind`` (``"cpu"``, ``"cuda"``, ...)."""
    import torch

    check = getattr(torch.amp, "is_autocast_available", None)
    if check is None:  # torch < 2.4
        return kind in ("cpu", "cuda")
    return bool(check(kind))


def resolve_precision(setting: str, device: Any) -> str:
    """The precision ``setting`` gives on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ValueError: ``setting`` is not one of :data:`~layerwatch.config.PRECISIONS`, or it
            names a half precision that autocast cannot run on ``device``.
    """
    check_choice("precision", setting, PRECISIONS)
    kind = _kind(device)
    if setting == "auto":
        if kind == "cuda":
            return cuda_half(device)
        if kind == "cpu" and cpu_has_bf16():
            return "bf16"
        return "fp32"
    if setting == "fp32":
        return setting
    if not autocast_available(kind):
        raise ValueError(
            f"precision={setting!r}: torch cannot autocast on the model's device {kind!r}; "
            "pass precision='fp32' (or 'auto', which picks fp32 there)"
        )
    if kind == "cpu" and setting == "fp16":
        logger.warning(
            "layerwatch: precision='fp16' on a CPU is emulated and several times slower than fp32; "
            "'bf16' (on a CPU with bf16 instructions) or 'fp32' are faster"
        )
    elif kind == "cpu" and not cpu_has_bf16():
        logger.warning(
            "layerwatch: precision='bf16' on a CPU without bf16 instructions (AVX512-BF16, AMX) is emulated "
            "and may be slower than fp32; precision='auto' picks fp32 here"
        )
    return setting


def autocast_factory(precision: str, device: Any) -> Callable[[], Any]:
    """A function giving a fresh autocast context per batch.

    ``precision`` is a resolved one (see :func:`resolve_precision`). For ``"fp32"`` the
    context is a disabled autocast, which overrides an autocast context around it (a
    snapshot taken inside a bf16 training step, say); a wrapper on ``forward`` itself is
    set aside by :func:`layerwatch.model_utils.own_forward`.
    """
    check_choice("precision", precision, ("fp32", "bf16", "fp16"))
    import torch

    kind = _kind(device)
    if not autocast_available(kind):
        return contextlib.nullcontext
    if precision == "fp32":
        return lambda: torch.autocast(kind, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(kind, dtype=dtype)
