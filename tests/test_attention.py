"""Attention statistics as a measurement of the snapshot: one pass, stored, drawn, rebuilt."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main, summarize
from layerwatch.measures.attention.stats import STATS
from layerwatch.snapshot import SnapshotKey
from layerwatch.measures.embeddings.files import drop_vectors, load_snapshot


def _uniform_bert():
    """A tiny BERT whose query and key weights and biases are zero: every head attends uniformly."""
    model = tiny_bert()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for proj in (layer.attention.self.query, layer.attention.self.key):
                proj.weight.zero_()
                proj.bias.zero_()
    return model


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("attention")
    train, val = toy_dataset(32), toy_dataset(24, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, out / "lw", method="pca", progress=False,
                               attention=True, attention_examples=4)
    model = tiny_bert()
    assert model.config._attn_implementation == "sdpa"  # the default returns no weights
    trainer = make_trainer(model, train, [watch], out / "t", epochs=2)
    trainer.train()
    return {"dir": out / "lw", "trainer": trainer, "model": model, "val": val, "train": train}


def test_statistics_of_every_head_reach_the_table_and_the_log(attention_run):
    store = RunStore(attention_run["dir"])
    rows = store.read_table("attention.csv")
    assert list(rows[0]) == ["split", "epoch", "step", "layer", "head", "stat", "value"]
    stats = {r["stat"] for r in rows}
    assert stats == set(STATS) | {"drift_first", "drift_prev"}
    assert {(r["layer"], r["head"]) for r in rows} == {(l, h) for l in (1, 2) for h in (1, 2)}  # layers 1..L
    assert {r["step"] for r in rows} == {0, 4, 8}
    assert {r["split"] for r in rows if r["stat"] == "drift_first"} == {"validation"}
    logged = [h for h in attention_run["trainer"].state.log_history if "layerwatch/train/attention_entropy/layer_2/head_1" in h]
    assert [h["step"] for h in logged] == [0, 4, 8]


def test_the_attention_implementation_is_restored_and_the_vectors_unchanged(attention_run, tmp_path):
    assert attention_run["model"].config._attn_implementation == "sdpa"
    train = attention_run["train"]
    # fp32 captures: the two are compared to float rounding (eager and SDPA attention differ
    # by more under bf16).
    plain = LayerwatchCallback({"train": train}, tmp_path / "plain", method="pca", progress=False, precision="fp32")
    both = LayerwatchCallback({"train": train}, tmp_path / "both", method="pca", progress=False, attention=True, precision="fp32")
    model = tiny_bert()
    for watch in (plain, both):
        watch.setup(model)
        watch.snapshot(model, SnapshotKey(0))
    a = load_snapshot(RunStore(tmp_path / "plain"), "train", SnapshotKey(0))
    b = load_snapshot(RunStore(tmp_path / "both"), "train", SnapshotKey(0))
    np.testing.assert_allclose(a.pooled, b.pooled, atol=1e-6)
    assert model.config._attn_implementation == "sdpa"


def test_attention_statistics_cost_no_second_forward_pass(tmp_path):
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, attention=True, batch_size=8)
    model = tiny_bert()
    calls = {"n": 0}
    forward = model.forward

    def counting(*a, **k):
        calls["n"] += 1
        return forward(*a, **k)

    model.forward = counting
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    assert calls["n"] == 4  # 32 rows at batch 8: hidden states and attention from the same calls


def test_a_uniform_model_has_entropy_log_length_in_every_head(tmp_path):
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, attention=True)
    model = _uniform_bert()
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    store = RunStore(tmp_path / "lw")
    arrays = store.load_arrays("attention", "train", SnapshotKey(0))
    lengths = np.array([sum(m) for m in train["attention_mask"]])
    expected = np.mean(np.log(lengths))
    entropy = arrays["stats"][:, :, STATS.index("entropy")]
    np.testing.assert_allclose(entropy, expected, rtol=1e-5)
    np.testing.assert_allclose(arrays["stats"][:, :, STATS.index("entropy_norm")], 1.0, rtol=1e-5)
    # The examples' stored maps are uniform over each row's real tokens.
    for r, n in enumerate(arrays["lengths"]):
        np.testing.assert_allclose(arrays["maps"][r, :, :, :n, :n].astype(np.float32), 1.0 / n, atol=2e-3)


def test_without_training_every_drift_is_zero(tmp_path):
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False, attention=True)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2, learning_rate=0.0).train()
    rows = RunStore(tmp_path / "lw").read_table("attention.csv")
    drift = [r["value"] for r in rows if r["stat"].startswith("drift_")]
    assert len(drift) == 4 * (1 + 2 + 2) and max(drift) < 1e-6  # no drift_prev at the start


def test_the_pictures_and_the_head_view_are_written(attention_run):
    root = attention_run["dir"]
    import imageio.v3 as iio

    for stat in (*STATS, "drift_first"):
        assert iio.improps(root / f"attention_{stat}.gif", index=None).shape[0] == 3, stat
    assert (root / "attention_summary.png").exists()
    page = (root / "attention_head_view.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="layerwatch-data">')[1].split("</script>")[0])
    assert data["snapshots"] == ["epoch 0", "epoch 1", "epoch 2"]
    assert len(data["examples"]) == 4 and data["layers"] == 2 and data["heads"] == 2


def test_render_rebuilds_the_attention_pictures_without_the_model(attention_run, tmp_path):
    copy = tmp_path / "lw"
    shutil.copytree(attention_run["dir"], copy)
    before = {(r["split"], r["step"], r["layer"], r["head"], r["stat"]): r["value"] for r in RunStore(copy).read_table("attention.csv")}
    shutil.rmtree(copy / "attention_frames")
    for f in os.listdir(copy):
        if f.startswith("attention_") and f.endswith((".gif", ".png", ".html")):
            os.remove(copy / f)
    assert main(["render", str(copy), "--method", "pca"]) == 0
    after = {(r["split"], r["step"], r["layer"], r["head"], r["stat"]): r["value"] for r in RunStore(copy).read_table("attention.csv")}
    assert after.keys() == before.keys()
    assert all(after[k] == pytest.approx(v, abs=1e-9) for k, v in before.items())
    assert (copy / "attention_entropy.gif").exists() and (copy / "attention_head_view.html").exists()


def test_layerwatch_attention_and_info_summarise_the_heads(attention_run, capsys):
    assert main(["attention", str(attention_run["dir"])]) == 0
    text = capsys.readouterr().out
    assert "heads whose attention moved most" in text and "layer" in text
    summary = summarize(str(attention_run["dir"]))["attention"]["validation"]
    rows = [r for r in RunStore(attention_run["dir"]).read_table("attention.csv") if r["stat"] == "drift_first" and r["step"] == 8]
    top = max(rows, key=lambda r: r["value"])
    assert (summary["moved_most"][0]["layer"], summary["moved_most"][0]["head"]) == (top["layer"], top["head"])
    assert main(["attention", str(attention_run["dir"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["validation"]["snapshots"] == 3


def test_stored_examples_go_to_bertviz_in_its_format(attention_run):
    from layerwatch.measures.attention.cli import stored_example
    from layerwatch.measures.attention.head_view import to_bertviz

    found = stored_example(str(attention_run["dir"]), example=1, snapshot=-1)
    n = len(found["tokens"])
    assert found["maps"].shape == (2, 2, n, n)
    np.testing.assert_allclose(found["maps"].sum(-1), 1.0, atol=1e-2)  # every query's weights
    layers = to_bertviz(found["maps"], found["tokens"])
    assert len(layers) == 2 and tuple(layers[0].shape) == (1, 2, n, n)
    with pytest.raises(ValueError, match="example=9 is out of range"):
        stored_example(str(attention_run["dir"]), example=9)


def test_stored_examples_of_snapshots_without_vectors(attention_run, tmp_path):
    # keep_vectors="drift" drops the vectors of middle snapshots (and a resume may leave the
    # last without): an example needs only the snapshot's rows.
    from layerwatch.measures.attention.cli import stored_example

    run = tmp_path / "lw"
    shutil.copytree(attention_run["dir"], run)
    before = [stored_example(str(run), example=1, snapshot=s)["row"] for s in range(3)]
    store = RunStore(run)
    for split in store.splits():
        for key in store.keys(split):
            drop_vectors(store, split, key)
    assert [stored_example(str(run), example=1, snapshot=s)["row"] for s in range(3)] == before


def test_bad_attention_settings_fail_when_built(tmp_path):
    with pytest.raises(ValueError, match=r"attention_split='test' is not a monitored split"):
        LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "a", attention=True, attention_split="test")
    watch = LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "b", attention=True, attention_examples=[999])
    with pytest.raises(ValueError, match=r"attention_examples=\[999\]: row 999 is not among the 16 monitored rows"):
        watch.check_model(tiny_bert())


def test_a_resumed_run_continues_the_attention_films(tmp_path):
    import imageio.v3 as iio
    from test_resume import StopAfter

    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    splits = {"train": train, "validation": val}
    lw = tmp_path / "lw"
    kw = dict(save_strategy="epoch")
    watch = LayerwatchCallback(splits, lw, method="pca", progress=False, attention=True)
    make_trainer(tiny_bert(), train, [watch, StopAfter(2)], tmp_path / "t", epochs=3, **kw).train()
    watch2 = LayerwatchCallback(splits, lw, method="pca", progress=False, attention=True)
    make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=3, **kw).train(
        resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-8"))
    assert iio.improps(lw / "attention_entropy.gif", index=None).shape[0] == 4
    drift = [r for r in RunStore(lw).read_table("attention.csv") if r["stat"] == "drift_first"]
    assert sorted({r["step"] for r in drift}) == [0, 4, 8, 12]
    # The drift after the resume is measured against the first snapshot of the whole run.
    assert all(r["value"] == 0 for r in drift if r["step"] == 0)
    assert any(r["value"] > 0 for r in drift if r["step"] == 12)


def test_the_head_view_carries_the_neuron_view_of_the_first_examples(attention_run):
    import base64

    from layerwatch.measures.attention.head_view import MAX_NEURON_EXAMPLES

    page = (attention_run["dir"] / "attention_head_view.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="layerwatch-data">')[1].split("</script>")[0])
    with_neuron = [e for e in data["examples"] if e["neuron"] is not None]
    assert len(with_neuron) == MAX_NEURON_EXAMPLES
    store = RunStore(attention_run["dir"])
    arrays = store.load_arrays("attention", "validation", SnapshotKey(2))
    for r in range(MAX_NEURON_EXAMPLES):
        n = int(arrays["lengths"][r])
        q, k = arrays["neuron_q"][r, :, :, :n], arrays["neuron_k"][r, :, :, :n]
        scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
        softmax = np.exp(scores - scores.max(-1, keepdims=True))
        softmax /= softmax.sum(-1, keepdims=True)
        np.testing.assert_allclose(softmax, arrays["maps"][r, :, :, :n, :n].astype(np.float32), atol=2e-3)
        entry = with_neuron[r]["neuron"]
        assert entry["snapshots"] == [0, 1, 2] and entry["d"] == q.shape[-1]
        assert len(base64.b64decode(entry["q"])) == 3 * q.size * 4


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_attention_statistics_of_models_without_a_bert_attention_module(tmp_path, family):
    # Statistics for any model that returns attention weights; the neuron view needs
    # BERT-style query and key projections and is left out elsewhere.
    from test_models import left_padded, tiny_gpt2, tiny_llama

    from conftest import toy_rows

    model = (tiny_gpt2 if family == "gpt2" else tiny_llama)()
    rows = toy_rows(16, seed=2)
    watch = LayerwatchCallback({"train": left_padded(rows, 20)}, tmp_path / "lw", method="pca", progress=False,
                               attention=True, pooling="last", attention_examples=3)
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    arrays = RunStore(tmp_path / "lw").load_arrays("attention", "train", SnapshotKey(0))
    assert arrays["stats"].shape == (2, 2, len(STATS)) and np.isfinite(arrays["stats"]).all()
    # Causal attention: no query attends to the token after it.
    assert np.allclose(arrays["stats"][:, :, STATS.index("next")], 0.0)
    assert "neuron_q" not in arrays
    assert (tmp_path / "lw" / "attention_head_view.html").exists()


def test_the_tools_are_sent_every_attention_film_and_the_table(attention_run):
    # What TensorBoard, W&B and MLflow get of the measurement once the run is over: a film
    # per statistic (the GIFs on disk) and attention.csv.
    import os

    from layerwatch.config import LayerwatchConfig
    from layerwatch.integrations.base import RunInfo
    from layerwatch.measures import AttentionMeasurement
    from layerwatch.measures.sent import File, Film, Scalar

    run = RunInfo.from_store(attention_run["dir"])
    items = AttentionMeasurement(LayerwatchConfig(output_dir=str(attention_run["dir"]))).sends(run, None)
    gifs = sorted(n for n in os.listdir(attention_run["dir"]) if n.startswith("attention_") and n.endswith(".gif"))
    assert len(gifs) == len(STATS) + 2  # every statistic, and the two drifts
    assert sorted(os.path.basename(i.path) for i in items if isinstance(i, Film)) == gifs
    assert [os.path.basename(i.path) for i in items if isinstance(i, File)] == ["attention.csv"]
    assert AttentionMeasurement(LayerwatchConfig()).sends(run, None, kinds=(Scalar,)) == []
