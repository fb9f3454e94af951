"""LoRA adapters (PEFT) through the Trainer with embeddings, attention and attribution on:
a BERT classifier and a Llama-style decoder classifier (left padding, grouped-query
attention, pad token = eos). What the run stores equals what the merged model gives."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import VOCAB, toy_rows
from datasets import Dataset

import layerwatch
from layerwatch import LayerwatchCallback, RunStore
from layerwatch.store import SnapshotKey
from layerwatch.measures.embeddings.files import load_snapshot

peft = pytest.importorskip("peft")

SETTINGS = dict(method="pca", max_samples=24, progress=False, precision="fp32", attention=True, attention_examples=3,
                attribution=True, attribution_examples=2, attribution_steps=4)
EOS = 2  # the Llama model's pad token is its eos token


def lora_bert():
    from conftest import tiny_bert

    # "dense" adapts every layer's attention output projection too (the W_O the norms read).
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], task_type="SEQ_CLS")
    return peft.get_peft_model(tiny_bert(seed=0), config)


def lora_llama():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=EOS, pad_token_id=EOS,
        num_labels=2,
    )
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "o_proj"], task_type="SEQ_CLS")
    return peft.get_peft_model(LlamaForSequenceClassification(cfg), config)


def bert_rows(n: int, seed: int) -> Dataset:
    return Dataset.from_dict(toy_rows(n, seed=seed))  # single sentences: no token_type_ids


def llama_rows(n: int, seed: int, width: int = 16) -> Dataset:
    """Rows as a decoder tokenizer with padding_side='left' and pad = eos stores them."""
    rows = toy_rows(n, seed=seed)
    ids, masks = [], []
    for r in rows["input_ids"]:
        body = r[:-1]  # no trailing eos: it is the pad token here
        ids.append([EOS] * (width - len(body)) + body)
        masks.append([0] * (width - len(body)) + [1] * len(body))
    return Dataset.from_dict({"input_ids": ids, "attention_mask": masks, "labels": rows["labels"]})


def train(model, splits, out, pooling: str, lr: float):
    from transformers import Trainer, TrainingArguments

    def collate(feats):
        # The stored padding is kept (left for the decoder, none for BERT's even rows).
        width = max(len(f["input_ids"]) for f in feats)
        pad = model.config.pad_token_id
        ids = torch.tensor([[pad] * (width - len(f["input_ids"])) + list(f["input_ids"]) for f in feats])
        mask = torch.tensor([[0] * (width - len(f["input_ids"])) + list(f["attention_mask"]) for f in feats])
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in feats])}

    watch = LayerwatchCallback(splits, out / "lw", pooling=pooling, **SETTINGS)
    args = TrainingArguments(
        output_dir=str(out / "t"), num_train_epochs=1, per_device_train_batch_size=8, learning_rate=lr, use_cpu=True,
        report_to=[], save_strategy="no", logging_strategy="epoch", disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=splits["train"], data_collator=collate, callbacks=[watch])
    trainer.train()
    assert watch.failures == []  # no step of any snapshot failed quietly
    return trainer.model, RunStore(out / "lw")


CASES = [
    pytest.param((lora_bert, bert_rows, "mean"), id="bert"),
    pytest.param((lora_llama, llama_rows, "last"), id="llama"),
]


@pytest.fixture(scope="module", params=CASES)
def lora_run(request, tmp_path_factory):
    make_model, rows, pooling = request.param
    out = tmp_path_factory.mktemp(make_model.__name__)
    splits = {"train": rows(24, 0), "validation": rows(12, 1)}
    model, store = train(make_model(), splits, out, pooling, lr=5e-2)
    model.eval()
    merged = copy.deepcopy(model).merge_and_unload().eval()
    return model, merged, store, splits, pooling, out


def test_the_adapter_really_changed_the_model(lora_run):
    model, merged, store, splits, pooling, _ = lora_run
    last = load_snapshot(store, "validation", SnapshotKey(1))
    with model.disable_adapter():
        base = layerwatch.capture(model, splits["validation"], indices=last.indices, pooling=pooling)
    assert np.abs(base.pooled[-1] - last.pooled[-1]).max() > 1e-3


def test_pooled_vectors_equal_the_merged_models(lora_run):
    model, merged, store, splits, pooling, _ = lora_run
    for split in ("train", "validation"):
        last = load_snapshot(store, split, SnapshotKey(1))
        ref = layerwatch.capture(merged, splits[split], indices=last.indices, pooling=pooling)
        np.testing.assert_allclose(last.pooled, ref.pooled, atol=1e-5)
        np.testing.assert_array_equal(last.predictions, ref.predictions)


def test_attention_and_attribution_show_the_adapted_model(lora_run, tmp_path):
    # The head view's maps, the statistics and the attention norms (whose W_O carries a
    # LoRA update in both models) equal those the merged model gives.
    model, merged, store, splits, pooling, _ = lora_run
    solo = LayerwatchCallback(splits, tmp_path / "merged", pooling=pooling, **SETTINGS)
    solo.setup(merged)
    solo.monitor.snapshot(merged, SnapshotKey(1), fatal=True)
    one = RunStore(tmp_path / "merged")
    seen = set()
    for split in ("train", "validation"):
        for kind in ("attention", "attribution"):
            a, b = store.load_arrays(kind, split, SnapshotKey(1)), one.load_arrays(kind, split, SnapshotKey(1))
            assert sorted(a) == sorted(b)
            for name in ("stats", "maps", "neuron_q", "neuron_k", "shares", "fnorm", "weighted", "conductance"):
                if name in b:
                    tol = 1e-3 if b[name].dtype == np.float16 else 1e-4
                    np.testing.assert_allclose(a[name].astype(float), b[name].astype(float), atol=tol, err_msg=f"{kind} {name}")
                    seen.add(name)
    assert {"stats", "maps", "shares", "conductance"} <= seen


def test_run_json_records_the_adapter(lora_run):
    model, _, store, *_ = lora_run
    adapter = store.read_run()["adapter"]
    config = model.peft_config["default"]
    assert adapter["default"]["peft_type"] == "LORA"
    assert adapter["default"]["r"] == config.r and adapter["default"]["alpha"] == config.lora_alpha
    assert adapter["default"]["target_modules"] == sorted(config.target_modules)
