"""HatEval 2019 (English hate speech) as a ``datasets.DatasetDict``, from three sources.

* the organisers' release: a folder with ``hateval2019_en_{train,dev,test}.csv``
  (header ``id,text,HS,TR,AG``, UTF-8 with a byte-order mark, quoted text);
* the TweetEval layout: a folder with ``{train,val,test}_text.txt``,
  ``{train,val,test}_labels.txt`` and ``mapping.txt``;
* the Hugging Face Hub (``cardiffnlp/tweet_eval``, configuration ``hate``), when no
  folder is given.

Every loader returns the splits ``train``, ``validation`` and ``test``, each with a
``text`` column and a ``label`` column of type ``ClassLabel(names=["not-hate", "hate"])``.

Real copies of the CSV files are messy (extra empty columns, rows without a label, stray
bytes). Unusable rows are skipped and counted, never dropped silently: each file gives
one line such as ``hateval2019_en_train.csv: kept 8990 rows, skipped 10 (7 empty HS,
3 empty text)``, handed to ``report`` (or logged when no ``report`` is given).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import numpy as np

logger = logging.getLogger("layerwatch")

LABEL_NAMES: tuple[str, str] = ("not-hate", "hate")
SPLITS: tuple[str, str, str] = ("train", "validation", "test")

HUB_DATASET = "cardiffnlp/tweet_eval"
HUB_CONFIG = "hate"

CSV_FILES: dict[str, str] = {
    "train": "hateval2019_en_train.csv",
    "validation": "hateval2019_en_dev.csv",
    "test": "hateval2019_en_test.csv",
}
# File-name prefixes a TweetEval folder may use for each split; the first is TweetEval's own.
TWEETEVAL_PREFIXES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("val", "validation", "dev"),
    "test": ("test",),
}
# Names that mapping.txt may give each class (TweetEval writes not-hate, the Hub non-hate).
_MAPPING_NAMES = ({"not-hate", "non-hate", "not hate", "nothate", "0"}, {"hate", "1"})

# Reasons a CSV row is skipped, in the order the one-line report lists them.
_REASONS = ("blank line", "too few fields", "extra fields", "empty HS", "invalid HS", "empty text", "unreadable")

# Characters that are never part of a tweet: C0/C1 controls (tabs and newlines are turned
# into spaces separately; C1 controls are what is left of emoji decoded with the wrong
# code page), byte-order marks, zero-width spaces and U+FFFD (bytes that were not UTF-8).
# Zero-width joiners stay: they belong to emoji sequences.
_STRAY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b\u2060\ufffd\ufffe]")
_SPACES = re.compile(r"\s+")
# What may surround a 0/1 label in a messy file: spaces, quotes, byte-order marks.
_LABEL_JUNK = " \t\r\n\"'\ufeff\u200b\xa0"

Report = Callable[[str], None]


def expected_layouts() -> str:
    """A description of the folder layouts that :func:`load_hateval` reads."""
    csv_names = ", ".join(CSV_FILES.values())
    return (
        f"either the organisers' CSV files ({csv_names}; header id,text,HS,TR,AG) "
        "or the TweetEval layout ({train,val,test}_text.txt, {train,val,test}_labels.txt "
        "and mapping.txt)"
    )


@dataclass
class ReadReport:
    """What reading one file kept, skipped and cleaned.

    Attributes:
        file: The file's name (no folder).
        kept: Rows kept.
        skipped: Skipped rows by reason (``"empty HS"``, ``"empty text"``, ...).
        cleaned: Kept rows whose text lost stray characters (control characters,
            zero-width spaces, bytes that were not UTF-8).
        empty_kept: Kept rows whose text is empty (the TweetEval layout keeps them, so that
            its splits keep the benchmark's sizes).
    """

    file: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    cleaned: int = 0
    empty_kept: int = 0

    @property
    def num_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    def summary(self) -> str:
        """The one-line report, e.g. ``"x.csv: kept 8990 rows, skipped 10 (7 empty HS, 3 empty text)"``."""
        line = f"{self.file}: kept {self.kept} rows, skipped {self.num_skipped}"
        if self.skipped:
            order = [r for r in _REASONS if self.skipped.get(r)] + sorted(set(self.skipped) - set(_REASONS))
            line += " (" + ", ".join(f"{self.skipped[r]} {r}" for r in order) + ")"
        if self.cleaned:
            line += f"; removed stray characters from {self.cleaned}"
        if self.empty_kept:
            line += f"; {self.empty_kept} kept with empty text (as in TweetEval)"
        return line


def _emit(report: Report | None, read: ReadReport) -> None:
    line = read.summary()
    if report is not None:
        report(line)
    elif read.num_skipped:
        logger.warning("layerwatch: %s", line)
    else:
        logger.info("layerwatch: %s", line)


def clean_text(text: str) -> str:
    """Remove stray characters and fold runs of whitespace (newlines included) into one space."""
    return _SPACES.sub(" ", _STRAY.sub("", text)).strip()


def _parse_label(raw: str) -> int | None:
    value = raw.strip(_LABEL_JUNK)
    if value in ("0", "1"):
        return int(value)
    if value in ("0.0", "1.0"):
        return int(float(value))
    return None


def _read_text_file(path: Path) -> str:
    """The file's text without a byte-order mark; bytes that are not UTF-8 become U+FFFD (then removed)."""
    return path.read_bytes().decode("utf-8-sig", errors="replace")


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
        raise FileNotFoundError(f"{path} does not exist; pass the folder holding {', '.join(CSV_FILES.values())}")
    content = _read_text_file(path)
    # NUL bytes are not text, and older csv modules refuse lines that hold them.
    content = content.replace("\x00", "")
    rows = csv.reader(io.StringIO(content, newline=""))
    header = next(rows, None)
    if header is None:
        raise ValueError(f"{path} is empty; expected a header id,text,HS,TR,AG and one row per tweet")
    names = [h.strip(_LABEL_JUNK).lower() for h in header]
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
        if not raw_hs.strip(_LABEL_JUNK):
            report.skipped["empty HS"] += 1
            continue
        label = _parse_label(raw_hs)
        if label is None:
            report.skipped["invalid HS"] += 1
            continue
        raw_text = row[i_text]
        text = clean_text(raw_text)
        if not text:
            report.skipped["empty text"] += 1
            continue
        if _STRAY.search(raw_text):
            report.cleaned += 1
        texts.append(text)
        labels.append(label)
    report.kept = len(texts)
    return texts, labels, report


def _dataset(texts: Sequence[str], labels: Sequence[int]) -> Any:
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(LABEL_NAMES))})
    return Dataset.from_dict({"text": list(texts), "label": [int(v) for v in labels]}, features=features)


def _dataset_dict(splits: dict[str, tuple[Sequence[str], Sequence[int]]]) -> Any:
    from datasets import DatasetDict

    return DatasetDict({name: _dataset(*splits[name]) for name in SPLITS})


def _check_kept(split: str, read: ReadReport, source: Path) -> None:
    if read.kept == 0:
        raise ValueError(f"{source}: no usable row in split {split!r} ({read.summary()}); check the file's content")


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
    folder = Path(folder)
    missing = [name for name in CSV_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; a HatEval CSV folder needs all of "
            f"{', '.join(CSV_FILES.values())}"
        )
    splits = {}
    for split, name in CSV_FILES.items():
        texts, labels, read = read_hateval_csv(folder / name)
        _emit(report, read)
        _check_kept(split, read, folder / name)
        splits[split] = (texts, labels)
    return _dataset_dict(splits)


def _lines(path: Path) -> list[str]:
    content = _read_text_file(path)
    # Split on "\n" only: str.splitlines() would also break inside a tweet at \x85 or \u2028.
    lines = content.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _tweeteval_prefix(folder: Path, split: str) -> str | None:
    for prefix in TWEETEVAL_PREFIXES[split]:
        if (folder / f"{prefix}_text.txt").is_file() and (folder / f"{prefix}_labels.txt").is_file():
            return prefix
    return None


def _check_mapping(folder: Path) -> None:
    path = folder / "mapping.txt"
    if not path.is_file():
        return
    mapping = {}
    for line in _lines(path):
        if not line.strip():
            continue
        parts = line.strip().split("\t") if "\t" in line else line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise ValueError(f"{path}: cannot read the line {line!r}; expected '<id><TAB><name>' such as '1\\thate'")
        mapping[int(parts[0])] = parts[1].strip().lower()
    ok = set(mapping) == {0, 1} and all(mapping[i] in _MAPPING_NAMES[i] for i in (0, 1))
    if not ok:
        raise ValueError(
            f"{path} maps labels {mapping}, not 0 -> not-hate and 1 -> hate; this folder holds another "
            "TweetEval task: pass --data the 'hate' folder"
        )


def load_tweeteval(folder: str | os.PathLike, report: Report | None = None) -> Any:
    """Load a folder in the TweetEval layout (``{train,val,test}_text.txt`` + ``_labels.txt``).

    ``val`` (or ``validation``/``dev``) becomes the ``validation`` split. ``mapping.txt``,
    when present, must map 0 to not-hate and 1 to hate. Rows whose label is empty or not
    0/1 are skipped and reported like those of the CSV files. Rows with an empty text are
    kept (TweetEval has a few, left by its preprocessing) and counted in the report, so
    that the splits keep the benchmark's sizes (9000 / 1000 / 2970).

    Args:
        folder: The folder, for example TweetEval's ``datasets/hate/``.
        report: Called with one line per split; ``None`` logs it.

    Returns:
        A ``DatasetDict`` with ``train``, ``validation`` and ``test``.

    Raises:
        FileNotFoundError: a split's text or labels file is missing.
        ValueError: a text file and its labels file have different line counts, the
            mapping is not the hate task's, or a split has no usable row.
    """
    folder = Path(folder)
    missing = [s for s in SPLITS if _tweeteval_prefix(folder, s) is None]
    if missing:
        wanted = ", ".join(f"{TWEETEVAL_PREFIXES[s][0]}_text.txt + {TWEETEVAL_PREFIXES[s][0]}_labels.txt" for s in missing)
        raise FileNotFoundError(f"{folder} lacks the {', '.join(missing)} split of the TweetEval layout: {wanted}")
    _check_mapping(folder)
    splits = {}
    for split in SPLITS:
        prefix = _tweeteval_prefix(folder, split)
        text_path, label_path = folder / f"{prefix}_text.txt", folder / f"{prefix}_labels.txt"
        raw_texts, raw_labels = _lines(text_path), _lines(label_path)
        if len(raw_texts) != len(raw_labels):
            raise ValueError(
                f"{text_path.name} has {len(raw_texts)} lines but {label_path.name} has {len(raw_labels)}; "
                "each tweet needs exactly one label line (a tweet holding a line break would shift them)"
            )
        read = ReadReport(file=text_path.name)
        texts, labels = [], []
        for raw_text, raw_label in zip(raw_texts, raw_labels):
            if not raw_label.strip(_LABEL_JUNK):
                read.skipped["empty label"] += 1
                continue
            label = _parse_label(raw_label)
            if label is None:
                read.skipped["invalid label"] += 1
                continue
            text = clean_text(raw_text)
            if not text:
                read.empty_kept += 1
            if _STRAY.search(raw_text):
                read.cleaned += 1
            texts.append(text)
            labels.append(label)
        read.kept = len(texts)
        _emit(report, read)
        _check_kept(split, read, text_path)
        splits[split] = (texts, labels)
    return _dataset_dict(splits)


def detect_format(folder: str | os.PathLike) -> str:
    """Tell which layout ``folder`` holds: ``"hateval-csv"`` or ``"tweeteval"``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
        ValueError: the folder holds neither layout (the message lists what was expected
            and what was found), or both.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"--data {folder}: no such folder; pass a folder holding {expected_layouts()}")
    if not folder.is_dir():
        raise NotADirectoryError(f"--data {folder} is a file; pass the folder that holds it, with {expected_layouts()}")
    names = sorted(p.name for p in folder.iterdir())
    is_csv = any(re.fullmatch(r"hateval2019_en_\w+\.csv", n, flags=re.IGNORECASE) for n in names)
    is_tweeteval = any(n.endswith("_text.txt") or n.endswith("_labels.txt") for n in names)
    if is_csv and is_tweeteval:
        raise ValueError(
            f"--data {folder} holds both HatEval CSV files and TweetEval text files; "
            "pass a folder with only one of the two layouts"
        )
    if is_csv:
        return "hateval-csv"
    if is_tweeteval:
        return "tweeteval"
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} entries)" if len(names) > 10 else "")
    raise ValueError(
        f"--data {folder} is not a HatEval folder: expected {expected_layouts()}; "
        f"found {shown or 'nothing'}"
    )


def _proxied() -> bool:
    # Behind a proxy a direct connection may fail although the Hub can be reached.
    return any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub's endpoint opens within ``timeout`` seconds.

    Without this check an offline machine spends half a minute in the Hub client's
    retries before ``load_dataset`` or ``from_pretrained`` gives up. Behind a proxy
    (``HTTPS_PROXY`` or ``ALL_PROXY`` set) a direct connection may fail although the Hub
    can be reached, so the Hub is then assumed reachable.

    Args:
        timeout: Seconds to wait for the connection.

    Returns:
        True when the connection opened.
    """
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


def _hub_error(reason: str) -> ConnectionError:
    return ConnectionError(
        f"cannot load {HUB_DATASET} ({HUB_CONFIG!r}) from the Hugging Face Hub: {reason}. "
        f"Pass --data FOLDER (data= in Python) with {expected_layouts()}; "
        "or, if the data set is in the local cache, set HF_DATASETS_OFFLINE=1 to read it from there"
    )


def load_hub(report: Report | None = None) -> Any:
    """Load TweetEval's ``hate`` configuration from the Hugging Face Hub (or its cache).

    Fails at once, without the Hub client's retries, when the Hub cannot be reached.

    Args:
        report: Called with one line per split giving its row count; ``None`` logs it.

    Returns:
        A ``DatasetDict`` with ``train``, ``validation`` and ``test``.

    Raises:
        ConnectionError: the Hub cannot be reached or the download failed; the message
            says to pass ``--data``.
    """
    import datasets

    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    if not offline and not hub_reachable():
        raise _hub_error("the Hub cannot be reached (no network?)") from None
    try:
        loaded = datasets.load_dataset(HUB_DATASET, HUB_CONFIG)
    except Exception as exc:  # any failure (offline, missing cache, HTTP error) gets the same advice
        raise _hub_error(f"{type(exc).__name__}: {exc}") from exc
    from datasets import ClassLabel, DatasetDict, Value

    out = {}
    for split in SPLITS:
        if split not in loaded:
            raise ValueError(f"{HUB_DATASET} has no split {split!r} (it has {list(loaded)}); pass --data FOLDER instead")
        ds = loaded[split].select_columns(["text", "label"])
        ds = ds.cast_column("text", Value("string")).cast_column("label", ClassLabel(names=list(LABEL_NAMES)))
        read = ReadReport(file=f"{HUB_DATASET}/{HUB_CONFIG}/{split}", kept=len(ds))
        _emit(report, read)
        out[split] = ds
    return DatasetDict(out)


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
            file, or holds no known layout or unusable files.
        ConnectionError: ``data`` is ``None`` and the Hub cannot be used.
    """
    if data is None:
        return load_hub(report)
    fmt = detect_format(data)
    if fmt == "hateval-csv":
        return load_hateval_csv(data, report)
    return load_tweeteval(data, report)


def stratified_sample(dataset: Any, n: int | None, seed: int = 0) -> Any:
    """At most ``n`` rows of ``dataset``, in proportion to each label, drawn with ``seed``.

    Args:
        dataset: A ``datasets.Dataset`` with a ``label`` column.
        n: Rows to keep; ``None`` or at least ``len(dataset)`` keeps every row.
        seed: Seed of the draw.

    Returns:
        The chosen rows, in their original order.
    """
    from ..data import stratified_subset

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"n={n!r} must be a positive integer, or None to keep every row")
    if n is None or n >= len(dataset):
        return dataset
    labels = np.asarray(dataset["label"], dtype=np.int64)
    return dataset.select(stratified_subset(labels, n, seed).tolist())
