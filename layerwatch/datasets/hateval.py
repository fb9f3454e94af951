"""HatEval 2019 (English hate speech) as a ``datasets.DatasetDict``, whatever the source.

:func:`load_hateval` reads a folder in either layout (told apart by
:func:`detect_format`) or, without one, the Hugging Face Hub:

* the organisers' release, ``hateval2019_en_{train,dev,test}.csv``
  (:mod:`~layerwatch.datasets.hateval_csv`);
* the TweetEval layout, ``{train,val,test}_text.txt`` + ``_labels.txt`` + ``mapping.txt``
  (:mod:`~layerwatch.datasets.tweeteval`);
* ``cardiffnlp/tweet_eval``, configuration ``hate`` (:mod:`~layerwatch.datasets.hub`).

Every loader returns the splits ``train``, ``validation`` and ``test``, each with a
``text`` column and a ``label`` column of type ``ClassLabel(names=LABEL_NAMES)``, and
accounts for each file it read in one line handed to ``report`` (or logged).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check_positive_int
from ..data import stratified_subset
from . import hateval_csv, hub, tweeteval
from ._text import LABEL_NAMES, Report, named
from .hateval_csv import CSV_FILES

__all__ = ["LABEL_NAMES", "detect_format", "expected_layouts", "load_hateval", "stratified_sample"]


def expected_layouts() -> str:
    """A description of the folder layouts that :func:`load_hateval` reads."""
    return (
        f"either the organisers' CSV files ({', '.join(CSV_FILES.values())}; header id,text,HS,TR,AG) "
        "or the TweetEval layout ({train,val,test}_text.txt, {train,val,test}_labels.txt and mapping.txt)"
    )


def detect_format(folder: str | os.PathLike) -> str:
    """Tell which layout ``folder`` holds: ``"hateval-csv"`` or ``"tweeteval"``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
        ValueError: the folder holds neither layout (the message lists what was expected
            and what was found), or both.
    """
    return _detect(folder, "folder")


def _detect(folder: str | os.PathLike, argument: str) -> str:
    folder = Path(folder)
    where = named(argument, folder)
    if not folder.exists():
        raise FileNotFoundError(f"{where}: no such folder; pass {argument}= a folder holding {expected_layouts()}")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{where} is a file; pass the folder that holds it as {argument}=, with {expected_layouts()}"
        )
    names = sorted(p.name for p in folder.iterdir())
    is_csv = any(re.fullmatch(r"hateval2019_en_\w+\.csv", n, flags=re.IGNORECASE) for n in names)
    is_tweeteval = any(n.endswith("_text.txt") or n.endswith("_labels.txt") for n in names)
    if is_csv and is_tweeteval:
        raise ValueError(
            f"{where} holds both HatEval CSV files and TweetEval text files; "
            f"pass {argument}= a folder with only one of the two layouts"
        )
    if is_csv:
        return "hateval-csv"
    if is_tweeteval:
        return "tweeteval"
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} entries)" if len(names) > 10 else "")
    raise ValueError(f"{where} is not a HatEval folder: expected {expected_layouts()}; found {shown or 'nothing'}")


def load_hateval(data: str | os.PathLike | None = None, report: Report | None = None) -> Any:
    """Load HatEval from a folder of either layout, or from the Hub when ``data`` is ``None``.

    Args:
        data: A folder with the organisers' CSV files or in the TweetEval layout (the
            format is detected), or ``None`` for the Hub.
        report: Called with the one-line account of each file read; ``None`` logs it.

    Returns:
        A ``DatasetDict`` with ``train``, ``validation`` and ``test``, each with columns
        ``text`` and ``label`` (``ClassLabel(names=["not-hate", "hate"])``).

    Raises:
        FileNotFoundError, NotADirectoryError, ValueError: the folder is missing, is a
            file, or holds no known layout or unusable files; the message names ``data=``.
        ConnectionError: ``data`` is ``None`` and the Hub cannot be used.
    """
    if data is None:
        return hub._load(report, f"pass data= a folder with {expected_layouts()}")
    if _detect(data, "data") == "hateval-csv":
        return hateval_csv._read_folder(data, report, "data")
    return tweeteval._read_folder(data, report, "data")


def stratified_sample(dataset: Any, n: int | None, seed: int = 0) -> Any:
    """At most ``n`` rows of ``dataset``, in proportion to each label, drawn with ``seed``.

    Args:
        dataset: A ``datasets.Dataset`` with a ``label`` column.
        n: Rows to keep; ``None`` or at least ``len(dataset)`` keeps every row.
        seed: Seed of the draw.

    Returns:
        The chosen rows, in their original order.

    Raises:
        ValueError: ``n`` is neither None nor a positive integer.
    """
    if n is None:
        return dataset
    n = check_positive_int("n", n, hint="or None to keep every row")
    if n >= len(dataset):
        return dataset
    labels = np.asarray(dataset["label"], dtype=np.int64)
    return dataset.select(stratified_subset(labels, n, seed).tolist())
