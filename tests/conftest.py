"""Shared fixtures: tiny random-weight models and tokenized toy datasets built in code."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

VOCAB = 100
PAD = 0


def tiny_bert(num_labels: int | None = 2, layers: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pad_token_id=PAD,
    )
    if num_labels is None:
        return BertModel(cfg).eval()
    cfg.num_labels = num_labels
    return BertForSequenceClassification(cfg)


def tiny_distilbert(num_labels: int = 2, seed: int = 0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    cfg = DistilBertConfig(
        vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64,
        pad_token_id=PAD, num_labels=num_labels,
    )
    return DistilBertForSequenceClassification(cfg)


def toy_rows(n: int = 40, seed: int = 0, num_labels: int = 2, pad_to: int | None = None) -> dict:
    """Token rows whose label is written into their tokens, so a model can learn it."""
    rng = np.random.default_rng(seed)
    ids, masks, labels = [], [], []
    for i in range(n):
        label = i % num_labels
        length = int(rng.integers(4, 14))
        body = rng.integers(10, VOCAB, size=length - 2)
        body[: length // 2] = 3 + label  # class marker tokens
        row = [1, *body.tolist(), 2]
        mask = [1] * len(row)
        if pad_to:
            row = row + [PAD] * (pad_to - len(row))
            mask = mask + [0] * (pad_to - len(mask))
        ids.append(row)
        masks.append(mask)
        labels.append(label)
    return {"input_ids": ids, "attention_mask": masks, "labels": labels}


def toy_dataset(n: int = 40, seed: int = 0, num_labels: int = 2, pad_to: int | None = None):
    from datasets import Dataset

    return Dataset.from_dict(toy_rows(n, seed, num_labels, pad_to))


@pytest.fixture
def bert():
    return tiny_bert().eval()


@pytest.fixture
def train_ds():
    return toy_dataset(48, seed=0)


@pytest.fixture
def val_ds():
    return toy_dataset(24, seed=1)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_piece_tokenizer(words):
    """A lower-casing BERT WordPiece tokenizer whose vocabulary is the special tokens, then ``words``.

    Built from the ``tokenizers`` WordPiece model directly: ``BertTokenizerFast(vocab_file=...)``
    loads only the special tokens under transformers 5, so every word became ``[UNK]``. This
    construction gives the same ids under transformers 4.46+ and 5, saved and reloaded.
    Pieces starting with ``##`` continue a word.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*SPECIAL_TOKENS, *words]))}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=backend, do_lower_case=True, pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def save_tiny_bert(folder, words, hidden_size: int, intermediate_size: int):
    """Save a 2-layer random BERT classifier and a word-level tokenizer for ``words`` to ``folder``."""
    from transformers import BertConfig, BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = word_piece_tokenizer(words)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=intermediate_size, max_position_embeddings=64, pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_trainer(model, train, callbacks, out_dir, epochs: int = 2, eval_dataset=None, **kw):
    from transformers import Trainer, TrainingArguments

    class _Collator:
        def __call__(self, feats):
            width = max(len(f["input_ids"]) for f in feats)
            ids = torch.full((len(feats), width), PAD, dtype=torch.long)
            mask = torch.zeros((len(feats), width), dtype=torch.long)
            for i, f in enumerate(feats):
                ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                mask[i, : len(f["input_ids"])] = 1
            return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in feats])}

    settings = dict(
        output_dir=str(out_dir), num_train_epochs=epochs, per_device_train_batch_size=8, learning_rate=5e-3,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="epoch", disable_tqdm=True, seed=0,
    )
    settings.update(kw)
    args = TrainingArguments(**settings)
    return Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=eval_dataset, data_collator=_Collator(), callbacks=callbacks,
    )


def train_watched_run(out, train_rows: int, val_rows: int, epochs: int = 2):
    """A tiny BERT trained for ``epochs`` with a PCA-drawing callback on toy train and
    validation splits; returns the run directory ``out / "lw"``."""
    from layerwatch import LayerwatchCallback

    train, val = toy_dataset(train_rows), toy_dataset(val_rows, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, out / "lw", method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], out / "t", epochs=epochs).train()
    return out / "lw"


@pytest.fixture
def run_copy(stored_run, tmp_path):
    """A copy of the module's ``stored_run`` fixture that a test may change."""
    import shutil

    target = tmp_path / "lw"
    shutil.copytree(stored_run, target)
    return target


# A real headless browser for the page tests (skips locally without one; CI requires it).
def torchrun(worker: str, *args: str, timeout: int = 600) -> "subprocess.CompletedProcess":
    """Run ``tests/<worker>`` under torchrun as two CPU processes (gloo), one thread each."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(here)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(here, worker), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


from browser import browser, open_page  # noqa: E402,F401
