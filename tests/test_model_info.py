"""ModelInfo: what the monitor knows of the model, typed, handed to every measurement."""

from __future__ import annotations

import numpy as np
from conftest import tiny_bert, toy_rows, word_piece_tokenizer

from layerwatch import LayerwatchCallback
from layerwatch.labels import HeadMatch
from layerwatch.model_info import ModelInfo


def test_head_names_follow_the_heads_outputs():
    info = ModelInfo(head=HeadMatch((1, 0, 5), ""), label_names=["ham", "spam"])
    assert info.head_names == ["spam", "ham", "5"]  # an output with no name is named by its label id
    assert info.head_to_label == (1, 0, 5) and info.head_reason == ""
    assert ModelInfo(head=HeadMatch(None, "no head"), label_names=["a"]).head_names is None
    assert ModelInfo(head=HeadMatch(None, "no head")).head_reason == "no head"
    assert ModelInfo().head_names is None and ModelInfo().head_to_label is None


def test_check_model_fills_the_model_info_and_each_measurement_keeps_its_own(tmp_path):
    from datasets import Dataset

    tokenizer = word_piece_tokenizer(["a", "b", ",", "."])
    splits = {"train": Dataset.from_dict(toy_rows(20)), "validation": Dataset.from_dict(toy_rows(12, seed=1))}
    watch = LayerwatchCallback(splits, tmp_path / "lw", method="pca", progress=False, label_names=["ham", "spam"], attention=True,
                               attention_examples=2, attribution=True, attribution_examples=2, precision="fp32")
    monitor = watch.monitor
    monitor.check_model(tiny_bert(), tokenizer)
    info = monitor.model_info
    assert info.model_name == "BertForSequenceClassification" and info.tokenizer is tokenizer
    assert info.precision == "fp32" and info.autocast is not None
    assert info.label_names == ["ham", "spam"] and info.layers == (0, 1, 2)
    assert set(info.labels) == set(info.indices) == set(info.datasets) == {"train", "validation"}
    for name, split in watch.splits.items():
        np.testing.assert_array_equal(info.indices[name], split.indices)
        assert info.labels[name].shape == split.indices.shape and info.datasets[name] is split.dataset
    assert info.head_to_label is not None and info.head is monitor.head
    # The snapshotter reads the same object the measurements were prepared with.
    assert monitor.snapshotter.model_info is info
    by_name = {m.name: m for m in monitor.measurements}
    attention, attribution = by_name["attention"], by_name["attribution"]
    ids = tokenizer.convert_tokens_to_ids([",", ".", "[SEP]", "[PAD]"])
    assert {ids[0], ids[1]} <= attention._punct_ids and ids[2] in attention._sep_ids
    assert attribution._pad == ids[3] and attribution._split == "validation"
    assert set(attribution._classes[2]) == set(attention._punct_ids)
    assert len(attribution.examples["validation"]) == 2 and len(attention.examples["validation"]) == 2
    assert attribution.describe()["split"] == "validation"
    # No measurement wrote into the shared description.
    assert set(vars(info)) == {f for f in ModelInfo.__dataclass_fields__}
