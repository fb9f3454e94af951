"""Other kinds of models: decoder-only ones with left padding, wrappers that take **kwargs,
rows without tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PAD, VOCAB, make_trainer, tiny_bert, tiny_distilbert, toy_rows
from datasets import Dataset

import layerwatch
from layerwatch import LayerwatchCallback, RunStore
from layerwatch.snapshot import SnapshotKey
from layerwatch.measures.embeddings.files import load_snapshot


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=64, pad_token_id=PAD, num_labels=2)
    return GPT2ForSequenceClassification(cfg).eval()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, num_labels=2,
    )
    return LlamaForSequenceClassification(cfg).eval()


def left_padded(rows: dict, width: int) -> Dataset:
    """Rows stored as a decoder-only tokenizer with padding_side='left' stores them."""
    ids, masks = [], []
    for r in rows["input_ids"]:
        pad = width - len(r)
        ids.append([PAD] * pad + list(r))
        masks.append([0] * pad + [1] * len(r))
    return Dataset.from_dict({"input_ids": ids, "attention_mask": masks, "labels": rows["labels"]})


DECODERS = [pytest.param(tiny_gpt2, id="gpt2"), pytest.param(tiny_llama, id="llama")]


@pytest.mark.parametrize("make_model", DECODERS)
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_left_padded_rows_give_the_vectors_of_each_row_alone(make_model, pooling):
    model = make_model()
    rows = toy_rows(12, seed=4)
    snaps = [layerwatch.capture(model, left_padded(rows, w), pooling=pooling, batch_size=5) for w in (14, 40)]
    np.testing.assert_allclose(snaps[0].pooled, snaps[1].pooled, atol=1e-5)
    np.testing.assert_array_equal(snaps[0].predictions, snaps[1].predictions)
    for i in (0, 5, 11):
        ids = torch.tensor([rows["input_ids"][i]])
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        pick = (lambda h: h[0].mean(0)) if pooling == "mean" else (lambda h: h[0, -1])
        ref = np.stack([pick(h).numpy() for h in out.hidden_states])
        np.testing.assert_allclose(snaps[1].pooled[:, i], ref, atol=1e-5)
        assert snaps[1].predictions[i] == int(out.logits.argmax(-1))


def test_last_pooling_of_a_right_padded_encoder_row_is_its_last_real_token(bert):
    rows = toy_rows(6, seed=2, pad_to=20)
    snap = layerwatch.capture(bert, Dataset.from_dict(rows), pooling="last")
    for i, r in enumerate(rows["input_ids"]):
        n = sum(rows["attention_mask"][i])
        with torch.no_grad():
            out = bert(input_ids=torch.tensor([r[:n]]), output_hidden_states=True)
        np.testing.assert_allclose(snap.pooled[:, i], np.stack([h[0, -1].numpy() for h in out.hidden_states]), atol=1e-5)


@pytest.mark.parametrize("make_model", DECODERS)
def test_cls_pooling_is_refused_for_decoder_only_models(tmp_path, make_model):
    with pytest.raises(ValueError, match=r"pooling='cls' takes the first token.*use pooling='last'"):
        layerwatch.capture(make_model(), Dataset.from_dict(toy_rows(8)), pooling="cls")
    ds = Dataset.from_dict(toy_rows(16))
    watch = LayerwatchCallback({"train": ds}, tmp_path / "lw", pooling="cls", method="pca", progress=False)
    trainer = make_trainer(make_model(), ds, [watch], tmp_path / "t", epochs=1)
    with pytest.raises(ValueError, match=r"pooling='cls'"):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.parametrize("make_model", DECODERS)
def test_a_decoder_only_model_trains_and_is_filmed(tmp_path, make_model):
    rows = toy_rows(24, seed=1)
    train = left_padded(rows, 16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", pooling="last", method="pca", progress=False)
    make_trainer(make_model(), Dataset.from_dict(toy_rows(24, seed=1)), [watch], tmp_path / "t", epochs=1).train()
    store = RunStore(tmp_path / "lw")
    assert [k.name for k in store.keys("train", "frames")] == ["epoch_000", "epoch_001"]
    assert np.isfinite(load_snapshot(store, "train", SnapshotKey(1)).pooled).all()


# -- inputs through wrappers -------------------------------------------------------------------------

class KwargsOnly(torch.nn.Module):
    """A wrapper whose forward takes only **kwargs (as PEFT-style and compiled models do)."""

    def __init__(self, inner):
        super().__init__()
        self.wrapped = inner
        self.config = inner.config

    def forward(self, **kwargs):
        return self.wrapped(**kwargs)


class PeftLike(KwargsOnly):
    def __init__(self, inner):
        super().__init__(inner)
        self.base_model = inner


def _pairs(n: int = 12) -> dict:
    rows = toy_rows(n, seed=5)
    rows["token_type_ids"] = [[0] * (len(r) // 2) + [1] * (len(r) - len(r) // 2) for r in rows["input_ids"]]
    return rows


def test_token_type_ids_reach_a_model_behind_a_kwargs_wrapper():
    model = tiny_bert().eval()
    ds = Dataset.from_dict(_pairs())
    direct = layerwatch.capture(model, ds)
    wrapped = layerwatch.capture(KwargsOnly(model), ds)
    np.testing.assert_allclose(wrapped.pooled, direct.pooled, atol=1e-6)
    without = layerwatch.capture(model, ds.remove_columns("token_type_ids"))
    assert not np.allclose(without.pooled, direct.pooled, atol=1e-3)  # the types matter here


def test_a_wrapped_model_that_takes_no_token_types_is_not_given_them():
    model = tiny_distilbert().eval()
    ds = Dataset.from_dict(_pairs())
    direct = layerwatch.capture(model, ds.remove_columns("token_type_ids"))
    wrapped = layerwatch.capture(PeftLike(model), ds)
    np.testing.assert_allclose(wrapped.pooled, direct.pooled, atol=1e-6)


# -- rows without tokens ------------------------------------------------------------------------------

@pytest.mark.parametrize("empty", ["no-ids", "masked"])
def test_rows_without_tokens_are_named_before_training(tmp_path, empty):
    rows = toy_rows(12)
    if empty == "no-ids":
        rows["input_ids"][3], rows["attention_mask"][3] = [], []
        rows["input_ids"][7], rows["attention_mask"][7] = [], []
    else:
        rows["attention_mask"][3] = [0] * len(rows["input_ids"][3])
        rows["attention_mask"][7] = [0] * len(rows["input_ids"][7])
    with pytest.raises(ValueError, match=r"split 'train' has rows without any token \(rows 3, 7"):
        LayerwatchCallback({"train": Dataset.from_dict(rows)}, tmp_path / "lw")
    with pytest.raises(ValueError, match=r"rows without any token \(rows 3, 7"):
        layerwatch.capture(tiny_gpt2(), Dataset.from_dict(rows))


# -- real PEFT (LoRA) and other wrappers whose forward takes **kwargs ---------------------------------

def _lora(model, targets=("query", "value")):
    peft = pytest.importorskip("peft")
    # init_lora_weights=False: the adapters start non-zero, so they change every vector.
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False)
    torch.manual_seed(1)
    return peft.get_peft_model(model, config).eval()


def _merged(peft_model):
    import copy

    return copy.deepcopy(peft_model).merge_and_unload().eval()


def test_sentence_pairs_reach_bert_through_real_peft():
    from layerwatch.capturing import accepted_inputs  # the old name, kept

    model = _lora(tiny_bert())
    bare = _merged(model)
    ds = Dataset.from_dict(_pairs())
    assert "token_type_ids" in accepted_inputs(model)
    through_peft = layerwatch.capture(model, ds)
    direct = layerwatch.capture(bare, ds)
    np.testing.assert_allclose(through_peft.pooled, direct.pooled, atol=1e-5)
    without = layerwatch.capture(bare, ds.remove_columns("token_type_ids"))
    assert np.abs(without.pooled - direct.pooled).max() > 1e-2  # the types matter here


@pytest.mark.parametrize("targets", [("query", "value"), ("key", "dense")], ids=["query-value", "key-dense"])
def test_attention_and_attribution_through_real_peft_equal_the_merged_model(tmp_path, targets):
    # "dense" puts adapters on the attention output projection W_O, whose weight the norms read.
    from layerwatch.measures.attribution.ig import attribute
    from layerwatch.measures.attention.neuron import query_key_capture

    model = _lora(tiny_bert(), targets)
    bare = _merged(model)
    ds = Dataset.from_dict(_pairs(16))
    stored = {}
    for name, m in (("peft", model), ("bare", bare)):
        cb = LayerwatchCallback(
            {"train": ds}, output_dir=str(tmp_path / name), progress=False, method="pca", metrics=False, precision="fp32",
            attention=True, attention_examples=2, attribution=True, attribution_examples=2, attribution_steps=4,
            on_error="raise",
        )
        cb.snapshot(m, SnapshotKey(0, 0))
        store = RunStore(tmp_path / name)
        stored[name] = {kind: store.load_arrays(kind, "train", SnapshotKey(0, 0)) for kind in ("embeddings", "attention", "attribution")}
    for kind, arrays in stored["bare"].items():
        for key, value in arrays.items():
            got = stored["peft"][kind][key]
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                np.testing.assert_allclose(got, value, atol=1e-5 if value.dtype != np.float16 else 2e-3, err_msg=f"{kind} {key}")
            else:
                np.testing.assert_array_equal(got, value, err_msg=f"{kind} {key}")
    row = ds[0]
    ids, mask, types = (torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    got, want = query_key_capture(model, ids, mask, types), query_key_capture(bare, ids, mask, types)
    for key in ("q", "k", "attention"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
    got = attribute(model, ids, mask, types, target=1, steps=4, special_ids=(1, 2))
    want = attribute(bare, ids, mask, types, target=1, steps=4, special_ids=(1, 2))
    np.testing.assert_allclose(got.token_attributions, want.token_attributions, atol=1e-5)


class NamedThenKwargs(torch.nn.Module):
    """A user's wrapper that names some inputs, hands the rest on through **kwargs, and
    keeps the model under a name of its own."""

    def __init__(self, inner):
        super().__init__()
        self.encoder = inner
        self.config = inner.config

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)


@pytest.mark.parametrize("wrap", ["user-wrapper", "torch-compile"])
def test_sentence_pairs_reach_bert_through_other_kwargs_wrappers(wrap):
    from layerwatch.capturing import accepted_inputs

    model = tiny_bert().eval()
    wrapped = NamedThenKwargs(model) if wrap == "user-wrapper" else torch.compile(model, backend="eager")
    ds = Dataset.from_dict(_pairs())
    assert "token_type_ids" in accepted_inputs(wrapped)
    np.testing.assert_allclose(layerwatch.capture(wrapped, ds).pooled, layerwatch.capture(model, ds).pooled, atol=1e-6)


def test_a_wrapper_refuses_what_the_model_inside_does_not_take():
    from layerwatch.model_utils import accepted_inputs, model_inputs

    wrapped = NamedThenKwargs(tiny_distilbert().eval())
    assert "token_type_ids" not in accepted_inputs(wrapped)
    feed = {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3), "token_type_ids": torch.zeros(1, 3)}
    assert sorted(model_inputs(wrapped, feed)) == ["attention_mask", "input_ids"]

    class Opaque(torch.nn.Module):
        def forward(self, **kwargs):
            return kwargs

    assert accepted_inputs(Opaque()) is None  # nothing to follow: any keyword
