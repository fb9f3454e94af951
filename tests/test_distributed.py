"""DDP on the CPU: two processes capture their shares, rank 0 gathers, the run equals one
process's; a failure on one rank is met by all ranks together, never by a hang."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import torchrun, tiny_bert, toy_dataset
from ddp_worker import NAMES, SETTINGS, with_names

import layerwatch
from layerwatch import RunStore
from layerwatch.store import SnapshotKey

HERE = Path(__file__).resolve().parent


def _torchrun(out: Path, mode: str, timeout: int = 600):
    return torchrun("ddp_worker.py", out, mode, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = _torchrun(out, "normal")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_two_processes_really_ran(ddp_run):
    assert (ddp_run / "world.txt").read_text() == "2"


def test_gathered_run_equals_a_single_process_capture(ddp_run):
    from transformers import BertForSequenceClassification

    store = RunStore(ddp_run / "lw")
    initial = tiny_bert(seed=0).eval()
    final = BertForSequenceClassification.from_pretrained(ddp_run / "final").eval()
    for split, ds, n in (("train", toy_dataset(40), 30), ("validation", toy_dataset(21, seed=1), 21)):
        assert [k.name for k in store.keys(split)] == ["epoch_000", "epoch_001"]
        first = store.load_snapshot(split, SnapshotKey(0))
        last = store.load_snapshot(split, SnapshotKey(1))
        solo = layerwatch.capture(initial, with_names(ds), max_samples=30, seed=0, label_column="label_text")
        assert first.indices.tolist() == solo.indices.tolist() == last.indices.tolist()
        assert len(first.indices) == n
        np.testing.assert_allclose(first.pooled, solo.pooled, atol=1e-5)
        np.testing.assert_allclose(layerwatch.capture(final, ds, indices=last.indices).pooled, last.pooled, atol=1e-4)
    assert (ddp_run / "lw" / "train.gif").exists()
    assert not any(p.name.startswith(".tmp-") for p in (ddp_run / "lw").rglob("*"))


def test_every_rank_numbers_the_labels_alike(ddp_run):
    # One rank's share lacks the rare "zebra"; every stored label still names its row's string.
    store = RunStore(ddp_run / "lw")
    assert store.read_run()["labels"]["names"] == list(NAMES)
    for split, ds in (("train", with_names(toy_dataset(40))), ("validation", with_names(toy_dataset(21, seed=1)))):
        snap = store.load_snapshot(split, SnapshotKey(1))
        assert [NAMES[i] for i in snap.labels] == [ds["label_text"][i] for i in snap.indices]


def test_a_failure_on_the_main_rank_stops_every_rank_instead_of_hanging(tmp_path):
    proc = _torchrun(tmp_path, "fail-open", timeout=300)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "No space left on device" in text
    assert "rank 0" in text  # the other rank says which rank failed


def test_a_capture_failure_on_one_rank_is_skipped_by_all_ranks(tmp_path):
    proc = _torchrun(tmp_path, "fail-capture", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    failures = (tmp_path / "failures.txt").read_text()
    assert "rank 1: RuntimeError: CUDA out of memory (injected on rank 1)" in failures
    store = RunStore(tmp_path / "lw")
    assert [k.name for k in store.keys("train")] == ["epoch_000"]


def test_every_measurement_of_the_gathered_run_equals_a_single_process(ddp_run, tmp_path):
    from layerwatch import LayerwatchCallback

    splits = {"train": with_names(toy_dataset(40)), "validation": with_names(toy_dataset(21, seed=1))}
    solo = LayerwatchCallback(splits, tmp_path / "solo", **SETTINGS)
    model = tiny_bert(seed=0)
    solo.setup(model)
    solo.snapshot(model, SnapshotKey(0))
    ddp, one = RunStore(ddp_run / "lw"), RunStore(tmp_path / "solo")
    for split in ("train", "validation"):
        a, b = ddp.load_arrays("attention", split, SnapshotKey(0)), one.load_arrays("attention", split, SnapshotKey(0))
        np.testing.assert_allclose(a["stats"], b["stats"], atol=1e-6)
        assert int(a["rows"]) == int(b["rows"]) == len(ddp.load_snapshot(split, SnapshotKey(0)).indices)
        a, b = ddp.load_arrays("attribution", split, SnapshotKey(0)), one.load_arrays("attribution", split, SnapshotKey(0))
        np.testing.assert_allclose(a["shares"], b["shares"], atol=1e-6)
    a, b = ddp.load_arrays("attention", "validation", SnapshotKey(0)), one.load_arrays("attention", "validation", SnapshotKey(0))
    np.testing.assert_allclose(a["maps"].astype(float), b["maps"].astype(float), atol=1e-3)
    a, b = ddp.load_arrays("attribution", "validation", SnapshotKey(0)), one.load_arrays("attribution", "validation", SnapshotKey(0))
    np.testing.assert_allclose(a["conductance"], b["conductance"], atol=1e-6)


def test_ragged_rows_of_two_ranks_are_gathered_in_subset_order():
    """Per-token values: each row has its own length, and one rank's longest row differs from the other's."""
    from layerwatch.distributed import Part, merge_parts
    from layerwatch.measures.base import Measurement, pack_ragged, unpack_ragged
    from layerwatch.snapshot import Snapshot

    rng = np.random.default_rng(0)
    whole = [rng.normal(size=n).astype(np.float32) for n in (3, 7, 1, 5, 2)]  # subset order
    ranks = [Part(rows={"norms": whole[r::2], "mean": np.array([w.mean() for w in whole[r::2]])}) for r in range(2)]
    merged = merge_parts(ranks, n_rows=5, world=2)
    assert [len(a) for a in merged.rows["norms"]] == [3, 7, 1, 5, 2]
    for got, want in zip(merged.rows["norms"], whole):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(merged.rows["mean"], [w.mean() for w in whole])
    # An object array of rows is ragged too.
    boxed = np.empty(2, dtype=object)
    boxed[:] = whole[1::2]
    merged = merge_parts([Part(rows={"norms": whole[0::2]}), Part(rows={"norms": boxed})], n_rows=5, world=2)
    assert [a.tolist() for a in merged.rows["norms"]] == [w.tolist() for w in whole]
    # Stored: two plain arrays that a .npz holds without pickling, unpacked to the same rows.
    snap = Snapshot(pooled=np.zeros((1, 5, 2), np.float32), labels=np.zeros(5, np.int64), layers=np.array([0]),
                    indices=np.arange(5), epoch=0, step=0, split="train")

    class Ragged(Measurement):
        name = "ragged"

    Ragged.__new__(Ragged).assemble(merged, snap)
    stored = snap.results["ragged"]
    assert set(stored) == {"norms", "norms_offsets"} and stored["norms"].dtype == np.float32
    assert stored["norms_offsets"].tolist() == [0, 3, 10, 11, 16, 18]
    assert [a.tolist() for a in unpack_ragged(stored, "norms")] == [w.tolist() for w in whole]
    assert unpack_ragged(pack_ragged("x", []), "x") == []


def test_arrays_whose_trailing_shape_differs_by_rank_are_refused_naming_the_ragged_form():
    from layerwatch.distributed import Part, merge_parts

    parts = [Part(rows={"norms": np.zeros((3, 7))}), Part(rows={"norms": np.zeros((2, 5))})]
    with pytest.raises(ValueError, match=r"rows 'norms' have trailing shape \(7,\) on rank 0, \(5,\) on rank 1.*list with one array per row"):
        merge_parts(parts, n_rows=5, world=2)
