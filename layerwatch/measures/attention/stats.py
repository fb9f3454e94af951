"""Attention statistics: per-head numbers from one layer's attention probabilities.

Everything here is a pure function. :func:`row_head_stats` reduces one batch of one
layer to a (batch, heads, statistics) tensor, so a snapshot pass can reduce each batch as
it comes and keep sums and counts, never a (rows, heads, tokens, tokens) tensor for all
rows. How heads move between snapshots (drift, pattern labels) is
:mod:`~layerwatch.measures.attention.patterns`.

Conventions, shared by every function:

* Attention tensors hold probabilities with the **query on the second-to-last axis and
  the key on the last**: ``attn[b, h, i, j]`` is how much query token ``i`` attends to key
  token ``j`` (the layout of transformers' ``output_attentions``).
* Only **real** tokens count (``mask`` is 1 for them). Each query's weights are first
  renormalised over the real keys, so whatever sits in padded rows or columns never
  changes a statistic; statistics are then averaged over the real queries of each row.
* **Positions** are positions among a row's real tokens (0 for its first real token), so a
  left-padded row gives the same numbers as the same row padded on the right.

torch is imported inside the functions that need it: the token ids serve a pass before
any tensor exists, and :mod:`~layerwatch.measures.attention.patterns` reads a stored run
without loading torch.
"""

from __future__ import annotations

import string
import unicodedata
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "STATS",
    "punctuation_ids",
    "row_head_stats",
    "special_token_ids",
    "token_class_masks",
]

STATS = ("entropy", "entropy_norm", "max_weight", "first", "sep", "punct", "self", "prev", "next", "distance")

# Marks that sub-word tokenizers put on a piece: WordPiece continuation, byte-level BPE
# and SentencePiece word starts, and the end-of-word suffix of some BPE vocabularies.
_PIECE_PREFIXES = ("##", "\u0120", "\u2581")
_PIECE_SUFFIXES = ("</w>",)


def _shape_error(name: str, value: Any, expected: str, fix: str) -> ValueError:
    shape = tuple(getattr(value, "shape", ())) or type(value).__name__
    return ValueError(f"{name} has shape {shape}; expected {expected}; {fix}")


def row_head_stats(
    attn: "torch.Tensor",
    mask: "torch.Tensor",
    sep_mask: "torch.Tensor",
    punct_mask: "torch.Tensor",
) -> "torch.Tensor":
    """Per-row, per-head attention statistics of one layer, for one batch.

    For each row and head, every statistic is computed per real query over the real keys
    (weights renormalised over them) and averaged over the row's real queries. With
    ``a[i, j]`` the renormalised weight of query ``i`` on key ``j``, ``n`` the row's
    number of real tokens and ``i``, ``j`` positions among the real tokens:

    * ``entropy``: ``-sum_j a[i, j] log a[i, j]`` in nats (``0 log 0 = 0``).
    * ``entropy_norm``: ``entropy / log(n)``, 1 for uniform attention; defined as 0 when
      ``n = 1`` (a single token has no spread to measure).
    * ``max_weight``: ``max_j a[i, j]``.
    * ``first``: mass on the first real token (``[CLS]`` for BERT).
    * ``sep``: mass on the tokens of ``sep_mask`` (separator / end tokens).
    * ``punct``: mass on the tokens of ``punct_mask``.
    * ``self``: ``a[i, i]``.
    * ``prev``: ``a[i, i-1]``, query ``i`` attending to the token **before** it (0 for
      the first token).
    * ``next``: ``a[i, i+1]``, query ``i`` attending to the token **after** it (0 for the
      last token).
    * ``distance``: ``sum_j |i - j| a[i, j]``, the mean distance attended over, in tokens.

    A real query whose weights on the real keys sum to zero contributes zero to every
    statistic. Work is vectorised over the batch; besides the inputs it allocates two
    tensors the size of ``attn`` (float32, or float64 for float64 input) and smaller ones.

    Args:
        attn: (batch, heads, T, T) attention probabilities of one layer, any float dtype.
        mask: (batch, T), nonzero for real tokens; rows may be padded on either side.
        sep_mask: (batch, T) booleans, True on separator / end tokens.
        punct_mask: (batch, T) booleans, True on punctuation tokens.

    Returns:
        (batch, heads, len(STATS)) float32 tensor on ``attn``'s device, statistics in
        the order of :data:`STATS`. Averaging over rows (sum and count, so that ranks can
        be gathered) is left to the caller.

    Raises:
        ValueError: on a shape mismatch, or a row without any real token.
    """
    import torch

    attn = torch.as_tensor(attn)
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise _shape_error("attn", attn, "(batch, heads, T, T)", "pass one layer's attention probabilities")
    if not attn.is_floating_point():
        raise ValueError(f"attn has dtype {attn.dtype}; expected a float dtype; pass attention probabilities")
    batch, heads, width, _ = attn.shape
    real = torch.as_tensor(mask, device=attn.device) != 0
    if tuple(real.shape) != (batch, width):
        raise _shape_error("mask", mask, f"(batch, T) = ({batch}, {width})", "pass the batch's attention_mask")
    sep = torch.as_tensor(sep_mask, device=attn.device) != 0
    punct = torch.as_tensor(punct_mask, device=attn.device) != 0
    for name, value in (("sep_mask", sep), ("punct_mask", punct)):
        if tuple(value.shape) != (batch, width):
            raise _shape_error(name, value, f"(batch, T) = ({batch}, {width})", "build it with token_class_masks")
    n = real.sum(1)
    if batch and bool((n == 0).any()):
        row = int(torch.nonzero(n == 0)[0, 0])
        raise ValueError(f"mask row {row} has no real token; drop empty rows before measuring attention")

    dtype = torch.float64 if attn.dtype == torch.float64 else torch.float32
    fast = _fast_stats(attn, real, sep, punct, n, dtype)
    if fast is not None:
        return fast
    # A private copy: everything below works in place on it.
    a = attn.to(dtype=dtype, copy=True)
    # masked_fill rather than a product, so NaN or inf garbage in padding cannot leak;
    # one (batch, 1, T, T) pair mask clears padded queries and keys in a single pass.
    a.masked_fill_(~(real[:, None, :, None] & real[:, None, None, :]), 0.0)
    a.div_(a.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny))

    # Per-query statistics, each (batch, heads, T); padded queries are all-zero rows of
    # ``a`` and so contribute zero to every one of them.
    buf = torch.special.xlogy(a, a)
    entropy = -buf.sum(-1)
    max_weight = a.amax(-1)
    first_index = real.to(torch.int8).argmax(1)  # first True of each row
    first = a.gather(-1, first_index.view(batch, 1, 1, 1).expand(batch, heads, width, 1)).squeeze(-1)
    # Both masses in one matrix product: (batch, heads, T, T) @ (batch, 1, T, 2).
    classes = torch.stack([sep & real, punct & real], dim=-1).to(dtype)[:, None]
    sep_mass, punct_mass = torch.matmul(a, classes).unbind(-1)
    self_mass = a.diagonal(dim1=-2, dim2=-1)
    # Offsets between real positions (key minus query), so gaps of padding are skipped.
    position = (real.cumsum(1) - 1).to(dtype)
    offset = (position[:, None, :] - position[:, :, None])[:, None]  # (batch, 1, T, T)
    prev = torch.mul(a, offset == -1, out=buf).sum(-1)
    nxt = torch.mul(a, offset == 1, out=buf).sum(-1)
    distance = torch.mul(a, offset.abs(), out=buf).sum(-1)
    del buf

    return _row_means(n, dtype, entropy, max_weight, first, sep_mass, punct_mass, self_mass, prev, nxt, distance)


def _row_means(n, dtype, entropy, max_weight, first, sep_mass, punct_mass, self_mass, prev, nxt, distance) -> "torch.Tensor":
    """Per-query statistics (zero at padded queries) averaged over each row's real queries."""
    import torch

    count = n.to(dtype)[:, None]  # (batch, 1)

    def mean(per_query: "torch.Tensor") -> "torch.Tensor":
        return per_query.sum(-1) / count

    entropy_mean = mean(entropy)
    log_n = torch.log(count)
    entropy_norm = torch.where(count > 1, entropy_mean / torch.where(count > 1, log_n, 1.0), 0.0)
    columns = {
        "entropy": entropy_mean,
        "entropy_norm": entropy_norm,
        "max_weight": mean(max_weight),
        "first": mean(first),
        "sep": mean(sep_mass),
        "punct": mean(punct_mass),
        "self": mean(self_mass),
        "prev": mean(prev),
        "next": mean(nxt),
        "distance": mean(distance),
    }
    return torch.stack([columns[s] for s in STATS], dim=-1).to(torch.float32)


def _fast_stats(attn, real, sep, punct, n, dtype) -> "torch.Tensor | None":
    """The same statistics in fewer passes over the attention tensor, for the usual case.

    Rows whose real tokens are contiguous (padded on the right, as the capture pads them,
    or on the left) and finite weights: the masks are products (no masked copy), each
    query's weights are normalised after the reductions (``-sum p log p = log r - sum w
    log w / r`` with ``r`` the mass on real keys), and ``self``, ``prev`` and ``next`` are
    diagonals. Returns None when the rows have holes or a result is not finite, and the
    caller takes the general path.
    """
    import torch

    width = real.shape[1]
    start = real.to(torch.int8).argmax(1)
    # Contiguous rows: the real tokens are exactly positions start .. start + n - 1.
    index = torch.arange(width, device=real.device)
    if not bool((((index >= start[:, None]) & (index < (start + n)[:, None])) == real).all()):
        return None
    keys = real.to(dtype)
    w = attn.to(dtype) * keys[:, None, None, :]  # weights on real keys only
    r = w.sum(-1)
    safe_r = r.clamp_min(torch.finfo(dtype).tiny)
    # Weights below 1e-30 add less than 1e-28 to the entropy; clamping there (rather than
    # at the smallest normal float) keeps log() away from subnormal numbers, which some
    # CPUs compute many times slower.
    logged = w.clamp_min(1e-30)
    logged.log_()
    logged.mul_(w)
    entropy = (torch.log(safe_r) - logged.sum(-1) / safe_r)
    del logged
    queries = keys[:, None, :]
    max_weight = w.amax(-1) / safe_r
    first = w.gather(-1, start.view(-1, 1, 1, 1).expand(w.shape[0], w.shape[1], width, 1)).squeeze(-1) / safe_r
    sep_mass = (w * (sep & real).to(dtype)[:, None, None, :]).sum(-1) / safe_r
    punct_mass = (w * (punct & real).to(dtype)[:, None, None, :]).sum(-1) / safe_r
    # Diagonals: a[i, i], a[i, i-1] and a[i, i+1], zero where the neighbour is padding
    # (w is zero there) or outside the row.
    diag = w.diagonal(0, -2, -1)
    below = torch.nn.functional.pad(w.diagonal(-1, -2, -1), (1, 0))
    above = torch.nn.functional.pad(w.diagonal(1, -2, -1), (0, 1))
    distance_weights = (index[:, None] - index[None, :]).abs().to(dtype)  # contiguous: |i - j|
    distance = (w * distance_weights).sum(-1) / safe_r
    stats = [entropy, max_weight, first, sep_mass, punct_mass, diag / safe_r, below / safe_r, above / safe_r, distance]
    # Padded queries contribute nothing (their rows of w may hold any finite values).
    stats = [s * queries for s in stats]
    out = _row_means(n, dtype, *stats)
    return out if bool(torch.isfinite(out).all()) else None


def token_class_masks(
    input_ids: "torch.Tensor",
    mask: "torch.Tensor",
    sep_ids: Iterable[int],
    punct_ids: Iterable[int],
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Boolean masks of the separator and punctuation tokens of a batch.

    Args:
        input_ids: (batch, T) token ids.
        mask: (batch, T), nonzero for real tokens; padded positions are never marked.
        sep_ids: ids of separator / end tokens (see :func:`special_token_ids`).
        punct_ids: ids of punctuation tokens (see :func:`punctuation_ids`).

    Returns:
        ``(sep_mask, punct_mask)``, two (batch, T) bool tensors on ``input_ids``' device.
    """
    import torch

    ids = torch.as_tensor(input_ids)
    real = torch.as_tensor(mask, device=ids.device) != 0
    if ids.ndim != 2:
        raise _shape_error("input_ids", ids, "(batch, T)", "pass a batch of token ids")
    if real.shape != ids.shape:
        raise _shape_error("mask", mask, f"the shape of input_ids {tuple(ids.shape)}", "pass the batch's attention_mask")

    def member(values: Iterable[int]) -> "torch.Tensor":
        values = sorted({int(v) for v in values})
        if not values:
            return torch.zeros_like(real)
        return torch.isin(ids, torch.tensor(values, dtype=ids.dtype, device=ids.device)) & real

    return member(sep_ids), member(punct_ids)


def _ids_of(source: Any, names: Iterable[str]) -> set[int]:
    found: set[int] = set()
    for name in names:
        value = getattr(source, name, None)
        if value is None:
            continue
        # eos_token_id may be a list in some configs (several end tokens).
        for v in value if isinstance(value, (list, tuple, set)) else (value,):
            if v is not None:
                found.add(int(v))
    return found


def special_token_ids(config: Any, tokenizer: Any = None) -> set[int]:
    """The ids of separator and end tokens (``sep_token_id``, ``eos_token_id``).

    The tokenizer's ids are used when a tokenizer is given (they are the ids the rows were
    encoded with); without one, or when it defines neither, the model config's. A config
    may define neither (BERT's does not): then the ``sep`` statistic is 0 for every head,
    so pass the tokenizer where there is one.

    Args:
        config: The model config (``model.config``), or None.
        tokenizer: The tokenizer that encoded the rows, or None.

    Returns:
        A set of token ids, possibly empty.
    """
    names = ("sep_token_id", "eos_token_id")
    found = _ids_of(tokenizer, names) if tokenizer is not None else set()
    if not found and config is not None:
        found = _ids_of(config, names)
    return found


def _is_punctuation_char(char: str) -> bool:
    # Unicode punctuation, plus the ASCII symbols ($, +, <, ...) that BERT's basic
    # tokenizer also splits off as punctuation.
    return unicodedata.category(char).startswith("P") or char in string.punctuation


def _piece_text(token: str) -> str:
    """A token's text without sub-word markers (a bare marker is kept as text)."""
    for prefix in _PIECE_PREFIXES:
        if token.startswith(prefix) and len(token) > len(prefix):
            token = token[len(prefix):]
            break
    for suffix in _PIECE_SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix):
            token = token[: -len(suffix)]
            break
    return token


def punctuation_ids(tokenizer: Any) -> set[int]:
    """The ids of tokens whose text is only punctuation.

    A token's text is taken after stripping one sub-word marker (``##``, ``Ġ``, ``▁``
    at the start, ``</w>`` at the end); special tokens are never punctuation.

    Args:
        tokenizer: A tokenizer with ``get_vocab()`` (token -> id).

    Returns:
        A set of token ids.
    """
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        raise ValueError(
            f"tokenizer={type(tokenizer).__name__} has no get_vocab(); pass a transformers tokenizer"
        )
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", ()) or ()}
    found = set()
    for token, index in get_vocab().items():
        if int(index) in special:
            continue
        text = _piece_text(token)
        if text and all(_is_punctuation_char(c) for c in text):
            found.add(int(index))
    return found
