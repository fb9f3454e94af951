"""The callback inside a real Trainer run, and every bad configuration failing before training."""

from __future__ import annotations

import copy
import json
import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_bert, toy_dataset, toy_rows

import layerwatch
from layerwatch import LayerwatchCallback, RunStore
from layerwatch.store import SnapshotKey


def gif_frames(path) -> int:
    return iio.improps(path, index=None).shape[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny BERT trained for 2 epochs with layerwatch watching train and validation."""
    out = tmp_path_factory.mktemp("run")
    model = tiny_bert()
    initial = copy.deepcopy(model)
    train, val = toy_dataset(48, seed=0), toy_dataset(30, seed=1)
    watch = LayerwatchCallback(
        {"train": train, "validation": val}, out / "lw", method="pca", max_samples=40, progress=False,
        precision="fp32",  # its vectors are compared with layerwatch.capture's, which is fp32
    )
    trainer = make_trainer(model, train, [watch], out / "trainer", epochs=2)
    trainer.train()
    return {"dir": out / "lw", "initial": initial, "model": model, "train": train, "val": val, "trainer": trainer, "watch": watch}


def test_three_frames_and_gifs_of_three_frames(finished_run):
    root = finished_run["dir"]
    for split in ("train", "validation"):
        frames = sorted(os.listdir(root / "frames" / split))
        assert frames == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]
        assert gif_frames(root / f"{split}.gif") == 3


def test_gif_loops_and_shows_each_frame_about_a_second(finished_run):
    meta = iio.immeta(finished_run["dir"] / "train.gif", index=0)
    assert meta.get("loop") == 0
    assert 500 <= meta["duration"] <= 2000


def test_npz_shapes_and_same_indices_every_epoch(finished_run):
    root = finished_run["dir"]
    for split, n in (("train", 40), ("validation", 30)):
        indices = []
        for e in range(3):
            with np.load(root / "embeddings" / split / f"epoch_{e:03d}.npz", allow_pickle=False) as z:
                assert z["pooled"].shape == (3, n, 16)
                assert z["pooled"].dtype == np.float32
                assert z["layers"].tolist() == [0, 1, 2]
                assert z["labels"].shape == (n,)
                indices.append(z["indices"].tolist())
        assert indices[0] == indices[1] == indices[2]
        assert len(set(indices[0])) == n


def test_epoch_zero_is_the_model_before_any_step(finished_run):
    store = RunStore(finished_run["dir"])
    first = store.load_snapshot("train", SnapshotKey(0))
    assert first.step == 0
    again = layerwatch.capture(finished_run["initial"], finished_run["train"], indices=first.indices)
    np.testing.assert_allclose(first.pooled, again.pooled, atol=1e-5)
    last = store.load_snapshot("train", SnapshotKey(2))
    assert not np.allclose(first.pooled, last.pooled, atol=1e-3)  # training changed the model
    final = layerwatch.capture(finished_run["model"], finished_run["train"], indices=last.indices)
    np.testing.assert_allclose(last.pooled, final.pooled, atol=1e-5)


def test_subset_is_stratified(finished_run):
    snap = RunStore(finished_run["dir"]).load_snapshot("train", SnapshotKey(0))
    assert np.bincount(snap.labels).tolist() == [20, 20]


def test_run_json_describes_the_run(finished_run):
    info = json.loads((finished_run["dir"] / "run.json").read_text())
    assert info["config"]["method"] == "pca"
    assert info["config"]["max_samples"] == 40
    assert info["label_names"] == ["LABEL_0", "LABEL_1"]
    assert info["model_class"] == "BertForSequenceClassification"
    assert {"torch", "transformers", "layerwatch"} <= set(info["versions"])
    assert info["splits"]["validation"]["rows"] == 30


def test_frames_are_drawn_from_the_stored_layouts(finished_run):
    store = RunStore(finished_run["dir"])
    layout = store.load_layout("validation", SnapshotKey(2))
    assert layout["layout"].shape == (3, 30, 2)
    assert np.isfinite(layout["layout"]).all()
    png = iio.imread(store.frame_path("validation", SnapshotKey(2)))
    assert png.shape[0] > 200 and png.shape[1] > 200


def test_metrics_reach_the_log_history_and_csv(finished_run):
    history = finished_run["trainer"].state.log_history
    logged = [h for h in history if "layerwatch/validation/knn_accuracy/layer_2" in h]
    assert [h["step"] for h in logged] == [0, 6, 12]
    # The Trainer's own per-epoch loss log is not swallowed by layerwatch's.
    assert [h["step"] for h in history if "loss" in h] == [6, 12]
    rows = RunStore(finished_run["dir"]).read_metrics()
    assert {r["metric"] for r in rows} == {"knn_accuracy", "probe_accuracy", "silhouette", "model_accuracy", "cka_first", "cka_prev"}
    assert {(r["epoch"]) for r in rows} == {0, 1, 2}
    assert (finished_run["dir"] / "metrics_knn_accuracy.png").exists()


def test_every_n_steps_names_files_with_the_step(tmp_path):
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", every_n_steps=3, progress=False, metrics=False)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2).train()  # 8 steps
    names = [k.name for k in RunStore(tmp_path / "lw").keys("train")]
    assert names == ["epoch_000_step_0000000", "epoch_000_step_0000003", "epoch_001_step_0000006", "epoch_002_step_0000008"]
    assert gif_frames(tmp_path / "lw" / "train.gif") == 4


def test_only_the_main_process_writes(tmp_path):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1)
    trainer.state.is_world_process_zero = False
    args, state, control = trainer.args, trainer.state, trainer.control
    watch.on_train_begin(args, state, control, model=trainer.model)
    state.epoch = 1.0
    watch.on_epoch_end(args, state, control, model=trainer.model)
    assert sorted(os.listdir(tmp_path / "lw")) == []


# -- failures while drawing never stop training ---------------------------------

def test_a_failed_drawing_is_logged_and_training_goes_on(tmp_path, monkeypatch, caplog):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, metrics=False)
    calls = {"n": 0}
    original = layerwatch.pipeline.Pipeline.process

    def flaky(self, snaps, key, render=True):
        calls["n"] += 1
        if key.epoch == 1:
            raise OSError(28, "No space left on device")
        return original(self, snaps, key, render)

    monkeypatch.setattr(layerwatch.pipeline.Pipeline, "process", flaky)
    with caplog.at_level("WARNING", logger="layerwatch"):
        trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2)
        trainer.train()
    assert trainer.state.global_step == 4
    assert any("epoch 1" in r.message and "No space left" in r.message for r in caplog.records)
    assert sorted(os.listdir(tmp_path / "lw" / "frames" / "train")) == ["epoch_000.png", "epoch_002.png"]
    # The embeddings of the failed epoch were stored before drawing failed.
    assert (tmp_path / "lw" / "embeddings" / "train" / "epoch_001.npz").exists()
    assert gif_frames(tmp_path / "lw" / "train.gif") == 2


def test_on_error_raise_makes_it_fatal(tmp_path, monkeypatch):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, on_error="raise")
    original = layerwatch.pipeline.Pipeline.process

    def failing(self, snaps, key, render=True):
        if key.epoch == 1:
            raise OSError(28, "No space left on device")
        return original(self, snaps, key, render)

    monkeypatch.setattr(layerwatch.pipeline.Pipeline, "process", failing)
    with pytest.raises(OSError, match="No space left"):
        make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2).train()


# -- bad configurations fail when built or at on_train_begin, before any step ---

@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "tnse"}, r"method='tnse' is not one of 'tsne', 'pca', 'umap'"),
        ({"pooling": "max"}, r"pooling='max' is not one of 'mean', 'cls'"),
        ({"max_samples": 0}, r"max_samples=0 must be a positive integer"),
        ({"max_samples": -5}, r"max_samples=-5 must be a positive integer"),
        ({"layers": [-1]}, r"negative index"),
        ({"layers": "a,b"}, r"neither 'all' nor a comma-separated list"),
        ({"every_n_steps": 0}, r"every_n_steps=0 must be a positive integer"),
        ({"on_error": "ignore"}, r"on_error='ignore' is not one of"),
        ({"label_column": "target"}, r"has no column 'target'; pass label_column= one of \['input_ids', 'attention_mask', 'labels'\]"),
        ({"batch_size": 0}, r"batch_size=0"),
        ({"perplexity": 0}, r"perplexity=0"),
        ({"trainer_log": "console"}, r"trainer_log='console' is not one of 'auto', 'report', 'history'"),
        ({"threads": -1}, r"threads=-1 must be 0 \(the libraries' defaults\) or a positive integer"),
        ({"n_jobs": 0}, r"n_jobs=0 must be a positive integer or \"auto\""),
        ({"n_jobs": "all"}, r"n_jobs='all' must be a positive integer or \"auto\""),
        ({"label_names": ["only-one"]}, r"label_names has 1 names but the labels go up to 1"),
    ],
)
def test_bad_settings_raise_when_built(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "lw", **kwargs)


def test_unknown_setting_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"unknown settings \['max_sample'\]"):
        LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "lw", max_sample=10)


@pytest.mark.parametrize(
    "splits, message",
    [
        ({}, r"splits must be a non-empty dict"),
        ({"../../etc": None}, r"split name '\.\./\.\./etc' cannot be used as a folder name"),
        ({"train": toy_dataset(0)}, r"split 'train' has no rows"),
        ({"train": toy_rows(10) | {"labels": [[0, 1]] * 10}}, r"multi-label rows"),
        ({"train": {"text": ["a"] * 4, "labels": [0, 1, 0, 1]}}, r"has no column 'input_ids'"),
        ({"train": {"input_ids": [[1, 5, 2]] * 2, "labels": [0, 2]}}, r"keeps 2 rows for 3 classes"),
    ],
)
def test_bad_splits_raise_when_built(tmp_path, splits, message):
    with pytest.raises(ValueError, match=message):
        LayerwatchCallback(splits, tmp_path / "lw")


def test_unwritable_output_dir_raises_when_built(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"output_dir=.* cannot be created"):
        LayerwatchCallback({"train": toy_dataset(16)}, blocker / "lw")


def test_layers_out_of_range_fail_before_the_first_step(tmp_path):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", layers=[0, 5], method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1)
    with pytest.raises(ValueError, match=r"index 5 is out of range.*valid indices are 0\.\.2"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_model_without_hidden_states_fails_before_the_first_step(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, input_ids, attention_mask=None, labels=None, **kw):
            logits = self.head(self.emb(input_ids).mean(1))
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, on_error="warn")
    trainer = make_trainer(Plain(), train, [watch], tmp_path / "t", epochs=1)
    with pytest.raises(ValueError, match="returned no hidden_states"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_existing_run_is_not_mixed_without_overwrite(tmp_path, finished_run):
    import shutil

    target = tmp_path / "lw"
    shutil.copytree(finished_run["dir"], target)
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, target, method="pca", progress=False)
    with pytest.raises(ValueError, match="already holds a layerwatch run; pass overwrite=True"):
        make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    watch = LayerwatchCallback({"train": train}, target, method="pca", progress=False, overwrite=True)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t2", epochs=1).train()
    assert sorted(os.listdir(target / "frames")) == ["train"]
    assert not (target / "validation.gif").exists()


def test_string_labels_are_mapped_in_sorted_order(tmp_path):
    rows = toy_rows(16)
    rows["labels"] = ["spam" if l else "ham" for l in rows["labels"]]
    from datasets import Dataset

    watch = LayerwatchCallback({"train": Dataset.from_dict(rows)}, tmp_path / "lw", method="pca", progress=False)
    assert watch.splits["train"].string_names == ("ham", "spam")
    assert watch.check_model(tiny_bert()).label_names == ["ham", "spam"]


# -- how the metrics reach the Trainer ---------------------------------------------

def _on_log_recorder():
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self):
            self.keys: list[str] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.keys += list(logs or {})

    return Recorder()


@pytest.mark.parametrize("trainer_log, through_log", [("auto", False), ("history", False), ("report", True)])
def test_trainer_log_decides_whether_metrics_go_through_trainer_log(tmp_path, trainer_log, through_log):
    # Without report_to, "auto" keeps the console free of ~50 numbers per snapshot; the
    # log history holds them whatever the choice.
    train = toy_dataset(16)
    recorder = _on_log_recorder()
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, trainer_log=trainer_log)
    trainer = make_trainer(tiny_bert(), train, [watch, recorder], tmp_path / "t", epochs=1)
    watch.attach(trainer)  # Trainer.log needs the Trainer, which callbacks are not handed
    trainer.train()
    assert any(k.startswith("layerwatch/train/knn_accuracy/") for k in recorder.keys) is through_log
    assert "loss" in recorder.keys  # the Trainer's own log still goes through
    logged = [h for h in trainer.state.log_history if "layerwatch/train/knn_accuracy/layer_0" in h]
    assert [h["step"] for h in logged] == [0, 2]


@pytest.mark.parametrize(
    "report_to, expected", [([], False), ("none", False), (["none"], False), (["tensorboard"], True), ("all", True), (None, False)]
)
def test_auto_reports_through_trainer_log_only_to_integrations(report_to, expected):
    from types import SimpleNamespace

    from layerwatch.trainer_log import reports as _reports

    assert _reports("auto", SimpleNamespace(report_to=report_to)) is expected
    assert _reports("report", SimpleNamespace(report_to=[])) is True
    assert _reports("history", SimpleNamespace(report_to=["wandb"])) is False


def test_n_jobs_auto_uses_every_cpu_in_process_and_one_in_the_background(tmp_path, monkeypatch):
    from layerwatch import config as lw_config
    from layerwatch.config import LayerwatchConfig, resolve_jobs

    import os

    assert 1 <= lw_config.usable_cpus() <= (os.cpu_count() or 1)
    monkeypatch.setattr(lw_config, "usable_cpus", lambda: 3)
    assert resolve_jobs(LayerwatchConfig(output_dir=str(tmp_path))) == 3
    assert resolve_jobs(LayerwatchConfig(output_dir=str(tmp_path), background=True)) == 1
    assert resolve_jobs(LayerwatchConfig(output_dir=str(tmp_path), background=True, n_jobs=2)) == 2
    assert resolve_jobs(LayerwatchConfig(output_dir=str(tmp_path), n_jobs=1)) == 1


# -- settings with config=, and what a snapshot is called -----------------------------------------

def test_keywords_passed_with_a_config_override_it_even_when_equal_to_their_defaults(tmp_path):
    from layerwatch import Attention, LayerwatchConfig

    cfg = LayerwatchConfig(output_dir=str(tmp_path / "from-config"), method="pca", max_samples=50, progress=False,
                           measures=[Attention()], projector_layers="all")
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, "layerwatch_run", config=cfg, method="tsne", max_samples=1000,
                               attention=False, projector_layers="last")
    assert (watch.config.method, watch.config.max_samples, watch.config.measure("attention")) == ("tsne", 1000, None)
    assert watch.config.projector_layers == "last" and watch.config.output_dir == "layerwatch_run"
    # What was not passed comes from the config.
    kept = LayerwatchCallback({"train": train}, config=cfg, seed=3)
    assert (kept.config.method, kept.config.max_samples, kept.config.progress, kept.config.seed) == ("pca", 50, False, 3)
    assert kept.config.output_dir == str(tmp_path / "from-config")
    assert kept.config.measure("attention") == Attention()


def test_array_valued_settings_are_taken_with_or_without_a_config(tmp_path):
    from layerwatch import LayerwatchConfig

    train = toy_dataset(16)
    kw = dict(layers=np.array([0, 2]), attention=True, attention_examples=np.array([1, 3]), projector_layers=np.array([2]))
    for config in (None, LayerwatchConfig(output_dir=str(tmp_path / "c"), method="pca")):
        watch = LayerwatchCallback({"train": train}, tmp_path / "lw", config=config, **kw)
        assert watch.config.layers == (0, 2) and watch.config.projector_layers == (2,)
        assert [int(r) for r in watch.config.measure("attention").examples] == [1, 3]


@pytest.mark.parametrize("value, expected", [(None, None), ("none", None), ("last", "last"), ("0,2", (0, 2)), ([], None)])
def test_the_config_reads_projector_layers_as_export_does(value, expected):
    from layerwatch import LayerwatchConfig
    from layerwatch.integrations.base import parse_projector_layers

    cfg = LayerwatchConfig(projector_layers=value)
    assert cfg.projector_layers == parse_projector_layers(value) == expected
    assert LayerwatchConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).projector_layers == expected


def test_a_snapshot_knows_the_name_of_its_files(tmp_path):
    # every_n_steps names even whole epochs with the step; a snapshot read back says so.
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False, every_n_steps=4)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    store = RunStore(tmp_path / "lw")
    keys = store.keys("train")
    assert [k.name for k in keys] == ["epoch_000_step_0000000", "epoch_001_step_0000004"]
    for key in keys:
        snap = store.load_snapshot("train", key)
        assert snap.key == key and snap.key.step == key.step and os.path.exists(store.embedding_path("train", snap.key))


def test_the_checkpoint_note_is_written_whole_or_not_at_all(tmp_path):
    from layerwatch.monitor import CHECKPOINT_FILE, write_checkpoint

    write_checkpoint(str(tmp_path), {"run_id": "abc", "last_step": 4})
    before = (tmp_path / CHECKPOINT_FILE).read_text()
    with pytest.raises(TypeError):
        write_checkpoint(str(tmp_path), {"run_id": "abc", "last_step": 8, "bad": object()})  # fails mid-write
    assert (tmp_path / CHECKPOINT_FILE).read_text() == before
    assert json.loads(before)["last_step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left behind


# -- what the console says -------------------------------------------------------------------------

def test_off_a_terminal_progress_is_one_plain_line_per_finished_step(tmp_path, capsys):
    train, val = toy_dataset(16), toy_dataset(8, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=True)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    err = capsys.readouterr().err  # captured: not a terminal, as a log file, CI or a notebook
    assert "\r" not in err and "\x1b[" not in err
    lines = [l for l in err.splitlines() if l.startswith("layerwatch epoch")]
    for epoch in (0, 1):
        mine = [l.split("] ")[0] for l in lines if l.startswith(f"layerwatch epoch {epoch}:")]
        assert [l.split(" [")[0] for l in mine] == [
            f"layerwatch epoch {epoch}: captured train (16 rows)",
            f"layerwatch epoch {epoch}: captured validation (8 rows)",
            f"layerwatch epoch {epoch}: laid out train (3 layers, 16 rows)",
            f"layerwatch epoch {epoch}: laid out validation (3 layers, 8 rows)",
            f"layerwatch epoch {epoch}: embeddings measured and drawn",
        ]


def test_in_a_terminal_one_bar_per_snapshot_says_which_split_is_worked_on(tmp_path, monkeypatch):
    import tqdm

    from layerwatch import progress

    bars = []

    class Recording(tqdm.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.texts = []
            bars.append(self)

        def set_description_str(self, desc=None, refresh=True):
            self.texts.append(desc)
            super().set_description_str(desc, refresh)

    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    monkeypatch.setattr(tqdm, "tqdm", Recording)
    train, val = toy_dataset(16), toy_dataset(8, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=True)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    assert len(bars) == 2  # one per snapshot, never one per split or measurement
    for bar, epoch in zip(bars, (0, 1)):
        assert bar.total == 16 + 8 + 1 and bar.n == bar.total
        # (After the first snapshot each text ends with the time left: "(about 3 s left for the snapshot)".)
        said = [t.split(" (about")[0] for t in bar.texts]
        assert said[:2] == [f"layerwatch epoch {epoch}: capture train", f"layerwatch epoch {epoch}: capture validation"]
        assert f"layerwatch epoch {epoch}: embeddings: laying out validation (3 layers, 8 rows)" in said


def test_numbers_through_the_trainer_carry_the_snapshots_step_and_leave_its_state_alone():
    # The callbacks (TensorBoard, W&B, MLflow) stamp what on_log hands them with the
    # state's epoch and step: they must read the snapshot's, while the Trainer's own state
    # and pending log stay as they were (a background worker reports a snapshot later).
    from types import SimpleNamespace

    from layerwatch.snapshot import SnapshotKey
    from layerwatch.trainer_log import TrainerLog

    seen = []

    class Handler:
        def on_log(self, args, state, control, logs):
            seen.append((state.epoch, state.global_step, dict(logs)))
            control.should_log = False  # what a callback may do to the control it is handed
            return control

    state = SimpleNamespace(epoch=2.5, global_step=30, log_history=[])
    trainer = SimpleNamespace(state=state, control=SimpleNamespace(should_log=True), args=SimpleNamespace(report_to=["tensorboard"]),
                              callback_handler=Handler())
    log = TrainerLog("report")
    log.trainer = trainer
    log.write({"layerwatch/train/knn_accuracy/layer_0": 0.75}, SnapshotKey(1, 12), state=None)
    assert seen == [(1.0, 12, {"layerwatch/train/knn_accuracy/layer_0": 0.75, "epoch": 1.0})]
    assert state.log_history == [{"layerwatch/train/knn_accuracy/layer_0": 0.75, "epoch": 1.0, "step": 12}]
    assert (state.epoch, state.global_step, trainer.control.should_log) == (2.5, 30, True)
