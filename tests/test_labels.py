"""One label vocabulary per run, and model accuracy only where the head's outputs mean the labels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_bert, toy_dataset, toy_rows
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.labels import LabelVocabulary, canonical, classify, match_head, resolve
from layerwatch.snapshot import SnapshotKey
from layerwatch.measures.embeddings.files import load_snapshot


def _strings(n, names, seed=0, missing=None):
    rows = toy_rows(n, seed=seed, num_labels=len(names))
    rows["labels"] = [names[l] for l in rows["labels"]]
    if missing is not None:
        keep = [i for i, l in enumerate(rows["labels"]) if l != missing]
        rows = {k: [v[i] for i in keep] for k, v in rows.items()}
    return Dataset.from_dict(rows)


def _trained_labels(rows: dict) -> dict:
    """The integer labels the model is trained on, next to the string column layerwatch reads."""
    return {**rows, "target": rows.pop("labels")}


# -- one numbering for every split ------------------------------------------------------------------

def test_a_split_that_lacks_a_class_numbers_the_others_like_the_rest(tmp_path):
    names = ["ant", "bee", "cat"]
    train = _strings(30, names)
    val = _strings(30, names, seed=1, missing="ant")  # only "bee" and "cat"
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False)
    model = tiny_bert(num_labels=3)
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    store = RunStore(tmp_path / "lw")
    for split, ds in (("train", train), ("validation", val)):
        snap = load_snapshot(store, split, SnapshotKey(0))
        stored = [watch.label_names[i] for i in snap.labels]
        assert stored == [ds["labels"][i] for i in snap.indices]
    assert store.read_run()["labels"]["names"] == names


def test_string_labels_follow_the_models_id2label_and_its_accuracy_is_true(tmp_path):
    # The head says 0 = pos, 1 = neg (not sorted order); a model trained so always
    # predicts the right class: its accuracy is 1, and no row is marked wrong.
    rows = toy_rows(24)
    rows["labels"] = ["neg" if l else "pos" for l in rows["labels"]]
    ds = Dataset.from_dict(rows)
    model = tiny_bert()
    model.config.id2label = {0: "pos", 1: "neg"}
    model.config.label2id = {"pos": 0, "neg": 1}

    class Oracle(torch.nn.Module):
        """The tiny BERT's hidden states, with logits that name each row's true class."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask=None, **kw):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw)
            first = input_ids[:, 1]  # the class marker token: 3 + label id of toy_rows
            out.logits = torch.nn.functional.one_hot((first - 3).clamp(0, 1), 2).float()
            return out

    truth = toy_rows(24)
    assert all(3 + label == ids[1] for label, ids in zip(truth["labels"], truth["input_ids"]))
    watch = LayerwatchCallback({"train": ds}, tmp_path / "lw", method="pca", progress=False)
    oracle = Oracle(model)
    watch.setup(oracle)
    assert watch.label_names == ["pos", "neg"]
    watch.snapshot(oracle, SnapshotKey(0))
    acc = [r["value"] for r in RunStore(tmp_path / "lw").read_metrics() if r["metric"] == "model_accuracy"]
    assert acc == [1.0]
    snap = load_snapshot(RunStore(tmp_path / "lw"), "train", SnapshotKey(0))
    assert (snap.predictions == snap.labels).all()


def test_a_head_that_cannot_be_matched_gives_no_accuracy_and_one_warning(tmp_path, caplog):
    train = toy_dataset(24)  # labels 0 and 1
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        make_trainer(tiny_bert(num_labels=6), train, [watch], tmp_path / "t", epochs=2).train()
    warnings = [r.message for r in caplog.records if "model accuracy and error marks are left out" in r.message]
    assert len(warnings) == 1 and "6 outputs but the labels have 2 classes" in warnings[0]
    rows = RunStore(tmp_path / "lw").read_metrics()
    assert rows and "model_accuracy" not in {r["metric"] for r in rows}
    snap = load_snapshot(RunStore(tmp_path / "lw"), "train", SnapshotKey(2))
    assert snap.predictions is None


def test_string_labels_without_names_in_the_head_are_not_matched(tmp_path, caplog):
    rows = _trained_labels(toy_rows(24))
    rows["labels"] = ["spam" if l else "ham" for l in rows["target"]]
    watch = LayerwatchCallback({"train": Dataset.from_dict(rows)}, tmp_path / "lw", method="pca", progress=False)
    model = tiny_bert()  # id2label is LABEL_0, LABEL_1
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        watch.setup(model)
        watch.snapshot(model, SnapshotKey(0))
    assert any("does not name them" in r.message for r in caplog.records)
    assert load_snapshot(RunStore(tmp_path / "lw"), "train", SnapshotKey(0)).predictions is None


# -- highlight_errors ------------------------------------------------------------------------------

def test_highlight_errors_true_refuses_a_head_it_cannot_match_before_training(tmp_path):
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, highlight_errors=True)
    trainer = make_trainer(tiny_bert(num_labels=6), train, [watch], tmp_path / "t", epochs=1)
    with pytest.raises(ValueError, match="highlight_errors=True, but the model's outputs cannot be matched"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_highlight_errors_true_refuses_a_model_without_a_head_before_training(tmp_path):
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, highlight_errors=True)
    model = tiny_bert(num_labels=None)
    with pytest.raises(ValueError, match="highlight_errors=True, but the model returned no classification logits"):
        watch.setup(model)
        watch.snapshot(model, SnapshotKey(0))


@pytest.mark.parametrize("highlight, marked", [(None, True), (True, True), (False, False)])
def test_highlight_errors_decides_the_error_marks(tmp_path, highlight, marked):
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, highlight_errors=highlight)
    model = tiny_bert()
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    fig = watch.pipeline._figure(3)
    labels = [c.get_label() for c in fig.axes[0].collections]
    snap = load_snapshot(RunStore(tmp_path / "lw"), "train", SnapshotKey(0))
    wrong = int((snap.predictions != snap.labels).sum())
    assert wrong > 0  # a random head gets some rows wrong
    assert ("misclassified" in labels) is marked


# -- bad label columns, named early ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, "a"] * 6, r"column 'labels' mixes strings and numbers \(row 0 holds 0, row 1 holds 'a'\)"),
        (["a", 1] * 6, r"column 'labels' mixes strings and numbers"),
        ([0, None] * 6, r"column 'labels' has a missing label at row 1"),
        ([{"a": 1}] * 12, r"column 'labels' holds a dict at row 0"),
        ([0, -100] * 6, r"column 'labels' holds negative labels \(-100\)"),
    ],
)
def test_bad_label_columns_are_named_when_the_callback_is_built(tmp_path, labels, message):
    rows = toy_rows(12)
    rows["labels"] = labels  # a dict of columns: Arrow would refuse most of these itself
    with pytest.raises(ValueError, match=message):
        LayerwatchCallback({"train": rows}, tmp_path / "lw")


def test_splits_of_different_label_kinds_are_refused(tmp_path):
    strings = {**toy_rows(12), "labels": ["a", "b"] * 6}
    with pytest.raises(ValueError, match="the splits hold different kinds of labels"):
        LayerwatchCallback({"train": toy_dataset(12), "validation": strings}, tmp_path / "lw")


def test_a_datasetdict_passed_as_a_split_says_to_pick_one(tmp_path):
    dd = DatasetDict({"train": toy_dataset(12), "test": toy_dataset(8)})
    with pytest.raises(ValueError, match=r"got a DatasetDict \(with splits \['train', 'test'\]\).*ds\['train'\]"):
        LayerwatchCallback({"train": dd}, tmp_path / "lw")


def test_a_split_name_too_long_for_a_file_name_is_refused_when_built(tmp_path):
    with pytest.raises(ValueError, match="has 300 characters; split names become file names"):
        LayerwatchCallback({"v" * 300: toy_dataset(12)}, tmp_path / "lw")


def test_label_names_can_order_string_labels(tmp_path):
    rows = {**toy_rows(12), "labels": ["b", "a", "c"] * 4}
    watch = LayerwatchCallback({"train": rows}, tmp_path / "lw", label_names=["c", "b", "a"])
    assert watch.check_model(tiny_bert(num_labels=3)).label_names == ["c", "b", "a"]
    bad = LayerwatchCallback({"train": rows}, tmp_path / "lw2", label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"label_names=\['a', 'b'\] must list exactly the label strings"):
        bad.check_model(tiny_bert(num_labels=3))


# -- the vocabulary on its own ------------------------------------------------------------------------------

def test_vocabulary_round_trip_and_unknown_labels():
    base = canonical({"train": classify(["b", "a", "b"]), "validation": classify(["c"])})
    assert base.keys == ("a", "b", "c")
    assert base.encode(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"label 'z' \(row 1 of column 'labels'\) is not one of the run's labels"):
        base.encode(["a", "z"])
    assert LabelVocabulary.from_json(base.to_json()) == base
    assert LabelVocabulary.from_json(base.to_json()).digest() == base.digest()


def test_head_matching_rules():
    ints = canonical({"train": classify([0, 1, 2])})
    assert match_head(ints, None, 3).to_label == (0, 1, 2)
    assert match_head(ints, None, 5).to_label is None
    named = resolve(ints, label_names=["x", "y", "z"])
    # A bigger head whose id2label names the classes: matched by name.
    head = {0: "z", 1: "w", 2: "x", 3: "y"}
    assert match_head(named, head, 4).to_label == (2, -1, 0, 1)
    assert match_head(named, head, 4).map(np.array([0, 1, 3])).tolist() == [2, -1, 1]
    strings = resolve(canonical({"t": classify(["NEG", "pos"])}), id2label={0: "pos", 1: "neg"}, num_labels=2)
    assert strings.keys == ("pos", "NEG") and strings.names == ("pos", "NEG")
    assert match_head(strings, {0: "pos", 1: "neg"}, 2).to_label == (0, 1)
    reg = canonical({"t": classify([0.5, 1.25])})
    assert reg.regression and match_head(reg, None, 1).to_label is None


def test_class_label_names_name_integer_labels(tmp_path):
    features = Features({"input_ids": Sequence(Value("int64")), "attention_mask": Sequence(Value("int64")),
                         "labels": ClassLabel(names=["no", "yes"])})
    ds = Dataset.from_dict(toy_rows(12), features=features)
    watch = LayerwatchCallback({"train": ds}, tmp_path / "lw")
    assert watch.check_model(tiny_bert()).label_names == ["no", "yes"]


# -- every form a dataset hands a label out in ----------------------------------------------------------

def _formats(rows: dict) -> dict:
    """The same rows as a plain Dataset, in torch and numpy format, and as dicts of tensors / arrays."""
    ds = Dataset.from_dict(rows)

    def column(values, as_tensor):
        if isinstance(values[0], str):
            return list(values) if as_tensor else np.array(values)
        return torch.tensor(values) if as_tensor else np.array(values)

    return {
        "plain": ds,
        "torch": ds.with_format("torch"),
        "numpy": ds.with_format("numpy"),
        "tensors": {k: column(v, True) for k, v in rows.items()},
        "arrays": {k: column(v, False) for k, v in rows.items()},
    }


@pytest.mark.parametrize("kind", ["int", "float", "str"])
def test_labels_and_tokens_of_torch_and_numpy_formatted_datasets_equal_the_plain_ones(tmp_path, kind):
    rows = toy_rows(16, num_labels=2, pad_to=16)  # padded: a dict of tensors needs one width
    rows["text"] = [f"row {i} says {'yes' if i % 2 else 'no'}" for i in range(16)]
    column = {"int": "labels", "float": "score", "str": "name"}[kind]
    rows["score"] = [i / 7 for i in range(16)]
    rows["name"] = ["pos" if l else "neg" for l in rows["labels"]]
    # Sentence pairs: token types that change the vectors, read like the other inputs.
    rows["token_type_ids"] = [[0] * (sum(m) // 2) + [1] * (len(m) - sum(m) // 2) for m in rows["attention_mask"]]
    splits = _formats(rows)
    watch = LayerwatchCallback(splits, tmp_path / "lw", method="pca", progress=False, label_column=column,
                               max_samples=12)
    # The Trainer trains on the torch-formatted split itself, as users prepare it.
    make_trainer(tiny_bert(), splits["torch"], [watch], tmp_path / "t", epochs=1).train()
    store = RunStore(tmp_path / "lw")
    assert store.read_run()["labels"]["source"] == kind
    assert sorted(store.splits()) == sorted(splits)
    plain = load_snapshot(store, "plain", SnapshotKey(1))
    texts = store.load_texts("plain")
    assert plain.labels.dtype == (np.float32 if kind == "float" else np.int64)
    for name in splits:
        snap = load_snapshot(store, name, SnapshotKey(1))
        np.testing.assert_array_equal(snap.indices, plain.indices)
        np.testing.assert_array_equal(snap.labels, plain.labels)  # the same ids (or float32 targets)
        np.testing.assert_array_equal(snap.pooled, plain.pooled)  # the same tokens reached the model
        assert store.load_texts(name) == texts
    expected = np.asarray(rows[column])[plain.indices]
    if kind == "str":
        assert [store.read_run()["labels"]["names"][i] for i in plain.labels] == expected.tolist()
    else:
        np.testing.assert_allclose(plain.labels, expected.astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize(
    "values, kind, plain",
    [
        ([torch.tensor(1), torch.tensor(0)], "int", [1, 0]),
        ([torch.tensor(1, dtype=torch.int8), torch.tensor(2, dtype=torch.int32)], "int", [1, 2]),
        ([torch.tensor(True), torch.tensor(False)], "int", [1, 0]),
        ([torch.tensor(0.5, dtype=torch.bfloat16), torch.tensor(1.0, dtype=torch.float16)], "float", [0.5, 1.0]),
        ([torch.tensor(2.0), torch.tensor(0.0, dtype=torch.float64)], "int", [2, 0]),
        ([np.int64(1), np.uint8(0), np.array(2)], "int", [1, 0, 2]),
        ([np.float32(0.25), np.array(0.5)], "float", [0.25, 0.5]),
        ([np.str_("a"), "b", np.array("c")], "str", ["a", "b", "c"]),
        (torch.tensor([1, 0, 1]), "int", [1, 0, 1]),  # a whole column as one tensor
        (np.array([0.5, 1.5]), "float", [0.5, 1.5]),
    ],
)
def test_every_scalar_form_of_a_label_is_read_as_its_plain_value(values, kind, plain):
    assert classify(values) == (kind, plain)


@pytest.mark.parametrize("row", [torch.tensor([1, 0]), np.array([1, 0]), [1, 0]])
def test_a_row_of_several_labels_is_still_refused_in_every_form(row):
    with pytest.raises(ValueError, match="holds multi-label rows"):
        classify([row, row])
