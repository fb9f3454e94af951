"""Pure tensor functions that turn token states into one vector per row.

Each takes ``hidden`` of shape (batch, tokens, dim) and returns (batch, dim) in float32,
also when called under ``torch.autocast`` (a half precision capture): the sums are taken
in float32 whatever the dtype of ``hidden``.
"""

from __future__ import annotations

import contextlib

import torch


def _full_precision(device: torch.device):
    """Autocast switched off on ``device``: under it ``bmm`` would run in bf16/fp16."""
    from .precision import autocast_available

    if autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens whose mask is 1; padding never enters the sum.

    A row with no unmasked token gives a vector of zeros rather than NaN.
    """
    with _full_precision(hidden.device):
        mask = attention_mask.to(device=hidden.device, dtype=torch.float32)
        # (batch, 1, tokens) @ (batch, tokens, dim): the masked sum without a masked copy of
        # ``hidden`` (no temporary as large as the hidden states themselves).
        summed = torch.bmm(mask.unsqueeze(1), hidden.to(torch.float32)).squeeze(1)
        count = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return summed / count


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The first token's state (``[CLS]`` for BERT-style models)."""
    return hidden[:, 0].to(torch.float32)


def last_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last real token's state (what decoder-only classifiers read), wherever the
    padding is."""
    mask = attention_mask.to(torch.long)
    width = mask.shape[1]
    # Position of the last 1 in each row: the first 1 of the row read backwards.
    last = width - 1 - mask.flip(1).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)].to(torch.float32)


POOLERS = {"mean": mean_pool, "cls": cls_pool, "last": last_pool}


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Pool ``hidden`` with the named method (``"mean"``, ``"cls"`` or ``"last"``)."""
    try:
        fn = POOLERS[method]
    except KeyError:
        raise ValueError(f"pooling={method!r} is not one of {', '.join(map(repr, POOLERS))}") from None
    return fn(hidden, attention_mask)
