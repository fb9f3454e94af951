"""What the HatEval loaders share: reading text files, cleaning tweets, reporting, building splits.

Real copies of the data are messy (byte-order marks, stray bytes, control characters,
labels wrapped in quotes). Each loader reads a file with :func:`read_text_file`, cleans
each tweet with :func:`clean_text`, reads labels with :func:`parse_label`, and accounts
for every row it keeps or skips in a :class:`ReadReport`, whose one-line summary goes to
the caller's ``report`` (or to the log).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger("layerwatch")

LABEL_NAMES: tuple[str, str] = ("not-hate", "hate")
"""The class names of every HatEval loader, in label order."""

SPLITS: tuple[str, str, str] = ("train", "validation", "test")

Report = Callable[[str], None]

# Reasons a row is skipped, in the order the one-line report lists them.
REASONS = ("blank line", "too few fields", "extra fields", "empty HS", "invalid HS", "empty text", "unreadable")

# Characters that are never part of a tweet: C0/C1 controls (tabs and newlines are turned
# into spaces separately; C1 controls are what is left of emoji decoded with the wrong
# code page), byte-order marks, zero-width spaces and U+FFFD (bytes that were not UTF-8).
# Zero-width joiners stay: they belong to emoji sequences.
STRAY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b\u2060\ufffd\ufffe]")
_SPACES = re.compile(r"\s+")
# What may surround a 0/1 label in a messy file: spaces, quotes, byte-order marks.
LABEL_JUNK = " \t\r\n\"'\ufeff\u200b\xa0"


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
            order = [r for r in REASONS if self.skipped.get(r)] + sorted(set(self.skipped) - set(REASONS))
            line += " (" + ", ".join(f"{self.skipped[r]} {r}" for r in order) + ")"
        if self.cleaned:
            line += f"; removed stray characters from {self.cleaned}"
        if self.empty_kept:
            line += f"; {self.empty_kept} kept with empty text (as in TweetEval)"
        return line


def emit(report: Report | None, read: ReadReport) -> None:
    """Hand the file's one-line summary to ``report``, or log it (a warning when rows were skipped)."""
    line = read.summary()
    if report is not None:
        report(line)
    elif read.num_skipped:
        logger.warning("layerwatch: %s", line)
    else:
        logger.info("layerwatch: %s", line)


def clean_text(text: str) -> str:
    """Remove stray characters and fold runs of whitespace (newlines included) into one space."""
    return _SPACES.sub(" ", STRAY.sub("", text)).strip()


def parse_label(raw: str) -> int | None:
    """0 or 1 from a label field (``"1"``, ``" 0 "``, ``'"1"'``, ``"1.0"``), else None."""
    value = raw.strip(LABEL_JUNK)
    if value in ("0", "1"):
        return int(value)
    if value in ("0.0", "1.0"):
        return int(float(value))
    return None


def read_text_file(path: Path) -> str:
    """The file's text without a byte-order mark; bytes that are not UTF-8 become U+FFFD (then removed)."""
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def lines(path: Path) -> list[str]:
    """The file's lines, split on ``"\\n"`` only (``str.splitlines`` would also break a
    tweet at ``\\x85`` or ``\\u2028``)."""
    content = read_text_file(path)
    out = content.replace("\r\n", "\n").split("\n")
    if out and out[-1] == "":
        out.pop()
    return out


def named(argument: str, value: Any) -> str:
    """How a message names an argument and its value: ``data='/path/to/folder'``."""
    return f"{argument}={str(value)!r}"


def check_kept(split: str, read: ReadReport, source: Path) -> None:
    if read.kept == 0:
        raise ValueError(f"{source}: no usable row in split {split!r} ({read.summary()}); check the file's content")


def dataset_dict(splits: dict[str, tuple[Sequence[str], Sequence[int]]]) -> Any:
    """``{split: (texts, labels)}`` as a ``DatasetDict`` with ``text`` and ``label`` (``LABEL_NAMES``) columns."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(LABEL_NAMES))})
    return DatasetDict({
        name: Dataset.from_dict({"text": list(splits[name][0]), "label": [int(v) for v in splits[name][1]]}, features=features)
        for name in SPLITS
    })
