"""Capture and pooling: exact pooling, padding invariance, the model left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PAD, tiny_bert, tiny_distilbert, toy_dataset, toy_rows

import layerwatch
from layerwatch.pooling import cls_pool, mean_pool


def test_mean_pool_ignores_padding_exactly():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    hidden[0, 2:] = 1e6  # padding garbage must never enter the sum
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = mean_pool(hidden, mask)
    torch.testing.assert_close(out[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(out[1], hidden[1].mean(0))


def test_mean_pool_of_fully_masked_row_is_zero_not_nan():
    out = mean_pool(torch.ones(1, 3, 2), torch.zeros(1, 3))
    assert torch.equal(out, torch.zeros(1, 2))


def test_cls_pool_picks_token_zero():
    hidden = torch.randn(3, 5, 4)
    torch.testing.assert_close(cls_pool(hidden, torch.ones(3, 5)), hidden[:, 0])


def test_capture_cls_equals_first_token_of_model_output(bert, train_ds):
    snap = layerwatch.capture(bert, train_ds, pooling="cls", batch_size=7)
    row = train_ds[5]
    with torch.no_grad():
        out = bert(input_ids=torch.tensor([row["input_ids"]]), attention_mask=torch.tensor([row["attention_mask"]]),
                   output_hidden_states=True)
    for j, layer in enumerate(snap.layers):
        np.testing.assert_allclose(snap.pooled[j, 5], out.hidden_states[layer][0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("make_model", [tiny_bert, tiny_distilbert], ids=["bert", "distilbert"])
def test_padding_invariance_12_vs_40_tokens(make_model):
    """A row's mean-pooled vector is the same whether its batch pads it to 12 or 40 tokens."""
    model = make_model().eval()
    row = toy_rows(1, seed=3)["input_ids"][0][:9]
    vectors = []
    for width in (12, 40):
        ids = torch.full((1, width), PAD)
        ids[0, : len(row)] = torch.tensor(row)
        mask = (torch.arange(width) < len(row)).long()[None]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        vectors.append(torch.stack([mean_pool(h, mask)[0] for h in out.hidden_states]))
    torch.testing.assert_close(vectors[0], vectors[1], atol=1e-5, rtol=0)


def test_capture_same_vectors_whatever_the_stored_padding(bert):
    plain = layerwatch.capture(bert, toy_dataset(30, seed=2), batch_size=4)
    padded = layerwatch.capture(bert, toy_dataset(30, seed=2, pad_to=40), batch_size=30)
    np.testing.assert_allclose(plain.pooled, padded.pooled, atol=1e-5)


def test_capture_mean_matches_unbatched_reference(bert, train_ds):
    snap = layerwatch.capture(bert, train_ds, batch_size=5)
    for i in (0, 17, 47):
        r = train_ds[i]
        with torch.no_grad():
            out = bert(input_ids=torch.tensor([r["input_ids"]]), output_hidden_states=True)
        ref = np.stack([h[0].mean(0).numpy() for h in out.hidden_states])
        np.testing.assert_allclose(snap.pooled[:, i], ref, atol=1e-5)


def test_capture_shapes_layers_and_labels(train_ds):
    model = tiny_bert(layers=3)
    snap = layerwatch.capture(model, train_ds, layers=[0, 2, 3], batch_size=16)
    assert snap.pooled.shape == (3, len(train_ds), 16)
    assert snap.pooled.dtype == np.float32
    assert snap.layers.tolist() == [0, 2, 3]
    assert snap.indices.tolist() == list(range(len(train_ds)))
    assert snap.labels.tolist() == train_ds["labels"]
    assert snap.predictions is not None and snap.predictions.shape == (len(train_ds),)


def test_capture_without_head_has_no_predictions(train_ds):
    snap = layerwatch.capture(tiny_bert(num_labels=None), train_ds)
    assert snap.predictions is None
    assert snap.pooled.shape[0] == 3


def test_capture_distilbert_without_token_type_ids(train_ds):
    ds = train_ds.add_column("token_type_ids", [[0] * len(r) for r in train_ds["input_ids"]])
    snap = layerwatch.capture(tiny_distilbert(), ds)
    assert snap.pooled.shape == (3, len(ds), 16)


def test_capture_subset_is_stratified_and_seeded():
    ds = toy_dataset(90, num_labels=3)
    model = tiny_bert(num_labels=3)
    a = layerwatch.capture(model, ds, max_samples=30, seed=4)
    b = layerwatch.capture(model, ds, max_samples=30, seed=4)
    c = layerwatch.capture(model, ds, max_samples=30, seed=5)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.tolist() != c.indices.tolist()
    assert np.bincount(a.labels).tolist() == [10, 10, 10]


def test_capture_leaves_mode_flags_and_gradients_untouched(train_ds):
    model = tiny_bert()
    model.train()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    ids = torch.tensor([train_ds[0]["input_ids"]])
    model(input_ids=ids, labels=torch.tensor([1])).loss.backward()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}

    layerwatch.capture(model, train_ds, batch_size=8)

    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        if grads[n] is None:
            assert p.grad is None, n
        else:
            assert torch.equal(p.grad, grads[n]), n


def test_capture_restores_mode_when_forward_raises(train_ds):
    model = tiny_bert()
    model.train()

    def boom(*a, **k):
        raise RuntimeError("forward failed")

    model.forward = boom
    with pytest.raises(RuntimeError, match="forward failed"):
        layerwatch.capture(model, train_ds)
    assert model.training


def test_capture_rebuilds_mask_from_pad_token(bert):
    rows = toy_rows(12, pad_to=20)
    from datasets import Dataset

    with_mask = layerwatch.capture(bert, Dataset.from_dict(rows))
    rows.pop("attention_mask")
    without = layerwatch.capture(bert, Dataset.from_dict(rows))
    np.testing.assert_allclose(with_mask.pooled, without.pooled, atol=1e-5)


def test_capture_accepts_a_dict_of_columns(bert):
    snap = layerwatch.capture(bert, toy_rows(10))
    assert snap.pooled.shape[1] == 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": [0, 9]}, r"index 9 is out of range.*valid indices are 0\.\.2"),
        ({"pooling": "max"}, r"pooling='max' is not one of 'mean', 'cls'"),
        ({"label_column": "target"}, r"no column 'target'; pass label_column= one of"),
        ({"batch_size": 0}, r"batch_size=0 must be a positive integer"),
    ],
)
def test_capture_bad_arguments(bert, train_ds, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layerwatch.capture(bert, train_ds, **kwargs)


def test_capture_model_without_hidden_states(train_ds):
    class NoStates(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def forward(self, input_ids, attention_mask=None, **kw):
            return {"logits": torch.zeros(len(input_ids), 2)}

    with pytest.raises(ValueError, match="returned no hidden_states"):
        layerwatch.capture(NoStates(), train_ds)


# -- each module's own mode, after every measurement pass --------------------------------------
def _mixed_modes_model():
    """Training mode, but for a frozen first layer and the classifier's dropout, which the
    user keeps in eval on purpose."""
    model = tiny_bert()
    model.train()
    model.bert.encoder.layer[0].eval()
    model.dropout.eval()
    return model


def _passes(ds, tmp_path):
    from layerwatch.measures.attribution.ig import attribute
    from layerwatch.measures.attribution.norms import norm_maps
    from layerwatch.measures.attention.neuron import query_key_capture
    from layerwatch.snapshot import SnapshotKey

    ids, mask = torch.tensor([ds[0]["input_ids"]]), torch.tensor([ds[0]["attention_mask"]])

    def snapshot(model):
        cb = layerwatch.LayerwatchCallback(
            {"train": ds}, output_dir=str(tmp_path / "lw"), progress=False, method="pca", metrics=False, overwrite=True,
            attention=True, attention_examples=2, attribution=True, attribution_examples=2, attribution_steps=4,
            on_error="raise",
        )
        cb.snapshot(model, SnapshotKey(0, 0))

    return {
        "capture": lambda m: layerwatch.capture(m, ds, batch_size=8),
        "neuron": lambda m: query_key_capture(m, ids, mask),
        "attribute": lambda m: attribute(m, ids, mask, target=0, steps=4, special_ids=(1, 2)),
        "norm_maps": lambda m: norm_maps(m, ids, mask),
        "snapshot": snapshot,
    }


@pytest.mark.parametrize("name", ["capture", "neuron", "attribute", "norm_maps", "snapshot"])
@pytest.mark.parametrize("raises", [False, True], ids=["ok", "forward-raises"])
def test_every_pass_gives_each_module_its_own_mode_back(train_ds, tmp_path, name, raises):
    model = _mixed_modes_model()
    modes = {n: m.training for n, m in model.named_modules()}
    assert not modes["bert.encoder.layer.0"] and not modes["dropout"] and modes["bert.encoder.layer.1"]
    seen = {}

    def check(module, _inputs):
        seen["training"] = module.training  # the pass itself runs in eval mode
        if raises:
            raise RuntimeError("forward failed")

    handle = model.bert.encoder.layer[1].register_forward_pre_hook(check)
    try:
        if raises:
            with pytest.raises(RuntimeError, match="forward failed"):
                _passes(train_ds, tmp_path)[name](model)
        else:
            _passes(train_ds, tmp_path)[name](model)
    finally:
        handle.remove()
    assert seen == {"training": False}
    assert {n: m.training for n, m in model.named_modules()} == modes


def test_kept_modes_restores_each_module():
    from layerwatch.model_utils import kept_modes

    model = _mixed_modes_model()
    modes = {n: m.training for n, m in model.named_modules()}
    with pytest.raises(ValueError, match="inside"):
        with kept_modes(model):
            assert not any(m.training for m in model.modules())
            model.train()  # whatever the block does to the modes
            raise ValueError("inside")
    assert {n: m.training for n, m in model.named_modules()} == modes
