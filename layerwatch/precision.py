"""The numeric precision of the capture's forward pass (never of training).

``precision="bf16"`` or ``"fp16"`` runs the capture under ``torch.autocast``; ``"auto"``
picks a half precision where the hardware runs it fast and fp32 elsewhere. Stored vectors
are float32 whatever the choice (pooling accumulates in float32).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from .config import PRECISIONS, check_choice


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    words = set(flags.split())
    return bool(words & {"avx512_bf16", "amx_bf16"})


def resolve_precision(setting: str, device: Any) -> str:
    """The precision ``setting`` gives on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
    check_choice("precision", setting, PRECISIONS)
    kind = getattr(device, "type", str(device))
    if setting != "auto":
        return setting
    if kind == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def autocast_factory(precision: str, device: Any) -> Callable[[], Any] | None:
    """A function giving a fresh autocast context per batch, or None for fp32."""
    if precision == "fp32":
        return None
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    kind = getattr(device, "type", str(device))
    if kind not in ("cpu", "cuda"):
        return contextlib.nullcontext
    return lambda: torch.autocast(kind, dtype=dtype)
