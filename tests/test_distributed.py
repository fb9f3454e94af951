"""DDP on the CPU: two processes capture their shares, rank 0 gathers, the run equals one process's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_bert, toy_dataset

import layerwatch
from layerwatch import RunStore
from layerwatch.store import SnapshotKey

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
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
        solo = layerwatch.capture(initial, ds, max_samples=30, seed=0)
        assert first.indices.tolist() == solo.indices.tolist() == last.indices.tolist()
        assert len(first.indices) == n
        assert first.labels.tolist() == solo.labels.tolist()
        np.testing.assert_allclose(first.pooled, solo.pooled, atol=1e-5)
        np.testing.assert_array_equal(first.predictions, solo.predictions)
        solo_last = layerwatch.capture(final, ds, indices=last.indices)
        np.testing.assert_allclose(last.pooled, solo_last.pooled, atol=1e-4)
    assert (ddp_run / "lw" / "train.gif").exists()
    assert not any(p.name.startswith(".tmp-") for p in (ddp_run / "lw").rglob("*"))
