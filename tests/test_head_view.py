"""Head view data, the bertviz bridge and the query/key capture of the neuron view."""

from __future__ import annotations

import base64
import json
import math
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_bert, tiny_distilbert
from layerwatch.measures.attention.head_view import (
    MAX_NEURON_EXAMPLES,
    dequantise_maps,
    head_view_data,
    head_view_html,
    quantise_maps,
    show_bertviz,
    to_bertviz,
)
from layerwatch.measures.attention.neuron import attention_scores, eager_attention, query_key_capture


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def maps_of(snapshots: int, layers: int, heads: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return softmax(rng.normal(scale=2, size=(snapshots, layers, heads, n, n))).astype(np.float32)


def example(n: int = 5, snapshots: int = 2, seed: int = 0, **extra) -> dict:
    return {"tokens": [f"t{i}" for i in range(n)], "label": "pos", "maps": maps_of(snapshots, 2, 3, n, seed), **extra}


def test_quantisation_error_is_at_most_half_a_level():
    w = np.linspace(0, 1, 10001, dtype=np.float32)
    levels = quantise_maps(w)
    assert levels.dtype == np.uint8 and levels[0] == 0 and levels[-1] == 255
    assert np.abs(dequantise_maps(levels) - w).max() <= 1 / 510 + 1e-7


def test_page_data_holds_one_byte_per_weight():
    ex = example(n=7, snapshots=3)
    data = head_view_data([ex], ["epoch 0", "epoch 1", "epoch 2"])
    raw = base64.b64decode(data["examples"][0]["maps"])
    assert len(raw) == 3 * 2 * 3 * 7 * 7
    levels = np.frombuffer(raw, dtype=np.uint8).reshape(3, 2, 3, 7, 7)
    np.testing.assert_array_equal(levels, np.rint(ex["maps"] * 255))
    assert (data["layers"], data["heads"], data["levels"]) == (2, 3, 255)
    assert data["examples"][0]["tokens"] == ex["tokens"] and data["examples"][0]["neuron"] is None


def test_page_size_of_a_minilm_sized_example():
    # 6 layers x 12 heads x 40 tokens x 4 snapshots: one byte per weight, base64 adds a third.
    maps = np.full((4, 6, 12, 40, 40), 1 / 40, dtype=np.float16)
    data = head_view_data([{"tokens": ["w"] * 40, "label": "x", "maps": maps}], ["a", "b", "c", "d"])
    assert len(data["examples"][0]["maps"]) == 4 * math.ceil(4 * 6 * 12 * 40 * 40 / 3) == 614400


def test_same_input_gives_the_same_bytes():
    args = ([example(seed=1), example(n=3, seed=2)], ["start", "end"])
    assert head_view_html(*args) == head_view_html(*args)
    assert head_view_html(*args) != head_view_html([example(seed=3), example(n=3, seed=2)], ["start", "end"])


def test_bad_examples_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"examples\[0\]\['maps'\] has shape \(2, 2, 3, 5, 5\); expected .* = \(3, L, H, 5, 5\)"):
        head_view_data([example()], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"examples\[1\] lacks \['label'\]"):
        head_view_data([example(), {"tokens": ["a"], "maps": np.ones((2, 2, 3, 1, 1))}], ["a", "b"])
    other = {"tokens": ["a"], "label": "x", "maps": np.ones((2, 4, 3, 1, 1))}
    with pytest.raises(ValueError, match=r"examples\[1\]\['maps'\] has 4 layers x 3 heads; the first example has 2 x 3"):
        head_view_data([example(), other], ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        head_view_data([example(maps=maps_of(2, 2, 3, 5) * 3)], ["a", "b"])
    with pytest.raises(ValueError, match="snapshot_titles is empty"):
        head_view_data([example()], [])


def neuron(snapshots=(0, 1), n=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    shape = (len(snapshots), 2, 3, n, d)
    return {"q": rng.normal(size=shape), "k": rng.normal(size=shape), "snapshots": list(snapshots)}


def test_neuron_data_travel_exactly_as_float32():
    nd = neuron(snapshots=[1])
    data = head_view_data([example(neuron=nd)], ["a", "b"])
    entry = data["examples"][0]["neuron"]
    assert entry["d"] == 4 and entry["snapshots"] == [1]
    q = np.frombuffer(base64.b64decode(entry["q"]), dtype="<f4").reshape(1, 2, 3, 5, 4)
    np.testing.assert_array_equal(q, nd["q"].astype(np.float32))


def test_neuron_data_are_limited_and_checked():
    many = [example(neuron=neuron()) for _ in range(MAX_NEURON_EXAMPLES + 1)]
    with pytest.raises(ValueError, match="at most max_neuron_examples=2"):
        head_view_data(many, ["a", "b"])
    assert len(json.dumps(head_view_data(many, ["a", "b"], max_neuron_examples=3))) > 0
    with pytest.raises(ValueError, match=r"'snapshots'\]=\[0, 5\] must name 2 distinct snapshot indices in 0..1"):
        head_view_data([example(neuron=neuron(snapshots=[0, 5]))], ["a", "b"])
    with pytest.raises(ValueError, match=r"has q \(2, 2, 3, 4, 4\)"):
        head_view_data([example(neuron=neuron(n=4))], ["a", "b"])


def test_to_bertviz_gives_one_batch_of_one_per_layer():
    maps = maps_of(1, 3, 2, 4)[0]
    attention = to_bertviz(maps, ["a", "b", "c", "d"])
    assert isinstance(attention, tuple) and len(attention) == 3
    for layer, tensor in enumerate(attention):
        assert tensor.shape == (1, 2, 4, 4) and tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor[0].numpy(), maps[layer])
    with pytest.raises(ValueError, match=r"maps has shape \(3, 2, 4, 4\); expected \(layers, heads, 3, 3\)"):
        to_bertviz(maps, ["a", "b", "c"])


def test_show_bertviz_without_bertviz_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bertviz", None)  # makes the import fail
    with pytest.raises(ImportError, match=r'pip install "layerwatch\[bertviz\]"') as info:
        show_bertviz(maps_of(1, 1, 1, 2)[0], ["a", "b"])
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(ValueError, match="view='neuron' is not one of 'head', 'model'"):
        show_bertviz(maps_of(1, 1, 1, 2)[0], ["a", "b"], view="neuron")


@pytest.mark.parametrize("view", ["head", "model"])
def test_show_bertviz_hands_the_maps_to_bertviz(view):
    pytest.importorskip("bertviz")
    html = show_bertviz(maps_of(1, 2, 2, 3)[0], ["alpha", "beta", "gamma"], view=view, html_action="return")
    text = html.data
    assert "alpha" in text and "gamma" in text


def one_example(vocab: int = 100, n: int = 7, pad: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n + pad, dtype=torch.long)
    ids[:n] = torch.randint(5, vocab, (n,), generator=gen)
    mask = torch.zeros(n + pad, dtype=torch.long)
    mask[:n] = 1
    return ids, mask


@pytest.mark.parametrize("make", [tiny_bert, tiny_distilbert], ids=["bert", "distilbert"])
def test_softmax_of_the_scores_is_the_models_attention(make):
    model = make()
    ids, mask = one_example()
    before = model.config._attn_implementation
    out = query_key_capture(model, ids, mask)
    assert model.config._attn_implementation == before and model.training
    assert out["q"].shape == out["k"].shape == (2, 2, 7, 8)
    assert out["attention"].shape == (2, 2, 7, 7)
    assert out["positions"].tolist() == list(range(7))
    np.testing.assert_allclose(softmax(attention_scores(out["q"], out["k"])), out["attention"], atol=1e-4, rtol=0)
    # The attention is the model's own, from a separate pass over the padded row.
    model.eval()
    with eager_attention(model), torch.no_grad():
        reference = model(input_ids=ids[None], attention_mask=mask[None], output_attentions=True).attentions
    for layer, attn in enumerate(reference):
        np.testing.assert_allclose(out["attention"][layer], attn[0, :, :7, :7].numpy(), atol=1e-6, rtol=0)
    assert not np.allclose(out["attention"][0, 0], 1 / 7)  # random weights: not trivially uniform


def test_attention_scores_closed_form():
    q = np.array([[[1.0, 0.0, 2.0, 0.0]]])  # (heads=1, n=1, d=4)
    k = np.array([[[3.0, 5.0, 1.0, 7.0]]])
    assert attention_scores(q, k)[0, 0, 0] == pytest.approx((3.0 + 2.0) / 2.0)


def all_hooks(model) -> list:
    return [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


def our_hooks(model) -> list:
    return [h for h in all_hooks(model) if getattr(h, "__module__", "") == "layerwatch.measures.attention.neuron"]


def test_no_hook_is_left_behind_even_when_the_forward_raises():
    model = tiny_bert()
    model.train()
    before = model.config._attn_implementation
    ids, mask = one_example()
    query_key_capture(model, ids, mask)  # transformers installs hooks of its own on a first pass
    baseline = all_hooks(model)
    assert our_hooks(model) == []

    def broken(*args, **kwargs):
        raise RuntimeError("boom in layer 2")

    # Raises after the first layer's query and key hooks have fired.
    model.bert.encoder.layer[1].intermediate.forward = broken
    with pytest.raises(RuntimeError, match="boom in layer 2"):
        query_key_capture(model, ids, mask)
    assert our_hooks(model) == [] and all_hooks(model) == baseline
    assert model.config._attn_implementation == before
    assert model.training
    del model.bert.encoder.layer[1].intermediate.forward
    query_key_capture(model, ids, mask)
    assert all_hooks(model) == baseline


def test_unsupported_models_are_named():
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50, n_positions=16))
    with pytest.raises(ValueError, match=r"GPT2Model has no attention module with query and key projections.*DistilBERT"):
        query_key_capture(model, torch.tensor([1, 2, 3]), torch.tensor([1, 1, 1]))


def test_capture_takes_one_example():
    with pytest.raises(ValueError, match=r"input_ids has shape \(2, 3\); expected \(T,\) or \(1, T\)"):
        query_key_capture(tiny_bert(), torch.ones((2, 3), dtype=torch.long), torch.ones((2, 3)))


# -- a damaged layer: the page stays, the layer is marked, the cause is named ---------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_layer_is_marked_and_the_rest_of_the_page_kept(bad):
    ex = example(n=4, snapshots=3)
    ex["maps"][1, 1, 2, 0, 3] = bad  # one weight of layer 2 at snapshot 1
    data = head_view_data([ex, example(n=3, snapshots=3, seed=1)], ["a", "b", "c"])
    assert data["examples"][0]["damaged"] == [[1, 1]] and data["examples"][1]["damaged"] == []
    levels = np.frombuffer(base64.b64decode(data["examples"][0]["maps"]), dtype=np.uint8).reshape(3, 2, 3, 4, 4)
    assert (levels[1, 1] == 0).all()  # the damaged layer draws no line
    healthy = np.ones(levels.shape[:2], dtype=bool)
    healthy[1, 1] = False
    np.testing.assert_array_equal(levels[healthy], quantise_maps(np.nan_to_num(ex["maps"]))[healthy])  # the rest as stored
    assert "holds non-finite attention weights" in head_view_html([ex], ["a", "b", "c"])


def test_a_non_finite_query_or_key_vector_marks_its_layer_too():
    nd = neuron(snapshots=[1])
    nd["q"][0, 0, 1, 2, 3] = np.nan  # layer 1 at snapshot 1
    data = head_view_data([example(neuron=nd)], ["a", "b"])
    assert data["examples"][0]["damaged"] == [[1, 0]]
    q = np.frombuffer(base64.b64decode(data["examples"][0]["neuron"]["q"]), dtype="<f4").reshape(1, 2, 3, 5, 4)
    assert np.isfinite(q).all() and (q[0, 0] == 0).all()
    np.testing.assert_array_equal(q[0, 1], nd["q"][0, 1].astype(np.float32))


def test_weights_outside_zero_one_are_still_refused_naming_the_values():
    ex = example()
    ex["maps"][0, 0, 0, 0, 0] = 3.0
    with pytest.raises(ValueError, match=r"holds values outside \[0, 1\] \(from .* to 3\); pass attention probabilities"):
        head_view_data([ex], ["a", "b"])


def test_a_nan_layer_in_training_keeps_the_head_view_and_names_the_true_cause(tmp_path, caplog):
    import logging

    from conftest import toy_dataset

    from layerwatch import LayerwatchCallback
    from layerwatch.snapshot import SnapshotKey

    model = tiny_bert().eval()
    watch = LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "lw", method="pca", progress=False,
                               attention=True, attention_examples=2, precision="fp32")
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))

    query = model.bert.encoder.layer[1].attention.self.query.weight
    saved = query.detach().clone()
    with torch.no_grad():
        query[0, 0] = float("nan")  # layer 2 overflowed: its scores, weights and output are NaN
    try:
        with caplog.at_level(logging.WARNING, logger="layerwatch"):
            watch.snapshot(model, SnapshotKey(1))
    finally:
        with torch.no_grad():
            query.copy_(saved)
    page = (tmp_path / "lw" / "attention_head_view.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="layerwatch-data">')[1].split("</script>")[0])
    assert data["snapshots"] == ["epoch 0", "epoch 1"]
    assert [ex["damaged"] for ex in data["examples"]] == [[[1, 1]], [[1, 1]]]
    messages = [r.message for r in caplog.records]
    assert any("hold NaN or infinity" in m and "layer 2 at epoch 1" in m for m in messages), messages
    assert not any("outside [0, 1]" in m for m in messages)
