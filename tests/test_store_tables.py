"""Each table belongs to the measurement that writes it: no measurement replaces another's rows."""

from __future__ import annotations

import json
import logging
import os

import pytest
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.measures import Measurement, register, unregister
from layerwatch.measures.embeddings.files import replace_metrics, write_metrics
from layerwatch.rundir import owned_files
from layerwatch.snapshot import SnapshotKey
from layerwatch.store import METRIC_FIELDS, METRICS_FILE, TableOwnerError

FIELDS = ("split", "epoch", "step", "layer", "stat", "value")


def _metric(split, key, layer, value, metric="knn_accuracy"):
    return {"split": split, "epoch": key.epoch, "step": key.step, "layer": layer, "metric": metric, "value": value}


def _stat(split, key, layer, value):
    return {"split": split, "epoch": key.epoch, "step": key.step, "layer": layer, "stat": "mean", "value": value}


def test_a_second_measurement_writing_its_own_table_leaves_metrics_csv_intact(tmp_path):
    store = RunStore(tmp_path / "lw")
    key = SnapshotKey(1)
    metrics = [_metric("train", key, layer, 0.5 + layer / 10) for layer in (0, 1, 2)]
    replace_metrics(store, "train", key, metrics, [0, 1, 2])
    # Another measurement's rows of the very same split, snapshot and layers, in its own table.
    store.replace_rows("probe.csv", FIELDS, "train", key, [_stat("train", key, 1, 7.0)], [1], owner="probe")
    store.replace_rows("probe.csv", FIELDS, "train", key, [_stat("train", key, 1, 8.0)], [1], owner="probe")
    assert store.read_metrics() == metrics
    assert [r["value"] for r in store.read_table("probe.csv")] == [8.0]  # its own row of the key replaced
    assert store.table_owners() == {METRICS_FILE: "embeddings", "probe.csv": "probe"}


def test_a_second_owner_of_a_table_is_refused_naming_both(tmp_path):
    store = RunStore(tmp_path / "lw")
    key = SnapshotKey(0)
    metrics = [_metric("train", key, 0, 0.5), _metric("validation", key, 0, 0.25)]
    write_metrics(store, metrics)
    with open(store.metrics_path, "rb") as fh:
        before = fh.read()
    # The same key's rows from another measurement would have replaced the embeddings' rows.
    row = _metric("train", key, 0, 99.0, metric="probe")
    with pytest.raises(TableOwnerError, match=r"metrics\.csv is the table of the measurement 'embeddings'.*'probe' cannot"):
        store.replace_rows(METRICS_FILE, METRIC_FIELDS, "train", key, [row], owner="probe")
    # Another process (another store on the folder) is refused the same way, whole tables too.
    with pytest.raises(TableOwnerError, match="'embeddings'.*'probe'.*a table of its own, such as 'probe.csv'"):
        RunStore(tmp_path / "lw").write_table(METRICS_FILE, METRIC_FIELDS, [row], owner="probe")
    with open(store.metrics_path, "rb") as fh:
        assert fh.read() == before
    assert store.read_metrics() == metrics
    with pytest.raises(ValueError, match="owner=''"):
        store.replace_rows("probe.csv", FIELDS, "train", key, [], owner="")


def test_the_owners_are_run_files_and_go_with_overwrite(tmp_path):
    store = RunStore(tmp_path / "lw")
    store.replace_rows("probe.csv", FIELDS, "train", SnapshotKey(0), [_stat("train", SnapshotKey(0), 0, 1.0)], owner="probe")
    owners = str(tmp_path / "lw" / ".layerwatch-tables")
    assert owners in owned_files(store)
    with open(owners, encoding="utf-8") as fh:
        assert json.load(fh) == {"probe.csv": "probe"}


class Probe(Measurement):
    """Writes its own table, keyed like the embeddings' rows (same splits, steps and layers)."""

    name = "probe"
    output_flags = {"output_hidden_states": True}

    def process(self, ctx, key, snaps):
        for split in ctx.drawn(snaps):
            rows = [_stat(split, key, int(layer), 1.0) for layer in snaps[split].layers]
            ctx.guard("probe table", key, ctx.store.replace_rows, "probe.csv", FIELDS, split, key, rows, owner=self.name)
        return {}


class Intruder(Measurement):
    """Writes metrics.csv, which the embeddings own."""

    name = "intruder"
    output_flags = {"output_hidden_states": True}

    def process(self, ctx, key, snaps):
        for split in ctx.drawn(snaps):
            row = _metric(split, key, int(snaps[split].layers[0]), -1.0, metric="intruder")
            ctx.guard("intruder rows", key, ctx.store.replace_rows, METRICS_FILE, METRIC_FIELDS, split, key, [row],
                      [int(snaps[split].layers[0])], owner=self.name)
        return {}


@pytest.fixture
def two_more():
    register(Probe)
    register(Intruder)
    yield
    unregister(Intruder.name)
    unregister(Probe.name)


def test_during_a_run_another_measurement_never_deletes_the_embeddings_rows(tmp_path, two_more, caplog):
    train, val = toy_dataset(16), toy_dataset(12, seed=1)
    lw = tmp_path / "lw"
    watch = LayerwatchCallback({"train": train, "validation": val}, lw, method="pca", progress=False, batch_size=8)
    model = tiny_bert()
    make_trainer(model, train, [watch], tmp_path / "t", epochs=1)
    watch.setup(model)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        watch.snapshot(model, SnapshotKey(0))
    watch.close()
    store = RunStore(lw)
    rows = store.read_metrics()
    assert {r["metric"] for r in rows} >= {"knn_accuracy", "silhouette"} and "intruder" not in {r["metric"] for r in rows}
    layers = {int(r["layer"]) for r in rows if r["split"] == "train" and r["metric"] == "knn_accuracy"}
    assert len(layers) > 1 and {r["split"] for r in rows} == {"train", "validation"}
    probe = store.read_table("probe.csv")
    assert {(r["split"], int(r["layer"])) for r in probe} == {(s, layer) for s in ("train", "validation") for layer in layers}
    refused = [r.getMessage() for r in caplog.records if "intruder rows" in r.getMessage()]
    assert len(refused) == 2 and all("TableOwnerError" in m and "'embeddings'" in m and "'intruder'" in m for m in refused)
    assert any("intruder rows" in f for f in watch.failures)
    assert store.table_owners() == {METRICS_FILE: "embeddings", "probe.csv": "probe"}
    # Every file of the run, the tables and their owners included, was written through the
    # store and is in its manifest (overwrite=True removes exactly these).
    written = {
        os.path.join(folder, f) for folder, _, files in os.walk(lw) for f in files
        if f not in (".layerwatch-files", ".layerwatch-owner")
    }
    assert written and written <= set(owned_files(store))
