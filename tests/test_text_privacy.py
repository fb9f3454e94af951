"""The rows' text in the run's files: ``report_text=False`` keeps every text and token out of
every file the run writes (and what it sends); texts UTF-8 cannot encode never stop training."""

from __future__ import annotations

import base64
import logging
import os
import zipfile

import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_bert, word_piece_tokenizer
from datasets import Dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.integrations.base import RunInfo, text_of
from layerwatch.text import clean_text, position_names, shown_tokens, text_allowed

# A word no file of a run holds by chance, split by the tokenizer into two word pieces.
MARKER, PIECES = "quokkazebra", ("quokka", "##zebra")
CLASS_WORDS = (("calm", "quiet", "gentle"), ("storm", "angry", "loud"))


def _tokenizer():
    tok = word_piece_tokenizer([*PIECES, *[w for ws in CLASS_WORDS for w in ws], "the", "day", "was"])
    assert tok.tokenize(MARKER) == list(PIECES)  # the marker is two tokens, neither a whole-word match
    return tok


def _dataset(tok, n: int, seed: int, text_of_row=None) -> Dataset:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(CLASS_WORDS[label], size=3))
        texts.append(text_of_row(i, words) if text_of_row else f"the day {MARKER} was {' '.join(words)}")
        labels.append(label)
    enc = tok([clean_text(t) for t in texts], truncation=True)
    rows = {"text": texts, "labels": labels, **enc}
    # Arrow refuses a lone surrogate: such texts come as a dict of columns (read with pandas, say).
    return rows if text_of_row else Dataset.from_dict(rows)


def _texts_drawn(monkeypatch) -> list[str]:
    """Every text matplotlib is given (titles, tick labels, the coloured sentence) from now on."""
    from matplotlib.text import Text

    seen: list[str] = []
    original = Text.set_text

    def spy(self, s):
        seen.append(str(s))
        return original(self, s)

    monkeypatch.setattr(Text, "set_text", spy)
    return seen


def _train(tmp_path, monkeypatch, report_text: bool):
    tok = _tokenizer()
    train, val = _dataset(tok, 16, 0), _dataset(tok, 12, 1)
    drawn = _texts_drawn(monkeypatch)
    watch = LayerwatchCallback(
        {"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False, precision="fp32",
        attention=True, attention_examples=2, attribution=True, attribution_examples=2, attribution_steps=4,
        report_text=report_text, tensorboard=str(tmp_path / "tb"),
    )
    model = tiny_bert()
    trainer = make_trainer(model, train, [watch], tmp_path / "t", epochs=1)
    trainer.processing_class = tok
    trainer.callback_handler.processing_class = tok
    trainer.train()
    assert not watch.failures, watch.failures
    return drawn


def _encodings(word: str) -> list[bytes]:
    """How a word can sit in a file's bytes: UTF-8 (JSON, HTML, CSV, TSV, event files), UTF-32
    (numpy's str arrays), UTF-16, and inside base64."""
    raw = [word.encode("utf-8"), word.encode("utf-16-le"), word.encode("utf-32-le")]
    return raw + [base64.b64encode(word.encode("utf-8"))[1:-2]]


def _hits(folder, words) -> list[str]:
    """``file: what`` for every file under ``folder`` that carries one of ``words``."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                data = fh.read()
            for w in words:
                if any(e in data for e in _encodings(w)):
                    found.append(f"{path}: {w}")
            if zipfile.is_zipfile(path):  # npz (compressed or not): every array, strings and token ids
                with np.load(path, allow_pickle=False) as z:
                    for key in z.files:
                        arr = z[key]
                        if arr.dtype.kind in "US" and any(w in str(v) for v in arr.ravel() for w in words):
                            found.append(f"{path}[{key}]: text")
                        if key in ("token_ids", "input_ids", "ids"):
                            found.append(f"{path}[{key}]: token ids")
    return found


def _pieces():
    return [MARKER, PIECES[0], PIECES[1].lstrip("#")]


def test_report_text_false_leaves_no_text_or_token_in_any_file_of_the_run(tmp_path, monkeypatch):
    drawn = _train(tmp_path, monkeypatch, report_text=False)
    lw = tmp_path / "lw"
    # Every measurement wrote its files: the test looks where text would be.
    for name in ("attention_head_view.html", "report.html", "attention.csv", "norms.csv"):
        assert (lw / name).exists(), name
    assert list((lw / "attribution_frames").rglob("*.png")) and list(lw.glob("attribution_*.gif"))
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert _hits(lw, _pieces()) == []
    assert _hits(tmp_path / "tb", _pieces()) == []
    assert not any(w in t for t in drawn for w in _pieces())  # no picture drew a token
    assert not (lw / "texts").exists()
    # What stands in their place: token positions.
    store = RunStore(lw)
    arrays = store.load_arrays("attribution", "validation", store.keys("validation", "attribution")[-1])
    n = int(arrays["lengths"][0])
    assert arrays["tokens"][0, :n].tolist() == position_names(n)
    assert any(t == "t0" for t in drawn)  # the conductance heatmap's first tick
    page = (lw / "attention_head_view.html").read_text(encoding="utf-8")
    assert '"tokens":["t0","t1","t2"' in page
    # A stored run's readers obey the run's own setting.
    assert RunInfo.from_store(lw).texts("validation") == {}


def test_report_text_true_writes_the_texts_and_tokens_where_false_leaves_them_out(tmp_path, monkeypatch):
    drawn = _train(tmp_path, monkeypatch, report_text=True)
    lw = tmp_path / "lw"
    hits = _hits(lw, _pieces())
    for where in ("texts", "attention_head_view.html", "report.html", "attention", "attribution"):
        assert any(os.sep + where in h for h in hits), (where, hits)
    assert _hits(tmp_path / "tb", _pieces())  # the projector's metadata
    assert any(PIECES[1] in t for t in drawn)  # the conductance heatmap's tick labels


def test_one_rule_read_from_the_run_settings():
    assert text_allowed(None) and text_allowed({}) and text_allowed({"report_text": True})
    assert not text_allowed({"report_text": False})
    assert shown_tokens(["[CLS]", "hi", "\udcff"], True) == ["[CLS]", "hi", "\ufffd"]
    assert shown_tokens(["[CLS]", "hi"], False) == ["t0", "t1"]


# -- texts UTF-8 cannot encode ---------------------------------------------------------------------

def test_lone_surrogates_in_texts_are_replaced_said_once_and_training_goes_on(tmp_path, caplog):
    tok = _tokenizer()
    # As reading scraped tweets with errors="surrogateescape" leaves them: bytes 0xff and 0xfe.
    bad = lambda i, words: f"the day \udcff{i} was {' '.join(words)} \udcfe"  # noqa: E731
    train, val = _dataset(tok, 16, 0, bad), _dataset(tok, 12, 1, bad)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False,
                               attention=True, attention_examples=2, tensorboard=str(tmp_path / "tb"))
    model = tiny_bert()
    trainer = make_trainer(model, Dataset.from_dict({k: v for k, v in train.items() if k != "text"}), [watch],
                           tmp_path / "t", epochs=1)
    trainer.processing_class = tok
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        trainer.train()
    assert not watch.failures, watch.failures
    warnings = [r.message for r in caplog.records if "UTF-8 cannot encode" in r.message]
    assert len(warnings) == 1, warnings
    assert "split 'train'" in warnings[0] and "split 'validation'" in warnings[0]
    store = RunStore(tmp_path / "lw")
    texts = store.load_texts("validation")
    assert len(texts) == 12
    assert texts[0] == "the day \ufffd0 was " + val["text"][0].split(" was ")[1].replace("\udcfe", "\ufffd")
    assert (tmp_path / "lw" / "report.html").exists() and (tmp_path / "lw" / "attention_head_view.html").exists()
    assert "\ufffd0" in (tmp_path / "lw" / "report.html").read_text(encoding="utf-8")


def test_every_text_writer_replaces_what_utf8_cannot_encode(tmp_path):
    from layerwatch.pages import render_page
    from layerwatch.store import atomic_write_text

    assert clean_text("a\udcffb") == "a\ufffdb"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a pair left as two code units is joined
    assert clean_text("plain é") == "plain é"
    store = RunStore(tmp_path / "lw")
    store.write_text(store.file_path("x.txt"), "x\udcff")
    assert (tmp_path / "lw" / "x.txt").read_text(encoding="utf-8") == "x\ufffd"
    atomic_write_text(str(tmp_path / "y.txt"), "y\udcff")
    assert (tmp_path / "y.txt").read_text(encoding="utf-8") == "y\ufffd"
    page = render_page("t", "<p></p>", [], data={"texts": ["z\udcff"]})
    page.encode("utf-8")
    assert "z\ufffd" in page
    assert text_of("w\udcff") == "w\ufffd"
    torch.manual_seed(0)  # (keeps this file's tests independent of order)


def test_a_run_resumed_with_report_text_false_removes_the_texts_stored_before(tmp_path):
    from layerwatch.snapshot import SnapshotKey

    tok = _tokenizer()
    train = _dataset(tok, 16, 0)
    model = tiny_bert().eval()
    first = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    first.setup(model)
    first.snapshot(model, SnapshotKey(0))
    assert RunStore(tmp_path / "lw").load_texts("train")
    again = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, report_text=False)
    again.setup(model, global_step=2)
    again.snapshot(model, SnapshotKey(1, 2))
    assert not (tmp_path / "lw" / "texts" / "train.json").exists()
    assert _hits(tmp_path / "lw", _pieces()) == []
    assert RunInfo.from_store(tmp_path / "lw").texts("train") == {}
