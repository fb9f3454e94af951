"""HatEval from the Hugging Face Hub: TweetEval's ``hate`` configuration (``cardiffnlp/tweet_eval``).

An offline machine would spend a long time in the Hub client's retries before
``load_dataset`` gives up; :func:`load_hub` first checks, privately, that the Hub's
endpoint answers at all, and fails at once when it does not.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

from ._text import LABEL_NAMES, SPLITS, ReadReport, Report, emit

HUB_DATASET = "cardiffnlp/tweet_eval"
HUB_CONFIG = "hate"


def _proxied() -> bool:
    # Behind a proxy a direct connection may fail although the Hub can be reached.
    return any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def _reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub's endpoint opens within ``timeout`` seconds
    (assumed True behind a proxy, where a direct connection proves nothing)."""
    from huggingface_hub import constants

    if _proxied():
        return True
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_error(reason: str, otherwise: str) -> ConnectionError:
    return ConnectionError(
        f"cannot load {HUB_DATASET} ({HUB_CONFIG!r}) from the Hugging Face Hub: {reason}. If the data set is in "
        f"the local cache, set HF_DATASETS_OFFLINE=1 to read it from there; otherwise {otherwise}"
    )


def load_hub(report: Report | None = None) -> Any:
    """Load TweetEval's ``hate`` configuration from the Hugging Face Hub (or its cache).

    Fails at once, without the Hub client's retries, when the Hub cannot be reached.

    Args:
        report: Called with one line per split giving its row count; ``None`` logs it.

    Returns:
        A ``DatasetDict`` with ``train``, ``validation`` and ``test``, each with columns
        ``text`` and ``label`` (``ClassLabel(names=["not-hate", "hate"])``).

    Raises:
        ConnectionError: the Hub cannot be reached or the download failed.
        ValueError: the data set on the Hub lacks one of the three splits.
    """
    return _load(report, "read a local copy (load_hateval_csv, load_tweeteval)")


def _load(report: Report | None, otherwise: str) -> Any:
    """:func:`load_hub`; a failure's message ends with ``otherwise``, the caller's advice."""
    import datasets

    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    if not offline and not _reachable():
        raise _hub_error("the Hub cannot be reached (no network?)", otherwise) from None
    try:
        loaded = datasets.load_dataset(HUB_DATASET, HUB_CONFIG)
    except Exception as exc:  # any failure (offline, missing cache, HTTP error) gets the same advice
        raise _hub_error(f"{type(exc).__name__}: {exc}", otherwise) from exc
    from datasets import ClassLabel, DatasetDict, Value

    out = {}
    for split in SPLITS:
        if split not in loaded:
            raise ValueError(f"{HUB_DATASET} has no split {split!r} (it has {list(loaded)}); {otherwise}")
        ds = loaded[split].select_columns(["text", "label"])
        ds = ds.cast_column("text", Value("string")).cast_column("label", ClassLabel(names=list(LABEL_NAMES)))
        emit(report, ReadReport(file=f"{HUB_DATASET}/{HUB_CONFIG}/{split}", kept=len(ds)))
        out[split] = ds
    return DatasetDict(out)
