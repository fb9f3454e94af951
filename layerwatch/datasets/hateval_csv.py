"""The organisers' release of HatEval 2019 (English): ``hateval2019_en_{train,dev,test}.csv``.

Each file has the header ``id,text,HS,TR,AG``, is UTF-8 with a byte-order mark and quotes
its text. Real copies are messy (extra empty columns, rows without a label, stray bytes):
unusable rows are skipped and counted, never dropped silently; each file gives one line
such as ``hateval2019_en_train.csv: kept 8990 rows, skipped 10 (7 empty HS, 3 empty
text)``.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ._text import LABEL_JUNK, STRAY, ReadReport, Report, check_kept, clean_text, dataset_dict, emit, named, parse_label, read_text_file

CSV_FILES: dict[str, str] = {
    "train": "hateval2019_en_train.csv",
    "validation": "hateval2019_en_dev.csv",
    "test": "hateval2019_en_test.csv",
}


def read_hateval_csv(path: str | os.PathLike) -> tuple[list[str], list[int], ReadReport]:
    """Read one of the organisers' HatEval CSV files, skipping the rows that cannot be used.

    The header must name a ``text`` and an ``HS`` column (in any position and case; other
    columns, empty ones included, are ignored). A row is skipped when it is blank, has too
    few fields, has non-empty fields beyond the header, has an empty or non-0/1 ``HS``, or
    has no text left once stray characters are removed. Quoted text may hold commas and
    newlines; newlines become spaces.

    Args:
        path: The CSV file.

    Returns:
        ``(texts, labels, report)``: the kept texts, their 0/1 ``HS`` labels and a
        :class:`ReadReport` whose ``summary()`` is the one-line account of the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty or its header has no ``text`` or ``HS`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{named('path', path)} is no file; pass one of the organisers' CSV files ({', '.join(CSV_FILES.values())})"
        )
    # NUL bytes are not text, and older csv modules refuse lines that hold them.
    content = read_text_file(path).replace("\x00", "")
    rows = csv.reader(io.StringIO(content, newline=""))
    header = next(rows, None)
    if header is None:
        raise ValueError(f"{path} is empty; expected a header id,text,HS,TR,AG and one row per tweet")
    names = [h.strip(LABEL_JUNK).lower() for h in header]
    missing = [c for c in ("text", "hs") if c not in names]
    if missing:
        raise ValueError(
            f"{path}: the header {header} has no {' or '.join(repr(c if c == 'text' else 'HS') for c in missing)} "
            "column; expected the organisers' header id,text,HS,TR,AG"
        )
    i_text, i_hs = names.index("text"), names.index("hs")
    width = len(header)
    need = max(i_text, i_hs) + 1
    report = ReadReport(file=path.name)
    texts: list[str] = []
    labels: list[int] = []
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error:
            report.skipped["unreadable"] += 1
            continue
        if not any(cell.strip() for cell in row):
            report.skipped["blank line"] += 1
            continue
        if len(row) < need:
            report.skipped["too few fields"] += 1
            continue
        if any(cell.strip() for cell in row[width:]):
            # Usually a text with an unquoted comma: its pieces shifted every later column.
            report.skipped["extra fields"] += 1
            continue
        raw_hs = row[i_hs]
        if not raw_hs.strip(LABEL_JUNK):
            report.skipped["empty HS"] += 1
            continue
        label = parse_label(raw_hs)
        if label is None:
            report.skipped["invalid HS"] += 1
            continue
        raw_text = row[i_text]
        text = clean_text(raw_text)
        if not text:
            report.skipped["empty text"] += 1
            continue
        if STRAY.search(raw_text):
            report.cleaned += 1
        texts.append(text)
        labels.append(label)
    report.kept = len(texts)
    return texts, labels, report


def load_hateval_csv(folder: str | os.PathLike, report: Report | None = None) -> Any:
    """Load the organisers' ``hateval2019_en_{train,dev,test}.csv`` from ``folder``.

    Args:
        folder: The folder holding the three CSV files.
        report: Called with one line per file saying how many rows were kept and skipped,
            and why; ``None`` logs that line (as a warning when rows were skipped).

    Returns:
        A ``DatasetDict`` with ``train``, ``validation`` (from ``dev``) and ``test``.

    Raises:
        FileNotFoundError: a file is missing (all missing ones are named).
        ValueError: a file has a header without ``text``/``HS``, or no usable row.
    """
    return _read_folder(folder, report, "folder")


def _read_folder(folder: str | os.PathLike, report: Report | None, argument: str) -> Any:
    """:func:`load_hateval_csv`, with messages that name the caller's ``argument``."""
    folder = Path(folder)
    missing = [name for name in CSV_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{named(argument, folder)} lacks {', '.join(missing)}; a HatEval CSV folder needs all of "
            f"{', '.join(CSV_FILES.values())}"
        )
    splits = {}
    for split, name in CSV_FILES.items():
        texts, labels, read = read_hateval_csv(folder / name)
        emit(report, read)
        check_kept(split, read, folder / name)
        splits[split] = (texts, labels)
    return dataset_dict(splits)
