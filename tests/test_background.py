"""background=True: the worker process draws the same run, finishes before train() returns, reports failures."""

from __future__ import annotations

import logging
import os

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.measures.embeddings.files import has_vectors, load_layout
from layerwatch.store import SnapshotKey


def _run(tmp_path, name, **kw):
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / name, method="pca", progress=False, **kw)
    trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / f"t-{name}", epochs=2)
    trainer.train()
    return tmp_path / name, trainer, watch


def test_background_run_equals_the_in_process_run(tmp_path):
    fg, _, _ = _run(tmp_path, "fg")
    bg, trainer, watch = _run(tmp_path, "bg", background=True)
    assert watch.monitor.worker is None  # closed by on_train_end, after the last snapshot was drawn
    for split in ("train", "validation"):
        assert sorted(os.listdir(bg / "frames" / split)) == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]
        assert iio.improps(bg / f"{split}.gif", index=None).shape[0] == 3
        for e in range(3):
            a = load_layout(RunStore(fg), split, SnapshotKey(e))["layout"]
            b = load_layout(RunStore(bg), split, SnapshotKey(e))["layout"]
            np.testing.assert_allclose(a, b, atol=1e-5)
    fg_rows = {(r["split"], r["epoch"], r["layer"], r["metric"]): r["value"] for r in RunStore(fg).read_metrics()}
    bg_rows = {(r["split"], r["epoch"], r["layer"], r["metric"]): r["value"] for r in RunStore(bg).read_metrics()}
    assert fg_rows.keys() == bg_rows.keys()
    np.testing.assert_allclose([bg_rows[k] for k in fg_rows], list(fg_rows.values()), atol=1e-6)
    logged = [h for h in trainer.state.log_history if "layerwatch/train/silhouette/layer_1" in h]
    assert len(logged) == 3


def test_a_failure_in_the_worker_is_reported_not_lost(tmp_path, caplog):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "layouts").write_text("a file where a folder belongs")
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        out, trainer, watch = _run(tmp_path, "bad", background=True)
    assert trainer.state.global_step == 8
    reported = [r.message for r in caplog.records if "drawing (background) of snapshot" in r.message]
    assert len(reported) == 3 and "epoch 0" in reported[0]
    assert len(watch.failures) == 3
    # Captures still landed: the embeddings are written by the training process.
    assert [k.name for k in RunStore(out).keys("train")] == ["epoch_000", "epoch_001", "epoch_002"]


def test_background_metrics_carry_the_step_of_the_snapshot_they_measure(tmp_path):
    # The worker finishes a snapshot steps later; its numbers still belong to the snapshot.
    _, trainer, _ = _run(tmp_path, "bg", background=True)
    logged = [(h["epoch"], h["step"]) for h in trainer.state.log_history if "layerwatch/validation/silhouette/layer_1" in h]
    assert logged == [(0, 0), (1, 4), (2, 8)]


UNGUARDED = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_trainer, tiny_bert, toy_dataset
from layerwatch import LayerwatchCallback

with open({counter!r}, "a") as fh:
    fh.write("training started\\n")
train = toy_dataset(24)
watch = LayerwatchCallback({{"train": train}}, {out!r}, method="pca", progress=False, background=True, overwrite=True)
make_trainer(tiny_bert(), train, [watch], {tout!r}, epochs=2).train()
print("failures:", len(watch.failures))
"""


def test_a_script_without_a_main_guard_trains_once_in_the_background(tmp_path):
    import subprocess
    import sys

    counter, out = tmp_path / "starts.txt", tmp_path / "lw"
    script = tmp_path / "train_unguarded.py"
    script.write_text(UNGUARDED.format(tests=os.path.dirname(__file__), counter=str(counter), out=str(out), tout=str(tmp_path / "t")))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert counter.read_text().splitlines() == ["training started"]
    assert "failures: 0" in proc.stdout
    assert [k.name for k in RunStore(out).keys("train", "frames")] == ["epoch_000", "epoch_001", "epoch_002"]
    assert iio.improps(out / "train.gif", index=None).shape[0] == 3


def _killer(watch, at_epochs):
    import signal

    from transformers import TrainerCallback

    class KillWorker(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            worker = watch.monitor.worker
            if round(state.epoch) in at_epochs and worker is not None:
                os.kill(worker.pid, signal.SIGKILL)  # as the out-of-memory killer would

    return KillWorker()


@pytest.mark.parametrize("kills", [(1,), (1, 2)], ids=["once-restarted", "twice-drawn-in-process"])
def test_a_killed_worker_is_reported_and_the_run_goes_on(tmp_path, caplog, kills):
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False, background=True)
    trainer = make_trainer(tiny_bert(), train, [watch, _killer(watch, kills)], tmp_path / "t", epochs=3)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        trainer.train()
    assert trainer.state.global_step == 12
    died = [r.message for r in caplog.records if "the background worker died" in r.message]
    assert len(died) == len(kills) and "SIGKILL" in died[0]
    store = RunStore(tmp_path / "lw")
    for split in ("train", "validation"):
        assert [k.name for k in store.keys(split, "frames")] == [f"epoch_{e:03d}" for e in range(4)]
        assert iio.improps(tmp_path / "lw" / f"{split}.gif", index=None).shape[0] == 4
    logged = [h["step"] for h in trainer.state.log_history if "layerwatch/train/silhouette/layer_1" in h]
    assert logged == [0, 4, 8, 12]


@pytest.mark.parametrize("where", ["trainer-writer", "own-writer"])
def test_background_projector_config_lists_every_embedding(tmp_path, monkeypatch, where):
    # The Trainer's TensorBoard callback closes its writer when training ends, while the
    # worker still draws; later snapshots go through another writer, whose config must
    # still list the earlier ones (the tensors of every snapshot are on disk either way).
    pytest.importorskip("tensorboard")
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    tb = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tb))
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    kw = {"tensorboard": str(tb)} if where == "own-writer" else {}
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False,
                               background=True, **kw)
    trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2,
                           report_to=["tensorboard"] if where == "trainer-writer" else [])
    watch.attach(trainer)
    trainer.train()
    config = projector_config_pb2.ProjectorConfig()
    text_format.Parse((tb / "projector_config.pbtxt").read_text(encoding="utf-8"), config)
    names = sorted(e.tensor_name for e in config.embeddings)
    assert names == sorted(f"layerwatch/{s}/layer_2:{step:05d}" for s in ("train", "validation") for step in (0, 4, 8))
    for e in config.embeddings:
        assert (tb / e.tensor_path).exists() and (tb / e.metadata_path).exists()


def test_background_integrations_get_the_vectors_keep_vectors_drift_drops_later(tmp_path, monkeypatch, caplog):
    # The worker's answers are read only when training ends (as when it lags behind): by
    # then every middle snapshot's stored vectors are gone (keep_vectors="drift"), yet the
    # projector gets every snapshot, as in a run without the worker.
    pytest.importorskip("tensorboard")
    from layerwatch.worker import BackgroundWorker

    finished = BackgroundWorker.finished
    monkeypatch.setattr(BackgroundWorker, "finished", lambda self, block=False: finished(self, True) if block else [])
    tb = tmp_path / "tb"
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        lw, _, watch = _run(tmp_path, "lw", background=True, keep_vectors="drift", tensorboard=str(tb))
    assert watch.failures == []
    store = RunStore(lw)
    assert [has_vectors(store, "train", k) for k in store.keys("train")] == [True, False, True]
    assert "holds no pooled vectors" not in caplog.text
    listed = (tb / "projector_config.pbtxt").read_text(encoding="utf-8")
    for split in ("train", "validation"):
        for step in (0, 4, 8):
            assert f"layerwatch/{split}/layer_2:{step:05d}" in listed
