"""Every way a run ends gives every snapshot its own key; nothing finished is overwritten."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset
from transformers import EarlyStoppingCallback, TrainerCallback

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.snapshot import SnapshotKey, sort_keys
from layerwatch.measures.embeddings.files import load_snapshot, replace_metrics, save_snapshot


def _run(tmp_path, epochs=2, callbacks=(), every_n_steps=None, **kw):
    train = toy_dataset(32)  # 4 steps per epoch at batch 8
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, every_n_steps=every_n_steps)
    trainer = make_trainer(tiny_bert(), train, [watch, *callbacks], tmp_path / "t", epochs=epochs, **kw)
    trainer.train()
    return RunStore(tmp_path / "lw"), trainer


def _stored(store):
    """(name, epoch, step) of every stored snapshot, in training order."""
    return [(k.name, store.snapshot_key("train", k).epoch, store.snapshot_key("train", k).step) for k in store.keys("train")]


@pytest.mark.parametrize(
    "kw, expected",
    [
        # Half an epoch: the last snapshot must not replace the one before training.
        ({"max_steps": 2}, [("epoch_000", 0, 0), ("epoch_000_step_0000002", 0.5, 2)]),
        # 2.25 epochs: the end of epoch 2 is kept beside the snapshot inside epoch 3.
        ({"max_steps": 9}, [("epoch_000", 0, 0), ("epoch_001", 1, 4), ("epoch_002", 2, 8), ("epoch_002_step_0000009", 2.25, 9)]),
        # Python rounds 2.5 to 2: a fractional number of epochs.
        ({"epochs": 2.5}, [("epoch_000", 0, 0), ("epoch_001", 1, 4), ("epoch_002", 2, 8), ("epoch_002_step_0000010", 2.5, 10)]),
    ],
    ids=["max_steps-half-epoch", "max_steps-2.25-epochs", "num_train_epochs-2.5"],
)
def test_a_run_that_ends_inside_an_epoch_keeps_every_snapshot(tmp_path, kw, expected):
    epochs = kw.pop("epochs", 3)
    store, trainer = _run(tmp_path, epochs=epochs, **kw)
    assert _stored(store) == expected
    frames = [k.name for k in store.keys("train", "frames")]
    assert frames == [name for name, _, _ in expected]
    # Each snapshot keeps its own metrics rows, and the log history one entry per snapshot.
    rows = store.read_metrics()
    assert sorted({(r["epoch"], r["step"]) for r in rows}) == sorted((e, s) for _, e, s in expected)
    logged = [(h["epoch"], h["step"]) for h in trainer.state.log_history if "layerwatch/train/silhouette/layer_2" in h]
    assert logged == [(e, s) for _, e, s in expected]


def test_a_run_stopped_early_keeps_the_snapshot_before_training(tmp_path):
    class StopNow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                control.should_training_stop = True

    store, _ = _run(tmp_path, epochs=3, callbacks=[StopNow()])
    assert _stored(store) == [("epoch_000", 0, 0), ("epoch_000_step_0000001", 0.25, 1)]
    first = load_snapshot(store, "train", SnapshotKey(0))
    assert first.step == 0


def test_early_stopping_at_an_epoch_end(tmp_path):
    # Evaluation loss cannot improve with learning_rate 0: training stops after patience 1.
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    trainer = make_trainer(
        tiny_bert(), train, [watch, EarlyStoppingCallback(early_stopping_patience=1)], tmp_path / "t", epochs=5,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="loss",
        learning_rate=0.0, eval_dataset=train,
    )
    trainer.train()
    store = RunStore(tmp_path / "lw")
    names = [k.name for k in store.keys("train")]
    assert names == [f"epoch_{e:03d}" for e in range(len(names))]
    assert 2 <= len(names) < 6
    assert len({store.snapshot_key("train", k).step for k in store.keys("train")}) == len(names)


def test_every_n_steps_and_the_end_of_training(tmp_path):
    store, _ = _run(tmp_path, epochs=2, every_n_steps=3)  # 8 steps
    assert [(e, s) for _, e, s in _stored(store)] == [(0, 0), (0.75, 3), (1.5, 6), (2, 8)]


def test_keys_sort_in_training_order_whatever_their_names():
    keys = [
        SnapshotKey(2.25, 9), SnapshotKey(0), SnapshotKey(2, 8), SnapshotKey(1.5, 6, True), SnapshotKey(1, 4),
        SnapshotKey.parse("epoch_002"), SnapshotKey.parse("epoch_000_step_0000001"),
    ]
    assert [k.name for k in sort_keys(keys)] == [
        "epoch_000", "epoch_000_step_0000001", "epoch_001", "epoch_001_step_0000006", "epoch_002", "epoch_002_step_0000009",
    ]


def test_a_key_names_fractional_epochs_with_their_step():
    assert SnapshotKey(0.5, 2).name == "epoch_000_step_0000002"
    assert SnapshotKey(0.5, 2).title == "epoch 0.5, step 2"
    assert SnapshotKey(3, 12).name == "epoch_003" and SnapshotKey(3, 12).title == "epoch 3"
    assert SnapshotKey(3.0000000001, 12).name == "epoch_003"  # float sums of fractions
    with pytest.raises(ValueError, match="epoch=-1.0 must be a non-negative number"):
        SnapshotKey(-1)


def test_the_store_never_takes_one_snapshot_for_another(tmp_path):
    store = RunStore(tmp_path)
    from layerwatch.snapshot import Snapshot

    for key in (SnapshotKey(2, 8), SnapshotKey(2.25, 9)):
        snap = Snapshot(pooled=np.full((1, 3, 2), key.step, np.float32), labels=np.zeros(3, np.int64), layers=[0],
                        indices=np.arange(3), split="train")
        save_snapshot(store, snap, key)
        replace_metrics(store, "train", key, [{"split": "train", "epoch": key.epoch, "step": key.step, "layer": 0,
                                              "metric": "knn_accuracy", "value": float(key.step)}])
    assert [load_snapshot(store, "train", k).pooled[0, 0, 0] for k in store.keys("train")] == [8.0, 9.0]
    assert sorted(r["value"] for r in store.read_metrics()) == [8.0, 9.0]
