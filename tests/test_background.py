"""background=True: the worker process draws the same run, finishes before train() returns, reports failures."""

from __future__ import annotations

import logging
import os

import imageio.v3 as iio
import numpy as np
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
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
            a = RunStore(fg).load_layout(split, SnapshotKey(e))["layout"]
            b = RunStore(bg).load_layout(split, SnapshotKey(e))["layout"]
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
