"""HatEval in the TweetEval layout: ``{train,val,test}_text.txt``, ``_labels.txt``, ``mapping.txt``.

One tweet (or one label) a line; ``val`` (or ``validation``/``dev``) is the
``validation`` split. This is the layout of TweetEval's ``datasets/hate/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._text import LABEL_JUNK, SPLITS, STRAY, ReadReport, Report, check_kept, clean_text, dataset_dict, emit, lines, named, parse_label

# File-name prefixes a TweetEval folder may use for each split; the first is TweetEval's own.
TWEETEVAL_PREFIXES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("val", "validation", "dev"),
    "test": ("test",),
}
# Names that mapping.txt may give each class (TweetEval writes not-hate, the Hub non-hate).
_MAPPING_NAMES = ({"not-hate", "non-hate", "not hate", "nothate", "0"}, {"hate", "1"})


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
    return _read_folder(folder, report, "folder")


def _prefix(folder: Path, split: str) -> str | None:
    for prefix in TWEETEVAL_PREFIXES[split]:
        if (folder / f"{prefix}_text.txt").is_file() and (folder / f"{prefix}_labels.txt").is_file():
            return prefix
    return None


def _check_mapping(folder: Path, argument: str) -> None:
    path = folder / "mapping.txt"
    if not path.is_file():
        return
    mapping = {}
    for line in lines(path):
        if not line.strip():
            continue
        parts = line.strip().split("\t") if "\t" in line else line.strip().split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise ValueError(f"{path}: cannot read the line {line!r}; expected '<id><TAB><name>' such as '1\\thate'")
        mapping[int(parts[0])] = parts[1].strip().lower()
    ok = set(mapping) == {0, 1} and all(mapping[i] in _MAPPING_NAMES[i] for i in (0, 1))
    if not ok:
        raise ValueError(
            f"{path} maps labels {mapping}, not 0 -> not-hate and 1 -> hate; {named(argument, folder)} holds "
            f"another TweetEval task: pass {argument}= the 'hate' folder"
        )


def _read_split(folder: Path, prefix: str) -> tuple[list[str], list[int], ReadReport]:
    text_path, label_path = folder / f"{prefix}_text.txt", folder / f"{prefix}_labels.txt"
    raw_texts, raw_labels = lines(text_path), lines(label_path)
    if len(raw_texts) != len(raw_labels):
        raise ValueError(
            f"{text_path.name} has {len(raw_texts)} lines but {label_path.name} has {len(raw_labels)}; "
            "each tweet needs exactly one label line (a tweet holding a line break would shift them)"
        )
    read = ReadReport(file=text_path.name)
    texts, labels = [], []
    for raw_text, raw_label in zip(raw_texts, raw_labels):
        if not raw_label.strip(LABEL_JUNK):
            read.skipped["empty label"] += 1
            continue
        label = parse_label(raw_label)
        if label is None:
            read.skipped["invalid label"] += 1
            continue
        text = clean_text(raw_text)
        if not text:
            read.empty_kept += 1
        if STRAY.search(raw_text):
            read.cleaned += 1
        texts.append(text)
        labels.append(label)
    read.kept = len(texts)
    return texts, labels, read


def _read_folder(folder: str | os.PathLike, report: Report | None, argument: str) -> Any:
    """:func:`load_tweeteval`, with messages that name the caller's ``argument``."""
    folder = Path(folder)
    missing = [s for s in SPLITS if _prefix(folder, s) is None]
    if missing:
        wanted = ", ".join(f"{TWEETEVAL_PREFIXES[s][0]}_text.txt + {TWEETEVAL_PREFIXES[s][0]}_labels.txt" for s in missing)
        raise FileNotFoundError(
            f"{named(argument, folder)} lacks the {', '.join(missing)} split of the TweetEval layout: {wanted}"
        )
    _check_mapping(folder, argument)
    splits = {}
    for split in SPLITS:
        texts, labels, read = _read_split(folder, _prefix(folder, split))
        emit(report, read)
        check_kept(split, read, folder / f"{_prefix(folder, split)}_text.txt")
        splits[split] = (texts, labels)
    return dataset_dict(splits)
