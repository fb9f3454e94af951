"""Odd data: regression targets, tiny splits, non-finite vectors, hostile names, crashes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset, toy_rows
from datasets import Dataset

import layerwatch
from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main
from layerwatch.store import SnapshotKey


def test_float_labels_are_drawn_with_a_colormap(tmp_path):
    rows = toy_rows(24)
    rows["labels"] = [float(i) / 7 for i in range(24)]
    train = Dataset.from_dict(rows)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    assert watch.regression
    model = tiny_bert(num_labels=1)
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    fig = watch.pipeline._figure(3)
    # The figure holds a colour bar, no class legend, and colours from the targets.
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert not fig.legends
    values = fig.axes[0].collections[0].get_array()
    np.testing.assert_allclose(np.sort(values), np.sort(np.asarray(rows["labels"], dtype=np.float32)), rtol=1e-6)
    assert (tmp_path / "lw" / "frames" / "train" / "epoch_000.png").exists()


def test_split_too_small_for_the_perplexity_lowers_it_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        LayerwatchCallback({"train": toy_dataset(20)}, tmp_path / "lw", method="tsne")
    assert any("too few for t-SNE perplexity 30" in r.message and "lowered to 6.33333" in r.message for r in caplog.records)
    from layerwatch.reduce import Reducer

    with pytest.warns(UserWarning, match=r"perplexity lowered from 30 to 6\.33333 for 20 rows"):
        layout = Reducer("tsne", align=False)(np.random.default_rng(0).normal(size=(20, 8)))
    assert layout.shape == (20, 2) and np.isfinite(layout).all()


def test_non_finite_layer_is_reported_and_other_layers_drawn(tmp_path, caplog):
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    model = tiny_bert().eval()
    watch.setup(model)
    snap = layerwatch.capture(model, train, indices=watch.splits["train"].indices, split="train")
    snap.pooled[1, 3, 0] = np.inf
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        watch.pipeline.process({"train": snap}, SnapshotKey(4))
    assert any("epoch 4" in r.message and "layer 1 holds NaN or infinite values" in r.message for r in caplog.records)
    layout = RunStore(tmp_path / "lw").load_layout("train", SnapshotKey(4))["layout"]
    assert np.isfinite(layout[0]).all() and np.isfinite(layout[2]).all()
    assert np.isnan(layout[1]).all()
    assert (tmp_path / "lw" / "frames" / "train" / "epoch_004.png").exists()
    metrics = RunStore(tmp_path / "lw").read_metrics()
    assert {r["layer"] for r in metrics if r["metric"] == "silhouette"} == {0, 2}


def test_hostile_label_names_never_become_paths(tmp_path):
    rows = toy_rows(16)
    rows["labels"] = ["../../evil" if l else "/etc/passwd" for l in rows["labels"]]
    watch = LayerwatchCallback({"train": Dataset.from_dict(rows)}, tmp_path / "lw", method="pca", progress=False)
    make_trainer(tiny_bert(), Dataset.from_dict(toy_rows(16)), [watch], tmp_path / "t", epochs=1).train()
    written = {os.path.relpath(os.path.join(r, f), tmp_path) for r, _, fs in os.walk(tmp_path) for f in fs}
    assert all(p.startswith(("lw", "t")) for p in written)
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("name", ["..", "a/b", ".hidden", "x\\y", "", 3])
def test_unsafe_split_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="cannot be used as a folder name"):
        LayerwatchCallback({name: toy_dataset(8)}, tmp_path / "lw")


def test_stored_arrays_hold_no_pickles(tmp_path):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    for root, _, files in os.walk(tmp_path / "lw"):
        for f in files:
            if f.endswith(".npz"):
                with np.load(os.path.join(root, f), allow_pickle=False) as z:
                    for k in z.files:
                        assert z[k].dtype != object


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_trainer, tiny_bert, toy_dataset
    import layerwatch.store as store
    from layerwatch import LayerwatchCallback

    original = store.RunStore.save_layout

    def die_in_epoch_two(self, split, key, *a, **k):
        if key.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like a scheduler's kill
        return original(self, split, key, *a, **k)

    store.RunStore.save_layout = die_in_epoch_two
    train = toy_dataset(24)
    watch = LayerwatchCallback({{"train": train, "validation": toy_dataset(16, seed=1)}}, {out!r}, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], {tout!r}, epochs=3).train()
    """
)


def test_a_killed_run_keeps_every_finished_epoch(tmp_path):
    out, tests = tmp_path / "lw", os.path.dirname(__file__)
    script = KILLED_RUN.format(tests=tests, out=str(out), tout=str(tmp_path / "t"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    store = RunStore(out)
    for split in ("train", "validation"):
        assert [k.name for k in store.keys(split, "frames")] == ["epoch_000", "epoch_001"]
        assert iio.improps(out / f"{split}.gif", index=None).shape[0] == 2
        for k in store.keys(split):
            assert np.isfinite(store.load_snapshot(split, k).pooled).all()
    # Epoch 2's metrics were written as soon as they were computed, before the kill.
    assert {r["epoch"] for r in store.read_metrics()} == {0, 1, 2}
    # The embeddings of epoch 2 were written before the kill; render rebuilds from all of them.
    assert main(["render", str(out), "--method", "pca"]) == 0
    n = len(store.keys("train"))
    assert n == 3
    assert iio.improps(out / "train.gif", index=None).shape[0] == n


def test_sharded_training_without_the_wrapped_model_fails_with_a_message(tmp_path):
    from types import SimpleNamespace

    watch = LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "lw", method="pca", progress=False)
    args = SimpleNamespace(fsdp="full_shard auto_wrap")
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, epoch=0.0, log_history=[])
    with pytest.raises(ValueError, match=r"shards the model \(fsdp\).*watch\.attach\(trainer\)"):
        watch.on_train_begin(args, state, None, model=tiny_bert())
    assert not (tmp_path / "lw" / "embeddings").exists()


# -- settings that pick rows: one validator, at construction -------------------------------------------

@pytest.mark.parametrize("name", ["attention_examples", "attribution_examples"])
@pytest.mark.parametrize(
    "value, message",
    [
        ("3", r"='3' is a string; pass a count \(\w+=3\) or a list of dataset rows"),
        ("12", r"='12' is a string"),
        (b"1", r"=b'1' is a string"),
        (["3", "12"], r"holds '3', which is not a row index"),
        ([1.5], r"holds 1.5, which is not a row index"),
        ([True, 2], r"holds True, which is not a row index"),
        ([[1, 2]], r"holds \[1, 2\], which is not a row index"),
        ([-1], r"holds the negative row -1"),
        ([], r"names no row"),
        (0, r"=0 must be a positive count"),
        (2.0, r"=2.0 is not a count or a list of rows"),
        (None, r"=None is not a count or a list of rows"),
        ({"rows": [1]}, r"is not a count or a list of rows"),
    ],
)
def test_row_settings_refuse_what_is_not_a_count_or_rows_when_built(tmp_path, name, value, message):
    with pytest.raises(ValueError, match=rf"{name}.*{message}"):
        LayerwatchCallback({"train": toy_dataset(12)}, tmp_path / "lw", attention=True, attribution=True, **{name: value})


@pytest.mark.parametrize("value, rows", [(3, 3), ([4, 1], (4, 1)), ((2,), (2,)), (range(1, 3), (1, 2)),
                                         ({5, 2}, (2, 5)), (np.array([3, 7]), (3, 7)), (np.int64(2), 2)])
def test_row_settings_accept_counts_and_every_sequence_of_rows(tmp_path, value, rows):
    from layerwatch import Attention, Attribution

    for settings in (Attention, Attribution):
        assert settings(examples=value).examples == rows
    for name in ("attention", "attribution"):
        watch = LayerwatchCallback({"train": toy_dataset(12)}, tmp_path / name, **{name: True, f"{name}_examples": value})
        assert watch.config.measure(name).examples == rows
