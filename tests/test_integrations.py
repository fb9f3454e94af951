"""TensorBoard, W&B and MLflow integrations, read back with each tool's own reader, offline.

One tiny Trainer run reports to every tool installed here (``report_to``), with the
integrations wired where the training process will call them: after each snapshot's
numbers are written, and once at the end. TensorBoard's event files are read with
TensorBoard's ``EventAccumulator``, W&B's offline run from the files it wrote (media,
table JSON and its transaction log), MLflow's local file store through ``MlflowClient``.
A tool whose package is missing here is skipped with a message; CI installs them all.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.animate import read_png
from layerwatch.cli import main
from layerwatch.integrations import (
    Integration, RunInfo, TensorBoardIntegration, export_run, finish_all, integrations_for, report_targets, send_snapshot,
)
from layerwatch.integrations.base import parse_projector_layers, stored_keys
from layerwatch.measures.embeddings.files import drop_vectors, load_layout, load_snapshot, save_snapshot

LABELS = ["neg", "pos"]


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _texts(n: int, offset: int) -> list[str]:
    # A tab and a newline in one text: the projector's TSV must still have one row per point.
    return [f"sentence {offset + i}" + ("\twith a tab\nand a newline" if i == 3 else "") for i in range(n)]


def _monitored(n: int, seed: int, offset: int):
    return toy_dataset(n, seed=seed).add_column("text", _texts(n, offset))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A 2-epoch run reporting to every installed tool, the integrations called as the core will call them."""
    out = tmp_path_factory.mktemp("integrations")
    targets = [t for t in ("tensorboard", "wandb", "mlflow") if _installed(t)]
    if "tensorboard" not in targets:
        pytest.skip('the tensorboard package is not installed; pip install "layerwatch[tensorboard]" to run these tests')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TENSORBOARD_LOGGING_DIR", str(out / "tb"))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_PROJECT", "layerwatch-tests")
        for var, folder in (("WANDB_DIR", "wb"), ("WANDB_DATA_DIR", "wb-data"), ("WANDB_CACHE_DIR", "wb-cache"), ("WANDB_CONFIG_DIR", "wb-config")):
            os.makedirs(out / folder, exist_ok=True)
            mp.setenv(var, str(out / folder))
        mp.setenv("MLFLOW_TRACKING_URI", (out / "mlruns").as_uri())
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to use a local file store
        train = toy_dataset(24, seed=0)  # 3 steps an epoch: snapshots at steps 0, 3, 6
        splits = {"train": _monitored(24, 0, 0), "validation": _monitored(16, 1, 100)}
        # A second log directory (tensorboard=) gets a writer of its own, with the scalars, as export writes it.
        watch = LayerwatchCallback(splits, out / "lw", method="pca", progress=False, label_names=LABELS,
                                   tensorboard=str(out / "tb_own"))
        trainer = make_trainer(tiny_bert(), train, [watch], out / "trainer", epochs=2, report_to=targets)
        watch.attach(trainer)  # the numbers go through Trainer.log, so the Trainer's callbacks send them
        state = {"run": None, "failures": [], "keys": [], "event_files": None}
        send = watch.monitor.back_half.send

        def spy(key, snaps, logs):  # the callback calls the integrations; the test only notes when
            state["keys"].append(key)
            send(key, snaps, logs)

        watch.monitor.back_half.send = spy
        trainer.train()
        integrations = [i for i in watch.monitor.integrations]
        own = next(i for i in integrations if i.name == "tensorboard" and i.log_dir == str(out / "tb_own"))
        integrations = [i for i in integrations if i is not own]
        state["run"] = watch.monitor.run_view
        state["failures"] += [f for f in watch.failures if "integration" in f.lower() or "tensorboard" in f.lower()]
        state["event_files"] = sorted(glob.glob(str(out / "tb" / "**" / "events.out.tfevents.*"), recursive=True))
        if "wandb" in targets:
            import wandb

            wandb.finish()  # the WandbCallback leaves its run open; finishing writes the offline files
        yield SimpleNamespace(
            out=out, lw=out / "lw", tb=out / "tb", tb_own=out / "tb_own", wb=out / "wb", mlruns=out / "mlruns",
            targets=targets, integrations=integrations, trainer=trainer, store=RunStore(out / "lw"), **state,
        )
        if "mlflow" in targets:
            import mlflow

            mlflow.set_tracking_uri(None)  # the callback set it for the whole process
        if "wandb" in targets:
            import wandb

            wandb.teardown()  # stop W&B's service process


# -- helpers: each tool's own reader ---------------------------------------------------
def _accumulator(folder):
    from tensorboard.backend.event_processing import event_accumulator as ea

    # 0 keeps every event: TensorBoard keeps a sample of 10 images per tag by default.
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def _images(acc) -> dict[str, list]:
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def _decode(encoded: bytes) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(encoded, extension=".png")[..., :3]


def _steps(store: RunStore, split: str) -> list[int]:
    return [store.snapshot_key(split, k).step for k in store.keys(split)]


def _projector(folder) -> list:
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    config = projector_config_pb2.ProjectorConfig()
    with open(os.path.join(folder, "projector_config.pbtxt"), encoding="utf-8") as fh:
        text_format.Parse(fh.read(), config)
    return list(config.embeddings)


def _tsv(path) -> list[list[str]]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh]


def _wandb_run_dir(folder) -> str:
    runs = glob.glob(os.path.join(folder, "wandb", "offline-run-*"))
    assert len(runs) == 1, f"expected one offline run under {folder}, found {runs}"
    return runs[0]


def _wandb_records(run_dir: str) -> list:
    """The records of W&B's transaction log (``run-<id>.wandb``): LevelDB's log format of
    32 KiB blocks, each record split in chunks with a 7-byte header, after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            records.append(pending + chunk)
    out = []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        out.append(rec)
    return out


def _wandb_history(run_dir: str) -> list[dict]:
    rows = []
    for rec in _wandb_records(run_dir):
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return rows


def _wandb_artifacts(run_dir: str) -> list:
    return [rec.artifact for rec in _wandb_records(run_dir) if rec.WhichOneof("record_type") == "artifact"]


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# -- the live run ------------------------------------------------------------------------
def test_every_integration_took_every_snapshot(live):
    assert live.failures == []
    assert [type(i).__name__ for i in live.integrations] == [
        {"tensorboard": "TensorBoardIntegration", "wandb": "WandbIntegration", "mlflow": "MLflowIntegration"}[t]
        for t in live.targets
    ]
    assert [k.step for k in live.keys] == [0, 3, 6]


def test_tensorboard_one_image_per_snapshot_per_split_at_its_step(live):
    acc = _accumulator(live.tb)
    images = _images(acc)
    assert sorted(images) == ["layerwatch/train", "layerwatch/validation"]
    for split in ("train", "validation"):
        events = images[f"layerwatch/{split}"]
        assert [e.step for e in events] == _steps(live.store, split) == [0, 3, 6]
        last = live.store.frame_path(split, live.store.keys(split)[-1])
        frame = read_png(last)
        assert all((e.height, e.width) == frame.shape[:2] for e in events)
        # The last frame is never redrawn after it is sent: the image is that frame's pixels.
        np.testing.assert_array_equal(_decode(events[-1].encoded_image_string), frame)


def test_tensorboard_trainer_callback_and_layerwatch_share_one_log_directory_and_writer(live):
    acc = _accumulator(live.tb)
    assert "train/loss" in acc.Tags()["scalars"]  # written by the Trainer's own callback
    assert "layerwatch/train" in acc.Tags()["images"]  # written by layerwatch
    # One writer: one event file, directly in TENSORBOARD_LOGGING_DIR (none under output_dir/runs).
    assert [os.path.dirname(p) for p in live.event_files] == [str(live.tb)]
    assert not os.path.exists(live.out / "trainer" / "runs")
    tb = live.integrations[0]
    assert tb.shares_trainer_writer


def test_tensorboard_scalars_sent_once_at_the_snapshot_steps(live):
    rows = [r for r in live.store.read_metrics() if r["split"] == "validation" and r["metric"] == "silhouette" and r["layer"] == 2]
    rows.sort(key=lambda r: r["step"])
    steps, values = [int(r["step"]) for r in rows], [r["value"] for r in rows]
    assert steps == [0, 3, 6]
    shared = _accumulator(live.tb)
    # Through Trainer.log, the Trainer's callback wrote them (under its "train/" prefix) ...
    got = shared.Scalars("train/layerwatch/validation/silhouette/layer_2")
    assert [s.step for s in got] == steps and [s.value for s in got] == pytest.approx(values, rel=1e-6)
    # ... so layerwatch did not write them a second time into the same log directory.
    assert not [t for t in shared.Tags()["scalars"] if t.startswith("layerwatch/")]
    got = _accumulator(live.tb_own).Scalars("layerwatch/validation/silhouette/layer_2")
    assert [s.step for s in got] == steps and [s.value for s in got] == pytest.approx(values, rel=1e-6)


def test_tensorboard_projector_holds_the_last_layer_of_every_snapshot(live):
    embeddings = _projector(live.tb)
    names = sorted(e.tensor_name for e in embeddings)
    assert names == sorted(f"layerwatch/{s}/layer_2:{step:05d}" for s in ("train", "validation") for step in (0, 3, 6))
    store = live.store
    texts = store.load_texts("validation")
    for e in embeddings:
        tag, step = e.tensor_name.rsplit(":", 1)
        split = tag.split("/")[1]
        key = next(k for k in store.keys(split) if store.snapshot_key(split, k).step == int(step))
        snap = load_snapshot(store, split, key)
        tensors = np.loadtxt(live.tb / e.tensor_path, delimiter="\t", dtype=np.float32, ndmin=2)
        assert tensors.shape == (snap.num_rows, 16)
        np.testing.assert_allclose(tensors, snap.pooled[-1], rtol=1e-5, atol=1e-6)
        meta = _tsv(live.tb / e.metadata_path)
        assert meta[0] == ["label", "prediction", "text", "row"]
        body = meta[1:]
        assert len(body) == snap.num_rows and all(len(r) == 4 for r in body)
        assert [r[0] for r in body] == [LABELS[i] for i in snap.labels]
        assert [r[1] for r in body] == [LABELS[i] for i in snap.predictions]
        assert [r[3] for r in body] == [str(i) for i in snap.indices]
        if split == "validation":
            assert [r[2] for r in body] == [" ".join(texts[int(i)].split()) for i in snap.indices]


def test_tensorboard_keeps_the_callbacks_writer_after_the_trainer_closes_it(live, tmp_path):
    """Snapshots that a background worker finishes after training ended still reach the log directory."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    cb = TensorBoardCallback()
    cb.tb_writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[cb]), args=None)
    tb = TensorBoardIntegration(trainer=trainer, metrics_logged=True, projector_layers=None)
    run = RunInfo.from_store(live.lw)
    first, *_, last = stored_keys(run)
    tb.snapshot(run, first, None, {})
    assert tb.writer() is cb.tb_writer
    cb.on_train_end(None, None, None)  # the Trainer's callback closes its writer when training ends
    assert cb.tb_writer is None
    tb.snapshot(run, last, None, {"layerwatch/train/knn_accuracy/layer_0": 0.5})
    tb.finish(run)
    acc = _accumulator(tmp_path / "tb")
    assert [e.step for e in acc.Images("layerwatch/train")] == [first.step, last.step]
    # The metrics came through Trainer.log (metrics_logged): not written twice.
    assert acc.Tags()["scalars"] == []
    assert {os.path.dirname(p) for p in glob.glob(str(tmp_path / "tb" / "**" / "events.*"), recursive=True)} == {str(tmp_path / "tb")}
    assert tb._writer is None  # closed by finish, since the callback had let it go


def test_wandb_offline_run_holds_frames_films_and_rows(live):
    pytest.importorskip("wandb", reason='wandb is not installed; pip install "layerwatch[wandb]"')
    run_dir = _wandb_run_dir(live.wb)
    media = os.path.join(run_dir, "files", "media")
    store = live.store
    history = _wandb_history(run_dir)
    for split in ("train", "validation"):
        frames = sorted(glob.glob(os.path.join(media, "images", "layerwatch", "frames", f"{split}_*.png")))
        assert len(frames) == 3
        logged = [h for h in history if h.get(f"layerwatch/frames/{split}/_type") == "image-file"]
        assert [h["train/global_step"] for h in logged] == _steps(store, split)
        # The last frame is the one on disk, byte for byte.
        last = store.frame_path(split, store.keys(split)[-1])
        assert _sha(last) == logged[-1][f"layerwatch/frames/{split}/sha256"]
        (video,) = glob.glob(os.path.join(media, "videos", "layerwatch", "films", f"{split}_*.gif"))
        assert _sha(video) == _sha(store.gif_path(split))
        (table_path,) = glob.glob(os.path.join(media, "table", "layerwatch", "rows", f"{split}_*.table.json"))
        with open(table_path, encoding="utf-8") as fh:
            table = json.load(fh)
        key = store.keys(split)[-1]
        snap, layout = load_snapshot(store, split, key), load_layout(store, split, key)
        assert table["columns"] == ["row", "text", "label", "prediction", "correct"] + [
            f"layer_{l}_{c}" for l in (0, 1, 2) for c in ("x", "y")
        ]
        rows = table["data"]
        assert len(rows) == snap.num_rows
        assert [r[0] for r in rows] == snap.indices.tolist()
        texts = store.load_texts(split)
        assert [r[1] for r in rows] == [" ".join(texts[int(i)].split()) for i in snap.indices]
        assert [r[2] for r in rows] == [LABELS[i] for i in snap.labels]
        assert [r[3] for r in rows] == [LABELS[i] for i in snap.predictions]
        assert [r[4] for r in rows] == (snap.predictions == snap.labels).tolist()
        np.testing.assert_allclose(np.array([r[9:11] for r in rows]), layout["layout"][2], rtol=1e-6)
    # The metrics came through Trainer.log (the WandbCallback's "train/" prefix), not a second time.
    keys = {k for h in history for k in h}
    assert "train/layerwatch/train/knn_accuracy/layer_0" in keys
    assert not {k for k in keys if k.startswith("layerwatch/train/knn_accuracy")}


def test_mlflow_run_holds_films_and_metrics_csv(live):
    pytest.importorskip("mlflow", reason='mlflow is not installed; pip install "layerwatch[mlflow]"')
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=live.mlruns.as_uri())
    (run,) = client.search_runs(["0"])
    names = sorted(os.path.basename(a.path) for a in client.list_artifacts(run.info.run_id, "layerwatch"))
    # The callback rewrites report.html after every snapshot; the run ends with it too.
    assert names == ["metrics.csv", "report.html", "train.gif", "validation.gif"]
    local = client.download_artifacts(run.info.run_id, "layerwatch/train.gif", str(live.out / "dl"))
    assert _sha(local) == _sha(live.store.gif_path("train"))
    # Sent once, through Trainer.log (the MLflowCallback keeps the keys as they are).
    history = client.get_metric_history(run.info.run_id, "layerwatch/train/knn_accuracy/layer_0")
    assert sorted(m.step for m in history) == [0, 3, 6]


# -- export of a finished run ----------------------------------------------------------------
def test_export_gives_the_same_tensorboard_content_as_live_logging(live, tmp_path):
    assert main(["export", str(live.lw), "--tensorboard", str(tmp_path / "tb")]) == 0
    exported, own = _accumulator(tmp_path / "tb"), _accumulator(live.tb_own)
    assert exported.Tags()["images"] == own.Tags()["images"]
    assert sorted(exported.Tags()["scalars"]) == sorted(own.Tags()["scalars"])
    assert len(own.Tags()["scalars"]) > 10
    for tag in own.Tags()["scalars"]:
        assert [(s.step, s.value) for s in exported.Scalars(tag)] == [(s.step, s.value) for s in own.Scalars(tag)]
    for tag in own.Tags()["images"]:
        a, b = exported.Images(tag), own.Images(tag)
        assert [(e.step, e.width, e.height) for e in a] == [(e.step, e.width, e.height) for e in b]
        assert a[-1].encoded_image_string == b[-1].encoded_image_string
        # Export sends the frames as they are on disk now.
        split = tag.split("/")[1]
        for event, key in zip(a, live.store.keys(split)):
            np.testing.assert_array_equal(_decode(event.encoded_image_string), read_png(live.store.frame_path(split, key)))
    a, b = _projector(tmp_path / "tb"), _projector(live.tb_own)
    assert [e.tensor_name for e in a] == [e.tensor_name for e in b]
    for ea, eb in zip(a, b):
        assert open(tmp_path / "tb" / ea.metadata_path).read() == open(live.tb_own / eb.metadata_path).read()
        assert open(tmp_path / "tb" / ea.tensor_path).read() == open(live.tb_own / eb.tensor_path).read()


def test_export_projector_layers_and_splits(live, tmp_path):
    export_run(live.lw, tensorboard=tmp_path / "all", projector_layers="all", splits=["validation"])
    names = sorted(e.tensor_name for e in _projector(tmp_path / "all"))
    assert names == sorted(f"layerwatch/validation/layer_{l}:{s:05d}" for l in (0, 1, 2) for s in (0, 3, 6))
    assert _accumulator(tmp_path / "all").Tags()["images"] == ["layerwatch/validation"]
    export_run(live.lw, tensorboard=tmp_path / "none", projector_layers="none")
    assert not os.path.exists(tmp_path / "none" / "projector_config.pbtxt")
    with pytest.raises(ValueError, match=r"layer 7, which split 'train' did not store; stored layers are \[0, 1, 2\]"):
        export_run(live.lw, tensorboard=tmp_path / "bad", projector_layers=[7])


def test_export_to_wandb_and_mlflow_with_the_report(live, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason='wandb is not installed; pip install "layerwatch[wandb]"')
    pytest.importorskip("mlflow", reason='mlflow is not installed; pip install "layerwatch[mlflow]"')
    from mlflow.tracking import MlflowClient

    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        os.makedirs(tmp_path / var, exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = tmp_path / "lw"
    shutil.copytree(live.lw, run_dir)
    page = "<!doctype html><title>report</title><p>layerwatch</p>"
    (run_dir / "report.html").write_text(page, encoding="utf-8")
    uri = (tmp_path / "mlruns").as_uri()
    code = main(["export", str(run_dir), "--wandb", str(tmp_path / "wb"), "--mlflow-uri", uri, "--mlflow-experiment", "lw"])
    assert code == 0
    wb = _wandb_run_dir(tmp_path / "wb")
    history = _wandb_history(wb)
    assert [h["train/global_step"] for h in history if "layerwatch/frames/train/_type" in h] == [0, 3, 6]
    # Not sent through a Trainer: export sends the metrics itself, at the snapshots' steps.
    steps = [h["train/global_step"] for h in history if "layerwatch/train/knn_accuracy/layer_0" in h]
    assert steps == [0, 3, 6]
    (html,) = glob.glob(os.path.join(wb, "files", "media", "html", "layerwatch", "report_*.html"))
    assert open(html, encoding="utf-8").read() == page
    (artifact,) = [a for a in _wandb_artifacts(wb) if a.type == "layerwatch-report"]
    assert [c.path for c in artifact.manifest.contents] == ["report.html"]
    assert len(glob.glob(os.path.join(wb, "files", "media", "table", "layerwatch", "rows", "*.table.json"))) == 2
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lw").experiment_id])
    names = sorted(os.path.basename(a.path) for a in client.list_artifacts(run.info.run_id, "layerwatch"))
    assert names == ["metrics.csv", "report.html", "train.gif", "validation.gif"]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "layerwatch/validation/silhouette/layer_1")
    assert sorted(m.step for m in history) == [0, 3, 6]
    assert run.data.params["layerwatch.method"] == "pca"


def test_export_errors_say_what_is_wrong(live, tmp_path, monkeypatch, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "is not a layerwatch run directory" in capsys.readouterr().err
    assert main(["export", str(live.lw)]) == 2
    assert "--tensorboard LOGDIR, --wandb DIR or --mlflow" in capsys.readouterr().err
    assert main(["export", str(live.lw), "--tensorboard", str(tmp_path / "tb"), "--splits", "test"]) == 2
    assert "has no stored split 'test'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    assert main(["export", str(live.lw), "--wandb", str(tmp_path / "wb")]) == 2
    assert 'pip install "layerwatch[wandb]"' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "wb")  # checked before anything is written


@pytest.mark.parametrize(
    ("module", "build", "hint"),
    [
        ("tensorboard", lambda: TensorBoardIntegration("logs"), "layerwatch[tensorboard]"),
        ("wandb", lambda: __import__("layerwatch.integrations.wandb", fromlist=["x"]).WandbIntegration(), "layerwatch[wandb]"),
        ("mlflow", lambda: __import__("layerwatch.integrations.mlflow", fromlist=["x"]).MLflowIntegration(), "layerwatch[mlflow]"),
    ],
)
def test_a_missing_package_raises_an_install_hint(monkeypatch, module, build, hint):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=re.escape(f'pip install "{hint}"')) as info:
        build()
    assert info.value.__cause__ is None and info.value.__suppress_context__  # raised from None


# -- choosing the integrations ---------------------------------------------------------------
def test_report_to_picks_the_integrations(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    args = lambda report_to: SimpleNamespace(report_to=report_to, output_dir=str(tmp_path))  # noqa: E731
    assert integrations_for(args("none")) == []
    assert integrations_for(args([])) == []
    assert integrations_for(None) == []
    assert [i.name for i in integrations_for(args(["tensorboard", "comet_ml"]))] == ["tensorboard"]
    (tb,) = integrations_for(args("none"), tensorboard=tmp_path / "logs")
    assert tb.log_dir == str(tmp_path / "logs")
    assert report_targets(["none"]) == [] and report_targets("wandb") == ["wandb"]
    with pytest.raises(ValueError, match="report_to=3"):
        report_targets(3)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r'pip install "layerwatch\[wandb\]"'):
        integrations_for(args(["tensorboard", "wandb"]))


def test_report_to_all_and_metrics_sent_once(tmp_path):
    for name in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(name)
    chosen = integrations_for(SimpleNamespace(report_to="all", output_dir=str(tmp_path)), metrics_logged=True)
    assert [i.name for i in chosen] == ["tensorboard", "wandb", "mlflow"]
    tb, wb, ml = chosen
    # Without the Trainer's writer, TensorBoard gets the scalars; W&B and MLflow get them through Trainer.log.
    assert tb._write_scalars() and not wb.scalars and not ml.scalars
    tb.finish(None)
    chosen = integrations_for(SimpleNamespace(report_to=["wandb", "mlflow"]))
    assert [i.scalars for i in chosen] == [True, True]


def test_tensorboard_without_a_folder_to_write_to_is_refused(monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    with pytest.raises(ValueError, match="pass the log directory"):
        TensorBoardIntegration()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("last", "last"), ("ALL", "all"), ("none", None), (None, None), ("0,6", (0, 6)), ([2], (2,)), ((), None)],
)
def test_projector_layers_settings(value, expected):
    assert parse_projector_layers(value) == expected


@pytest.mark.parametrize("value", ["lats", [-1], 3.5])
def test_bad_projector_layers_are_refused_with_what_is_allowed(value):
    with pytest.raises(ValueError, match="projector_layers="):
        parse_projector_layers(value)


def test_an_integration_that_fails_costs_only_itself(live, caplog):
    class Broken(Integration):
        name = "broken"

        def snapshot(self, run, key, snaps, logs):
            raise OSError("disk full")

    class Counting(Integration):
        name = "counting"
        calls = 0

        def snapshot(self, run, key, snaps, logs):
            Counting.calls += 1

    run = RunInfo.from_store(live.lw)
    key = stored_keys(run)[-1]
    failures = send_snapshot([Broken(), Counting()], run, key, None, {})
    assert Counting.calls == 1
    assert failures == [f"layerwatch: sending snapshot {key.title} to broken failed (OSError: disk full); training goes on"]
    assert "disk full" in caplog.text


def _regression_run(folder):
    """A run written through the store: a regression, no frames, layouts, predictions or texts."""
    from layerwatch.snapshot import Snapshot, SnapshotKey

    store = RunStore(folder)
    store.write_run({"label_kind": "regression", "label_names": None, "reference_split": "train", "config": {"method": "pca"}})
    rng = np.random.default_rng(0)
    targets = rng.normal(size=6).astype(np.float32)
    for step in (0, 5):
        key = SnapshotKey(step // 5, step, with_step=True)
        snap = Snapshot(
            pooled=rng.normal(size=(2, 6, 4)).astype(np.float32), labels=targets, layers=np.array([0, 4]),
            indices=np.arange(10, 16), epoch=key.epoch, step=step, split="train",
        )
        save_snapshot(store, snap, key)
    return targets


def test_export_of_a_regression_run_to_tensorboard_sends_what_exists(tmp_path):
    pytest.importorskip("tensorboard")
    targets = _regression_run(tmp_path / "lw")
    export_run(tmp_path / "lw", tensorboard=tmp_path / "tb")
    acc = _accumulator(tmp_path / "tb")
    assert acc.Tags()["images"] == [] and acc.Tags()["scalars"] == []
    (first, second) = sorted(_projector(tmp_path / "tb"), key=lambda e: e.tensor_name)
    assert [first.tensor_name, second.tensor_name] == ["layerwatch/train/layer_4:00000", "layerwatch/train/layer_4:00005"]
    meta = _tsv(tmp_path / "tb" / second.metadata_path)
    assert meta[0] == ["label", "row"]
    assert [float(r[0]) for r in meta[1:]] == pytest.approx(targets.tolist(), rel=1e-3)
    assert [r[1] for r in meta[1:]] == [str(i) for i in range(10, 16)]


def test_export_of_a_regression_run_to_wandb_has_its_rows_without_places(tmp_path, monkeypatch, caplog):
    pytest.importorskip("wandb", reason='wandb is not installed; pip install "layerwatch[wandb]"')
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        os.makedirs(tmp_path / var, exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("WANDB_SILENT", "true")
    targets = _regression_run(tmp_path / "lw")
    export_run(tmp_path / "lw", wandb_dir=tmp_path / "wb")
    run_dir = _wandb_run_dir(tmp_path / "wb")
    (path,) = glob.glob(os.path.join(run_dir, "files", "media", "table", "layerwatch", "rows", "train_*.table.json"))
    table = json.load(open(path, encoding="utf-8"))
    assert table["columns"] == ["row", "text", "label", "prediction", "correct"]
    assert [r[0] for r in table["data"]] == list(range(10, 16))
    assert [float(r[2]) for r in table["data"]] == pytest.approx(targets.tolist(), rel=1e-3)
    assert all(r[3] is None and r[4] is None for r in table["data"])
    assert "has no 2-D coordinates" in caplog.text
    assert not glob.glob(os.path.join(run_dir, "files", "media", "videos", "**", "*"), recursive=True)


# -- export of a damaged run: every damaged file is named and skipped, in every tool -------------------

def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


_DAMAGE = {
    # kind: (what to do to the copy, the file named in the warning)
    "empty-frame-png": (lambda lw: open(lw / "frames" / "validation" / "epoch_001.png", "wb").close(), "frames/validation/epoch_001.png"),
    "truncated-metrics-csv": (lambda lw: _truncate(lw / "metrics.csv"), "metrics.csv"),
    "garbled-metrics-header": (
        lambda lw: (lw / "metrics.csv").write_text("spilt,epok\n" + (lw / "metrics.csv").read_text().split("\n", 1)[1]),
        "metrics.csv",
    ),
    "truncated-embeddings-npz": (lambda lw: _truncate(lw / "embeddings" / "validation" / "epoch_002.npz"), "embeddings/validation/epoch_002.npz"),
    "garbled-texts-json": (lambda lw: (lw / "texts" / "validation.json").write_text('{"indices": [1, 2'), "texts/validation.json"),
    "truncated-gif": (lambda lw: _truncate(lw / "validation.gif"), "validation.gif"),
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_export_of_a_damaged_run_names_and_skips_the_file_in_every_tool(live, tmp_path, monkeypatch, capsys, damage):
    targets = ["--tensorboard", str(tmp_path / "tb")]
    if _installed("wandb"):
        for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            os.makedirs(tmp_path / var, exist_ok=True)
            monkeypatch.setenv(var, str(tmp_path / var))
        monkeypatch.setenv("WANDB_SILENT", "true")
        targets += ["--wandb", str(tmp_path / "wb")]
    if _installed("mlflow"):
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        targets += ["--mlflow-uri", (tmp_path / "mlruns").as_uri()]
    run_dir = tmp_path / "lw"
    shutil.copytree(live.lw, run_dir)
    change, named = _DAMAGE[damage]
    change(run_dir)
    assert main(["export", str(run_dir), *targets]) == 0
    err = capsys.readouterr().err
    assert f"{run_dir / named} is damaged" in err and "it is skipped" in err
    assert "Traceback" not in err
    # TensorBoard: everything else went, the damaged file's part did not.
    acc = _accumulator(tmp_path / "tb")
    images = _images(acc)
    expected_val = [0, 6] if damage == "empty-frame-png" else [0, 3, 6]
    assert [e.step for e in images["layerwatch/validation"]] == expected_val
    assert [e.step for e in images["layerwatch/train"]] == [0, 3, 6]
    scalars = acc.Tags()["scalars"]
    if "metrics" in damage:
        assert scalars == []
    else:
        assert [s.step for s in acc.Scalars("layerwatch/train/silhouette/layer_1")] == [0, 3, 6]
    projected = sorted(e.tensor_name for e in _projector(tmp_path / "tb"))
    val = [n for n in projected if n.startswith("layerwatch/validation/")]
    assert val == [f"layerwatch/validation/layer_2:{s:05d}" for s in ((0, 3) if damage == "truncated-embeddings-npz" else (0, 3, 6))]
    if _installed("wandb"):
        wb = _wandb_run_dir(tmp_path / "wb")
        history = _wandb_history(wb)
        frames = [h["train/global_step"] for h in history if "layerwatch/frames/validation/_type" in h]
        assert frames == expected_val
        films = [h for h in history if "layerwatch/films/validation/_type" in h]
        assert len(films) == (0 if damage == "truncated-gif" else 1)
    if _installed("mlflow"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        (run,) = client.search_runs(["0"])
        names = sorted(os.path.basename(a.path) for a in client.list_artifacts(run.info.run_id, "layerwatch"))
        expected = {"metrics.csv", "report.html", "train.gif", "validation.gif"}
        expected -= {"metrics.csv"} if "metrics" in damage else set()
        expected -= {"validation.gif"} if damage == "truncated-gif" else set()
        assert names == sorted(expected)
        assert run.info.status == "FINISHED"


def test_exporting_twice_into_one_tensorboard_folder_is_refused_before_writing(live, tmp_path, capsys):
    assert main(["export", str(live.lw), "--tensorboard", str(tmp_path / "tb")]) == 0
    files = sorted(str(p) for p in (tmp_path / "tb").rglob("*"))
    before = _accumulator(tmp_path / "tb")
    counts = {t: len(before.Images(t)) for t in before.Tags()["images"]}
    capsys.readouterr()
    assert main(["export", str(live.lw), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert "already holds layerwatch's images and scalars" in err and "each of them twice" in err
    assert "Pass another (new) log directory, or delete that one first" in err
    assert sorted(str(p) for p in (tmp_path / "tb").rglob("*")) == files
    after = _accumulator(tmp_path / "tb")
    assert {t: len(after.Images(t)) for t in after.Tags()["images"]} == counts == {"layerwatch/train": 3, "layerwatch/validation": 3}
    # A folder that live logging filled is refused the same way.
    with pytest.raises(ValueError, match="already holds layerwatch's images"):
        export_run(live.lw, tensorboard=live.tb_own)


def test_export_of_a_run_with_a_damaged_run_json_is_refused_without_saying_skipped(live, tmp_path, capsys):
    run_dir = tmp_path / "lw"
    shutil.copytree(live.lw, run_dir)
    (run_dir / "run.json").write_text('{"format": "layerwatch-run", "labels"')
    assert main(["export", str(run_dir), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / 'run.json'} is damaged" in err and "cannot be exported" in err and "skipped" not in err
    assert not os.path.exists(tmp_path / "tb")


def test_export_to_wandb_of_a_run_whose_last_snapshot_kept_no_vectors(live, tmp_path, monkeypatch, caplog):
    # keep_vectors="drift" and a resume to an earlier snapshot leave the last snapshot
    # without vectors: the rows table needs rows, labels and predictions only.
    pytest.importorskip("wandb", reason='wandb is not installed; pip install "layerwatch[wandb]"')
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        os.makedirs(tmp_path / var, exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "lw"
    shutil.copytree(live.lw, run_dir)
    store = RunStore(run_dir)
    for split in ("train", "validation"):
        drop_vectors(store, split, store.keys(split)[-1])
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        export_run(run_dir, wandb_dir=tmp_path / "wb")
    wb = _wandb_run_dir(tmp_path / "wb")
    tables = glob.glob(os.path.join(wb, "files", "media", "table", "layerwatch", "rows", "*.table.json"))
    assert sorted(os.path.basename(t).split("_")[0] for t in tables) == ["train", "validation"]
    assert "holds no pooled vectors" not in caplog.text


# -- what a measurement sends: every kind, from a measurement the integrations do not know ------
def test_every_tool_sends_what_a_measurement_it_does_not_know_gives(live, tmp_path, monkeypatch, caplog):
    """A measurement registered by the test says what it sends (one item of each kind); export
    sends it to each tool as that tool shows the kind, and a measurement whose part fails
    costs only itself."""
    from layerwatch.measures import Measurement, register, unregister
    from layerwatch.measures.base import File, Film, Image, Scalar, Table, Vectors

    run_dir = tmp_path / "lw"
    shutil.copytree(live.lw, run_dir)
    store = RunStore(run_dir)
    info = store.read_run()
    store.write_run({**info, "measurements": [*info["measurements"], "probe", "broken"]})
    (run_dir / "probe.csv").write_text("split,epoch,step,value\ntrain,0,0,1.5\n", encoding="utf-8")
    steps = [k.step for k in stored_keys(RunInfo.from_store(run_dir))]
    frame = store.frame_path("validation", store.keys("validation")[0])

    class Probe(Measurement):
        name = "probe"

        def sends(self, run, key, snaps=None, logs=None, kinds=()):
            if key is None:
                return [Film("probe/film", store.gif_path("train"), "probe film"),
                        Table("probe/table", ["row", "value"], [[0, 1.5], [1, 2.5]]), File(str(run_dir / "probe.csv"))]
            return [Scalar("layerwatch/probe/value", 0.25 * key.step), Image("probe/picture", frame, "probe picture"),
                    Vectors("probe", [7], np.arange(6, dtype=np.float32).reshape(1, 3, 2), ["tag"], [["a"], ["b"], ["c"]])]

    class Broken(Measurement):
        name = "broken"

        def sends(self, run, key, snaps=None, logs=None, kinds=()):
            raise OSError("its table is gone")

    for cls in (Probe, Broken):
        register(cls)
    try:
        targets = ["--tensorboard", str(tmp_path / "tb"), "--projector-layers", "all"]
        if _installed("wandb"):
            for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
                os.makedirs(tmp_path / var, exist_ok=True)
                monkeypatch.setenv(var, str(tmp_path / var))
            monkeypatch.setenv("WANDB_SILENT", "true")
            targets += ["--wandb", str(tmp_path / "wb")]
        if _installed("mlflow"):
            monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
            targets += ["--mlflow-uri", (tmp_path / "mlruns").as_uri()]
        with caplog.at_level(logging.WARNING, logger="layerwatch"):
            assert main(["export", str(run_dir), *targets]) == 0
    finally:
        for cls in (Probe, Broken):
            unregister(cls.name)
    assert "what broken sends of snapshot" in caplog.text and "its table is gone" in caplog.text
    acc = _accumulator(tmp_path / "tb")
    assert [(s.step, s.value) for s in acc.Scalars("layerwatch/probe/value")] == [(s, 0.25 * s) for s in steps]
    assert [e.step for e in acc.Images("layerwatch/probe/picture")] == steps
    np.testing.assert_array_equal(_decode(acc.Images("layerwatch/probe/picture")[0].encoded_image_string), read_png(frame))
    assert [e.step for e in acc.Images("layerwatch/validation")] == steps  # the embeddings' part still goes
    probe = [e for e in _projector(tmp_path / "tb") if e.tensor_name.startswith("layerwatch/probe/layer_7:")]
    assert len(probe) == len(steps)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "tb" / probe[0].tensor_path, delimiter="\t"), [[0, 1], [2, 3], [4, 5]])
    if _installed("wandb"):
        wb = _wandb_run_dir(tmp_path / "wb")
        history = _wandb_history(wb)
        assert [h["train/global_step"] for h in history if "layerwatch/frames/probe/picture/_type" in h] == steps
        assert [h["layerwatch/probe/value"] for h in history if "layerwatch/probe/value" in h] == [0.25 * s for s in steps]
        (video,) = glob.glob(os.path.join(wb, "files", "media", "videos", "layerwatch", "films", "probe", "film_*.gif"))
        assert _sha(video) == _sha(store.gif_path("train"))
        (path,) = glob.glob(os.path.join(wb, "files", "media", "table", "layerwatch", "probe", "table_*.table.json"))
        table = json.load(open(path, encoding="utf-8"))
        assert table["columns"] == ["row", "value"] and table["data"] == [[0, 1.5], [1, 2.5]]
    if _installed("mlflow"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        (run,) = client.search_runs(["0"])
        names = sorted(os.path.basename(a.path) for a in client.list_artifacts(run.info.run_id, "layerwatch"))
        assert names == ["metrics.csv", "probe.csv", "report.html", "train.gif", "validation.gif"]
        history = client.get_metric_history(run.info.run_id, "layerwatch/probe/value")
        assert sorted((m.step, m.value) for m in history) == [(s, 0.25 * s) for s in steps]
