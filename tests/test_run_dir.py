"""The run directory: only layerwatch's own files are replaced, damaged or stray files never
stop a run or a render, a failed write costs only itself, and nothing leaves the folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset, train_watched_run

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main, summarize
from layerwatch.measures.embeddings.files import load_layout, load_snapshot
from layerwatch.rundir import holds_run
from layerwatch.snapshot import SnapshotKey


def gif_frames(path) -> int:
    return iio.improps(path, index=None).shape[0]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    return train_watched_run(tmp_path_factory.mktemp("rundir"), 32, 16)


def _train(path, overwrite=False, epochs=1, **kw):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, path, method="pca", progress=False, overwrite=overwrite, **kw)
    make_trainer(tiny_bert(), train, [watch], os.path.join(os.path.dirname(path), "t-again"), epochs=epochs).train()
    return watch


# -- overwrite=True removes what layerwatch wrote, and nothing else ---------------------------

def test_overwrite_keeps_the_users_own_files(run_copy):
    mine = {"train_notes.gif": b"GIF89a mine", "metrics_mine.png": b"\x89PNG mine", "notes.txt": b"mine",
            os.path.join("frames", "train", "sketch.png"): b"\x89PNG mine"}
    for rel, data in mine.items():
        (run_copy / rel).write_bytes(data)
    _train(run_copy, overwrite=True)
    for rel, data in mine.items():
        assert (run_copy / rel).read_bytes() == data, rel
    # The other run's files are gone: its validation split and its later epochs.
    assert not (run_copy / "validation.gif").exists()
    assert not (run_copy / "embeddings" / "validation").exists()
    assert [k.name for k in RunStore(run_copy).keys("train")] == ["epoch_000", "epoch_001"]


def test_a_run_json_that_layerwatch_did_not_write_is_never_taken_or_replaced(tmp_path):
    folder = tmp_path / "lw"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"tool": "someone else's"}))
    assert not holds_run(RunStore(folder))
    with pytest.raises(ValueError, match="holds a run.json that layerwatch did not write"):
        _train(folder, overwrite=True)
    assert json.loads((folder / "run.json").read_text()) == {"tool": "someone else's"}
    with pytest.raises(ValueError, match="not written by layerwatch"):
        RunStore(folder).read_run()


def test_a_folder_with_layerwatch_files_but_no_run_json_is_another_run(run_copy):
    os.remove(run_copy / "run.json")
    assert holds_run(RunStore(run_copy))
    with pytest.raises(ValueError, match="already holds a layerwatch run; pass overwrite=True"):
        _train(run_copy)
    before = sorted(p.name for p in (run_copy / "embeddings" / "train").iterdir())
    assert before == ["epoch_000.npz", "epoch_001.npz", "epoch_002.npz"]


def test_a_folder_of_a_run_without_manifest_or_run_json_is_still_recognised(run_copy):
    os.remove(run_copy / "run.json")
    os.remove(run_copy / ".layerwatch-files")
    store = RunStore(run_copy)
    assert holds_run(store)
    (run_copy / "mine.gif").write_bytes(b"GIF89a mine")
    _train(run_copy, overwrite=True)
    assert (run_copy / "mine.gif").read_bytes() == b"GIF89a mine"
    assert not (run_copy / "validation.gif").exists()


# -- temporary files of killed writers ---------------------------------------------------------

def test_temporary_files_of_dead_processes_are_removed_and_live_ones_kept(run_copy):
    from layerwatch.files import _HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    folder = run_copy / "embeddings" / "train"
    dead_tmp = folder / f".tmp-{_HOST}-{dead_pid}-abcd.npz"
    live_tmp = folder / f".tmp-{_HOST}-{os.getpid()}-abcd.npz"
    old_style = run_copy / "frames" / "train" / ".tmp-oldname.png"
    for p in (dead_tmp, live_tmp, old_style):
        p.write_bytes(b"partial")
    os.utime(old_style, (1, 1))  # long ago
    assert main(["render", str(run_copy), "--method", "pca"]) == 0
    assert not dead_tmp.exists() and not old_style.exists()
    assert live_tmp.exists()


# -- damaged and stray files ---------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "not-a-zip"])
def test_a_damaged_file_is_named_skipped_and_the_rest_rendered(run_copy, damage, capsys):
    bad = run_copy / "embeddings" / "validation" / "epoch_001.npz"
    data = bad.read_bytes()
    bad.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "not-a-zip": b"hello"}[damage])
    assert main(["render", str(run_copy), "--method", "pca"]) == 0
    err = capsys.readouterr().err
    assert str(bad) in err and "damaged" in err
    # Every other snapshot is redrawn; the damaged one keeps the frame drawn in training.
    assert gif_frames(run_copy / "validation.gif") == 3
    assert gif_frames(run_copy / "train.gif") == 3
    assert load_layout(RunStore(run_copy), "validation", SnapshotKey(2))["layout"].shape == (3, 16, 2)
    assert main(["info", str(run_copy)]) == 0
    out = capsys.readouterr()
    assert str(bad) in out.out + out.err
    assert summarize(str(run_copy))["damaged"] == [str(bad)]


def test_notebook_checkpoint_folders_are_ignored(run_copy):
    for kind in ("embeddings", "frames", "layouts"):
        stray = run_copy / kind / ".ipynb_checkpoints"
        stray.mkdir()
        (stray / "epoch_000-checkpoint.npz").write_bytes(b"x")
    (run_copy / ".ipynb_checkpoints").mkdir()
    assert main(["render", str(run_copy), "--method", "pca"]) == 0
    assert set(summarize(str(run_copy))["splits"]) == {"train", "validation"}


def test_a_resume_skips_damaged_files_with_a_warning(tmp_path, caplog):
    from test_resume import StopAfter

    train = toy_dataset(32)
    lw = tmp_path / "lw"
    kw = dict(save_strategy="epoch")
    watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch, StopAfter(2)], tmp_path / "t", epochs=3, **kw).train()
    bad = lw / "layouts" / "train" / "epoch_001.npz"
    bad.write_bytes(b"")
    watch2 = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch2], tmp_path / "t", epochs=3, **kw)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "t" / "checkpoint-8"))
    assert any(str(bad) in r.message for r in caplog.records)
    assert [k.name for k in RunStore(lw).keys("train", "frames")] == [f"epoch_{e:03d}" for e in range(4)]


# -- writes stay inside the run directory ----------------------------------------------------------

def test_render_refuses_a_symlink_that_leaves_the_run_directory(run_copy, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.rmtree(run_copy / "frames" / "validation")
    os.symlink(outside, run_copy / "frames" / "validation")
    assert main(["render", str(run_copy), "--method", "pca"]) == 0
    assert list(outside.iterdir()) == []
    assert "leads out of the run directory" in capsys.readouterr().err


# -- a failed step costs only itself ------------------------------------------------------------------

def test_one_failed_frame_write_costs_only_that_frame(tmp_path, monkeypatch, caplog):
    store_cls = RunStore
    original = store_cls.write_bytes
    failed = []

    def flaky(self, path, data):
        if path.endswith(os.path.join("train", "epoch_001.png")) and not failed:
            failed.append(path)
            raise OSError(28, "No space left on device")
        return original(self, path, data)

    monkeypatch.setattr(store_cls, "write_bytes", flaky)
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=3).train()
    assert failed
    assert any("epoch_001.png" in r.message and "No space left" in r.message for r in caplog.records)
    store = RunStore(tmp_path / "lw")
    # The missing frame was drawn again from the film's memory at the next snapshot.
    assert [k.name for k in store.keys("train", "frames")] == [f"epoch_{e:03d}" for e in range(4)]
    assert gif_frames(tmp_path / "lw" / "train.gif") == 4
    assert sorted({r["epoch"] for r in store.read_metrics()}) == [0, 1, 2, 3]


def test_a_failed_gif_write_keeps_the_frames_and_the_metrics(tmp_path, monkeypatch):
    original = RunStore.write_bytes
    calls = {"gif": 0}

    def flaky(self, path, data):
        if path.endswith("train.gif"):
            calls["gif"] += 1
            if calls["gif"] == 2:
                raise OSError(28, "No space left on device")
        return original(self, path, data)

    monkeypatch.setattr(RunStore, "write_bytes", flaky)
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2).train()
    assert len(watch.failures) == 1 and "train.gif" in watch.failures[0]
    assert gif_frames(tmp_path / "lw" / "train.gif") == 3
    assert sorted({r["epoch"] for r in RunStore(tmp_path / "lw").read_metrics()}) == [0, 1, 2]


# -- two writers ---------------------------------------------------------------------------------------

def test_the_last_gif_writer_includes_every_frame_present(run_copy):
    from layerwatch.config import LayerwatchConfig
    from layerwatch.pipeline import Pipeline

    store_a, store_b = RunStore(run_copy), RunStore(run_copy)
    config = LayerwatchConfig(output_dir=str(run_copy), method="pca", progress=False, metrics=False)
    a = Pipeline(store_a, config, reference_split="train")
    b = Pipeline(store_b, config, reference_split="train")
    snap = load_snapshot(store_a, "train", SnapshotKey(0))
    # Two writers (training, and a `layerwatch render`) that each know only their own frame.
    a.process({"train": snap}, SnapshotKey(5, 20))
    b.process({"train": snap}, SnapshotKey(6, 24))
    frames = [k.name for k in store_a.keys("train", "frames")]
    assert "epoch_005" in frames and "epoch_006" in frames
    assert gif_frames(run_copy / "train.gif") == len(frames)


def test_a_damaged_metrics_table_is_moved_aside_not_overwritten(run_copy, caplog):
    from layerwatch.config import LayerwatchConfig
    from layerwatch.pipeline import Pipeline

    (run_copy / "metrics.csv").write_bytes(b"split,epoch\nnot,a,table,\x00")
    store = RunStore(run_copy)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        Pipeline(store, LayerwatchConfig(output_dir=str(run_copy), method="pca", progress=False), reference_split="train").process(
            {"train": load_snapshot(store, "train", SnapshotKey(0))}, SnapshotKey(9, 99), render=False)
    aside = [p for p in run_copy.iterdir() if p.name.startswith("metrics.csv.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"split,epoch\nnot,a,table,\x00"
    assert any("moved to" in r.message for r in caplog.records)
    assert {r["step"] for r in store.read_metrics()} == {99}


# -- one run at a time in a folder ------------------------------------------------------------

def _env():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def test_two_runs_started_together_into_one_folder_one_wins_the_other_is_refused(tmp_path):
    # Both runners wait at a barrier file, then call trainer.train() at the same moment;
    # overwrite=True would even let the later one remove the first one's files.
    lw, barrier = tmp_path / "lw", tmp_path / "barrier"
    barrier.mkdir()
    worker = os.path.join(os.path.dirname(__file__), "race_worker.py")
    procs = {
        name: subprocess.Popen(
            [sys.executable, worker, str(lw), str(tmp_path / f"t-{name}"), rows, str(barrier), name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        for name, rows in (("a", "24"), ("b", "32"))
    }
    outputs = {}
    try:
        # The first to end must be the refused one: the winner waits at its first step.
        deadline = 240
        import time

        start = time.monotonic()
        while not any(p.poll() is not None for p in procs.values()):
            assert time.monotonic() - start < deadline, "neither run ended: both are training into one folder"
            time.sleep(0.05)
        loser = next(n for n, p in procs.items() if p.poll() is not None)
        winner = "b" if loser == "a" else "a"
        outputs[loser] = procs[loser].communicate(timeout=30)
        (barrier / "release").touch()
        outputs[winner] = procs[winner].communicate(timeout=deadline)
    finally:
        (barrier / "release").touch()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[loser].returncode == 3, outputs[loser]
    assert procs[winner].returncode == 0, outputs[winner]
    refused = outputs[loser][0]
    assert f"output_dir={str(lw)!r} is in use" in refused and "another layerwatch run" in refused
    assert "pass another output_dir, or wait until that run ends" in refused
    # The refused run never trained, and the folder holds the winner's snapshots only.
    assert "'loss'" not in outputs[loser][0]
    rows = {"a": 24, "b": 32}[winner]
    store = RunStore(lw)
    assert [k.name for k in store.keys("train")] == ["epoch_000", "epoch_001"]
    assert {load_snapshot(store, "train", k).num_rows for k in store.keys("train")} == {rows}
    assert store.read_run()["splits"]["train"]["rows"] == rows


_HOLDER = """
import sys, time
from layerwatch.store import RunStore
RunStore(sys.argv[1]).directory.claim()
print("held", flush=True)
time.sleep(120)
"""


def test_a_claim_held_by_a_live_run_refuses_and_a_dead_holder_never_blocks(tmp_path):
    from layerwatch.store import RunDirectoryInUse

    lw = tmp_path / "lw"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lw)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryInUse, match=rf"process {holder.pid} on .* pass another output_dir, or wait"):
            RunStore(lw).directory.claim()
        # A Trainer run is refused the same way, before its first step and writing nothing.
        train = toy_dataset(16)
        watch = LayerwatchCallback({"train": train}, lw, method="pca", progress=False)
        trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1)
        with pytest.raises(RunDirectoryInUse, match="is in use"):
            trainer.train()
        assert trainer.state.global_step == 0 and not (lw / "run.json").exists()
    finally:
        holder.kill()  # dies without releasing anything, as a killed training would
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder is free at once.
    store = RunStore(lw)
    store.directory.claim()
    store.directory.release()
    watch = _train(str(lw))
    assert [k.name for k in RunStore(lw).keys("train")] == ["epoch_000", "epoch_001"]
    # Released at the end of training: the next run into the folder is told it holds a run, not that it is busy.
    with pytest.raises(ValueError, match="already holds a layerwatch run"):
        _train(str(lw))


def test_an_unfinished_run_of_the_same_process_gives_the_folder_up(tmp_path, caplog):
    # A notebook cell whose training raised never reached on_train_end.
    first = RunStore(tmp_path / "lw")
    first.directory.claim()
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        RunStore(tmp_path / "lw").directory.claim()
    assert "did not finish" in caplog.text
