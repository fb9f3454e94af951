"""The rows' text in the run's files: one rule for every file, page, picture and export.

``report_text`` decides what of a monitored row's text reaches the run directory and
the tools it is sent to; every writer asks this module, none decides for itself.

``report_text=True`` (the default): texts (``texts/<split>.json``, the report page, the
TensorBoard projector's metadata, W&B tables) and tokens (the attention examples' and
attribution examples' arrays, the head view and neuron view page, the conductance films)
are written as they are, except that every character UTF-8 cannot encode (a lone
surrogate such as ``"\\udcff"``, which reading a file with ``errors="surrogateescape"``
leaves in a string) becomes U+FFFD (``"\\ufffd"``), by :func:`clean_text`.

``report_text=False`` (data that must not leave the machine): nothing the run writes
carries a row's text or its tokens. No texts are stored or decoded (the report page, the
projector's metadata and the W&B rows table have none); tokens are never turned into
strings, and no token ids are kept. In their place:

* a row is named by its split and dataset index (``validation row 12``; the ``row``
  column of the integrations' tables);
* a token by its position in the row, ``t0 t1 t2 ...`` (:func:`position_names`): the
  head view's token columns, the neuron view, the conductance heatmaps' ticks and the
  coloured sentence under them.

Label names, split names, numbers and pictures of numbers are not a row's text and are
written either way.

This module imports the standard library only.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["REPLACEMENT", "clean_text", "position_names", "shown_tokens", "text_allowed"]

REPLACEMENT = "\ufffd"


def text_allowed(config: Any) -> bool:
    """Whether the run may write its rows' texts and tokens: its ``report_text``.

    Args:
        config: a :class:`~layerwatch.config.LayerwatchConfig`, the ``config`` mapping of
            a stored ``run.json``, or None (a run of an older version: allowed, as then).
    """
    if config is None:
        return True
    value = config.get("report_text", True) if isinstance(config, Mapping) else getattr(config, "report_text", True)
    return value is not False


def position_names(n: int) -> list[str]:
    """What stands for ``n`` tokens whose text may not be shown: ``["t0", "t1", ...]``."""
    return [f"t{i}" for i in range(int(n))]


def clean_text(value: Any) -> str:
    """``value`` as a string that UTF-8 can encode.

    A valid surrogate pair left as two code units becomes its character; every lone
    surrogate becomes U+FFFD. Text that encodes already is returned unchanged.
    """
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def shown_tokens(tokens: Sequence[Any], allowed: bool) -> list[str]:
    """The texts that stand for a row's tokens in the run's files: the tokens themselves
    (:func:`clean_text`), or their positions where text is not allowed."""
    if not allowed:
        return position_names(len(tokens))
    return [clean_text(t) for t in tokens]
