"""Resumed and interrupted runs: numbering continues, nothing is lost, duplicated or mixed."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset
from transformers import TrainerCallback

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main
from layerwatch.store import SnapshotKey
from layerwatch.measures.embeddings.files import load_snapshot


class StopAfter(TrainerCallback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if round(state.epoch) >= self.epoch:
            control.should_training_stop = True


def _train(tmp_path, restore_states: bool):
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    splits = {"train": train, "validation": val}
    lw = tmp_path / "lw"
    kw = dict(save_strategy="epoch", restore_callback_states_from_checkpoint=restore_states)
    watch = LayerwatchCallback(splits, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch, StopAfter(2)], tmp_path / "t", epochs=3, **kw).train()
    first_epoch0 = os.path.getmtime(lw / "embeddings" / "train" / "epoch_000.npz")
    assert sorted(os.listdir(lw / "frames" / "train")) == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]

    watch2 = LayerwatchCallback(splits, lw, method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=3, **kw)
    trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-8"))
    return lw, first_epoch0, trainer


@pytest.mark.parametrize("restore_states", [True, False], ids=["stateful-callback", "run-dir-only"])
def test_resume_continues_numbering_without_duplicates(tmp_path, restore_states):
    lw, first_epoch0, trainer = _train(tmp_path, restore_states)
    for split in ("train", "validation"):
        assert sorted(os.listdir(lw / "frames" / split)) == [f"epoch_{e:03d}.png" for e in range(4)]
        assert iio.improps(lw / f"{split}.gif", index=None).shape[0] == 4
    assert os.path.getmtime(lw / "embeddings" / "train" / "epoch_000.npz") == first_epoch0
    store = RunStore(lw)
    steps = [load_snapshot(store, "train", k).step for k in store.keys("train")]
    assert steps == [0, 4, 8, 12]
    idx = [load_snapshot(store, "validation", k).indices.tolist() for k in store.keys("validation")]
    assert all(i == idx[0] for i in idx)
    epochs = sorted({r["epoch"] for r in store.read_metrics()})
    assert epochs == [0, 1, 2, 3]


def test_resume_with_other_rows_is_refused(tmp_path):
    train = toy_dataset(32)
    lw = tmp_path / "lw"
    kw = dict(save_strategy="epoch", restore_callback_states_from_checkpoint=True)
    watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch, StopAfter(1)], tmp_path / "t", epochs=2, **kw).train()
    watch2 = LayerwatchCallback({"train": train}, lw, method="pca", progress=False, seed=7, max_samples=20)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=2, **kw)
    with pytest.raises(ValueError, match="now yields other rows than the run being resumed"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-4"))


def test_half_written_and_damaged_files_are_never_taken_for_whole_ones(tmp_path):
    train = toy_dataset(24)
    lw = tmp_path / "lw"
    watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2).train()
    # A process killed mid-write leaves only a temporary file behind.
    (lw / "embeddings" / "train" / ".tmp-x1.npz").write_bytes(b"PK\x03\x04partial")
    (lw / "frames" / "train" / ".tmp-x2.png").write_bytes(b"\x89PNG partial")
    for f in ("train.gif",):
        os.remove(lw / f)
    assert main(["render", str(lw), "--method", "pca"]) == 0
    assert iio.improps(lw / "train.gif", index=None).shape[0] == 3
    snap = load_snapshot(RunStore(lw), "train", SnapshotKey(2))
    assert np.isfinite(snap.pooled).all()


@pytest.mark.parametrize("restore_states", [True, False], ids=["stateful-callback", "run-dir-only"])
@pytest.mark.parametrize(
    "changed, named",
    [({"seed": 7}, r"seed=0 \(now 7\)"), ({"max_samples": 20}, "other rows"), ({"layers": [0, 2]}, r"layers='all' \(now \[0, 2\]\)")],
)
def test_resume_with_other_settings_is_refused_and_the_run_kept(tmp_path, restore_states, changed, named):
    train = toy_dataset(32)
    lw = tmp_path / "lw"
    kw = dict(save_strategy="epoch", restore_callback_states_from_checkpoint=restore_states)
    watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch, StopAfter(1)], tmp_path / "t", epochs=2, **kw).train()
    run_json = (lw / "run.json").read_text()
    watch2 = LayerwatchCallback({"train": train}, lw, method="pca", progress=False, **changed)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=2, **kw)
    with pytest.raises(ValueError, match=named):
        trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-4"))
    assert (lw / "run.json").read_text() == run_json
    assert iio.improps(lw / "train.gif", index=None).shape[0] == 2


def test_resume_with_another_method_is_refused(tmp_path):
    train = toy_dataset(32)
    lw = tmp_path / "lw"
    kw = dict(save_strategy="epoch")
    watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch, StopAfter(1)], tmp_path / "t", epochs=2, **kw).train()
    watch2 = LayerwatchCallback({"train": train}, lw, method="tsne", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=2, **kw)
    with pytest.raises(ValueError, match=r"holds a run taken with other settings: method='pca' \(now 'tsne'\)"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-4"))


def test_a_resume_moves_snapshots_of_the_abandoned_course_aside(tmp_path):
    # The first run goes on to epoch 3 after its checkpoint at step 8 (epoch 2); resuming
    # from that checkpoint, the stored epoch 3 belongs to a course that no longer exists.
    train = toy_dataset(32)
    lw = tmp_path / "lw"
    watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=3, save_strategy="steps", save_steps=8).train()
    old_epoch3 = (lw / "embeddings" / "train" / "epoch_003.npz").read_bytes()
    watch2 = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=3, save_strategy="no")
    trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-8"))
    moved = list((lw / "superseded").glob("*/embeddings/train/epoch_003.npz"))
    assert len(moved) == 1 and moved[0].read_bytes() == old_epoch3
    store = RunStore(lw)
    assert [store.snapshot_key("train", k).step for k in store.keys("train")] == [0, 4, 8, 12]
    assert iio.improps(lw / "train.gif", index=None).shape[0] == 4
    assert sorted(r["step"] for r in store.read_metrics() if r["metric"] == "silhouette" and r["layer"] == 0) == [0, 4, 8, 12]


def _names_outside_superseded(root):
    """Every file of the run directory whose name is a snapshot key, outside superseded/."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "superseded"]
        for f in files:
            key = SnapshotKey.parse(os.path.splitext(f)[0])
            if key is not None:
                found.append((os.path.relpath(os.path.join(folder, f), root), key))
    return found


def test_a_resume_to_fewer_epochs_leaves_no_abandoned_frame_of_any_measurement(tmp_path):
    # Three epochs with a checkpoint per epoch, then a resume from epoch 1's checkpoint to
    # two epochs: the stored epoch 3 (and the first run's epoch 2) belong to an abandoned
    # course, in every measurement's folders and tables, whatever their layout.
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    splits = {"train": train, "validation": val}
    lw = tmp_path / "lw"
    kw = dict(method="pca", progress=False, attention=True, attention_examples=2, attribution=True,
              attribution_examples=2, attribution_steps=4)
    watch = LayerwatchCallback(splits, lw, **kw)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=3, save_strategy="epoch").train()
    assert any("epoch_003" in name for name, _ in _names_outside_superseded(lw / "attention_frames"))
    watch2 = LayerwatchCallback(splits, lw, **kw)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=2, save_strategy="no")
    trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-4"))
    store = RunStore(lw)
    assert [store.snapshot_key("train", k).step for k in store.keys("train")] == [0, 4, 8]
    existing = {"epoch_000", "epoch_001", "epoch_002"}
    stray = [name for name, key in _names_outside_superseded(lw) if key.name not in existing]
    assert stray == []
    assert list((lw / "superseded").glob("*/attention_frames/*/epoch_003.png"))
    assert list((lw / "superseded").glob("*/attribution_frames/*/epoch_003.png"))
    # The first run's epoch 2 was moved aside too: what is there now is the new course's.
    new_epoch2 = store.snapshot_key("train", SnapshotKey(2))
    assert new_epoch2.step == 8 and list((lw / "superseded").glob("*/attention/train/epoch_002.npz"))
    for table in ("metrics.csv", "attention.csv", "norms.csv"):
        rows = store.read_table(table)
        assert rows and {r["step"] for r in rows} == {0, 4, 8}, table
    films = sorted(lw.glob("attention_*.gif")) + sorted(lw.glob("attribution_*.gif")) + sorted(lw.glob("*.gif"))
    assert any(f.name.startswith("attribution_") for f in films) and any(f.name.startswith("attention_") for f in films)
    for gif in set(films):
        # drift against the previous snapshot has no frame at the first one
        expected = 2 if gif.name == "attention_drift_prev.gif" else 3
        assert iio.improps(gif, index=None).shape[0] == expected, gif.name


def test_a_resume_supersedes_every_folder_layout_of_a_measurement(tmp_path):
    # A measurement defined here keeps its frames in folders named by anything (not a
    # split), with epoch-only names, a table of its own and a nested folder: the rule is one.
    from layerwatch.measures import Measurement, register, unregister

    class Deep(Measurement):
        name = "deep"
        output_flags = {"output_hidden_states": True}

        def process(self, ctx, key, snaps):
            for folder in ("deep_frames/entropy-of-everything", "deep_frames/by.example.7/nested"):
                ctx.store.write_bytes(os.path.join(ctx.store.root, folder, key.name + ".png"), b"frame")
            row = {"split": "train", "epoch": key.epoch, "step": key.step, "stat": "n", "value": 1.0}
            ctx.store.replace_rows("deep.csv", ("split", "epoch", "step", "stat", "value"), "train", key, [row], owner=self.name)
            return {}

    register(Deep)
    try:
        train = toy_dataset(32)
        lw = tmp_path / "lw"
        watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
        make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=3, save_strategy="epoch").train()
        watch2 = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
        trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=1, save_strategy="no")
        trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-4"))
    finally:
        unregister(Deep.name)
    stray = [name for name, key in _names_outside_superseded(lw) if key.name not in {"epoch_000", "epoch_001"}]
    assert stray == []
    assert len(list((lw / "superseded").glob("*/deep_frames/by.example.7/nested/epoch_00[23].png"))) == 2
    assert {r["step"] for r in RunStore(lw).read_table("deep.csv")} == {0, 4}
