"""Sharded models on the CPU: FSDP2 (``fully_shard``) under torchrun with gloo, two processes.

Every rank makes the same forward calls (padding batches where it has fewer rows), the
gathered vectors and attention statistics equal one process's, a failure on one rank is
skipped by all ranks together, and what sharding cannot do is refused before the first step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import torchrun, tiny_bert
from fsdp_worker import SETTINGS, splits

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.store import SnapshotKey
from layerwatch.measures.embeddings.files import load_snapshot

HERE = Path(__file__).resolve().parent

pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 needs torch.distributed")


def _torchrun(out: Path, mode: str, timeout: int = 400):
    return torchrun("fsdp_worker.py", out, mode, timeout=timeout)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    proc = _torchrun(out, "normal")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def solo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("solo")
    watch = LayerwatchCallback(splits(), out / "lw", **SETTINGS)
    model = tiny_bert(seed=0)
    watch.setup(model)
    watch.monitor.snapshot(model, SnapshotKey(0), fatal=True)
    both = LayerwatchCallback(splits(), out / "norms", **{**SETTINGS, "attribution": True, "attribution_examples": 2})
    both.setup(model)
    both.monitor.snapshot(model, SnapshotKey(0), fatal=True)
    return out


def test_the_model_was_really_sharded_over_two_processes(fsdp_run):
    result = json.loads((fsdp_run / "result.json").read_text())
    assert result["engine"] == "fsdp2" and result["world"] == 2
    assert result["shard_rows"] == 8  # each rank holds half of a 16-row weight


def test_sharded_vectors_equal_one_process(fsdp_run, solo_run):
    sharded, solo = RunStore(fsdp_run / "lw"), RunStore(solo_run / "lw")
    for split, n in (("train", 30), ("validation", 21), ("small", 5)):
        a, b = load_snapshot(sharded, split, SnapshotKey(0)), load_snapshot(solo, split, SnapshotKey(0))
        assert a.indices.tolist() == b.indices.tolist() and len(a.indices) == n
        np.testing.assert_allclose(a.pooled, b.pooled, atol=1e-5)
        np.testing.assert_array_equal(a.predictions, b.predictions)


def test_sharded_attention_statistics_equal_one_process(fsdp_run, solo_run):
    sharded, solo = RunStore(fsdp_run / "lw"), RunStore(solo_run / "lw")
    for split in ("train", "validation", "small"):
        a, b = sharded.load_arrays("attention", split, SnapshotKey(0)), solo.load_arrays("attention", split, SnapshotKey(0))
        np.testing.assert_allclose(a["stats"], b["stats"], atol=1e-5)
        assert int(a["rows"]) == int(b["rows"])
    compared = []
    for split in ("train", "validation", "small"):
        a, b = sharded.load_arrays("attention", split, SnapshotKey(0)), solo.load_arrays("attention", split, SnapshotKey(0))
        assert sorted(a) == sorted(b)
        for name in ("maps", "neuron_q", "neuron_k"):
            if name in b:
                np.testing.assert_allclose(a[name].astype(float), b[name].astype(float), atol=1e-3 if name == "maps" else 1e-5)
                compared.append(name)
    assert {"maps", "neuron_q", "neuron_k"} <= set(compared)  # the head view's examples and its neuron view


def test_attention_norms_read_the_gathered_output_projection(fsdp_run, solo_run):
    # The hooks read each layer's W_O whole during the lockstep pass: the shares equal one process's.
    result = json.loads((fsdp_run / "result.json").read_text())
    assert result["full_weight_error"] < 1e-6
    sharded = np.load(fsdp_run / "shares.npz")
    solo = RunStore(solo_run / "norms")
    for split in ("train", "validation", "small"):
        np.testing.assert_allclose(sharded[split], solo.load_arrays("attribution", split, SnapshotKey(0))["shares"], atol=1e-5)


def test_attribution_is_refused_under_sharding_with_the_reason(fsdp_run):
    refusal = json.loads((fsdp_run / "result.json").read_text())["refusal"]
    assert refusal is not None
    assert "attribution=True" in refusal and "backward pass" in refusal and "attribution=False" in refusal


def test_fsdp1_is_captured_through_its_wrapper_and_refused_without_it(tmp_path, solo_run):
    proc = _torchrun(tmp_path, "fsdp1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["engine"] == "fsdp1" and result["runner_is_wrapper"]
    assert result["flat_shard"] != [16, 16]  # outside a forward the model holds a flat shard only
    assert "watch.attach(trainer)" in result["refusal"]
    sharded, solo = RunStore(tmp_path / "lw"), RunStore(solo_run / "lw")
    for split in ("train", "validation", "small"):
        a, b = load_snapshot(sharded, split, SnapshotKey(0)), load_snapshot(solo, split, SnapshotKey(0))
        np.testing.assert_allclose(a.pooled, b.pooled, atol=1e-5)
        sa, sb = sharded.load_arrays("attention", split, SnapshotKey(0)), solo.load_arrays("attention", split, SnapshotKey(0))
        np.testing.assert_allclose(sa["stats"], sb["stats"], atol=1e-5)


def test_a_failure_on_one_rank_is_skipped_by_every_rank_together(tmp_path):
    proc = _torchrun(tmp_path, "fail")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    failures = json.loads((tmp_path / "failures.json").read_text())
    assert len(failures) == 2
    assert "rank 1" in failures[0] and "injected failure" in failures[0]
    assert "rank 1" in failures[1] and "injected read failure" in failures[1]
    store = RunStore(tmp_path / "lw")
    for split in ("train", "validation", "small"):
        assert [k.step for k in store.keys(split)] == [2]
    snap = load_snapshot(store, "validation", SnapshotKey(2, 2, True))
    solo = LayerwatchCallback(splits(), tmp_path / "solo", **SETTINGS)
    model = tiny_bert(seed=0)
    solo.setup(model)
    solo.monitor.snapshot(model, SnapshotKey(0), fatal=True)
    np.testing.assert_allclose(snap.pooled, load_snapshot(RunStore(tmp_path / "solo"), "validation", SnapshotKey(0)).pooled, atol=1e-5)


def test_fsdp_without_the_trainer_is_refused_before_the_first_step(tmp_path):
    # FSDP1 hides its wrapper from callbacks: without attach() the callback says how to fix it.
    watch = LayerwatchCallback(splits(), tmp_path / "lw", **SETTINGS)
    args = SimpleNamespace(fsdp=True, output_dir=str(tmp_path / "t"), report_to=[])
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, epoch=0.0, log_history=[])
    with pytest.raises(ValueError, match=r"watch\.attach\(trainer\)"):
        watch.on_train_begin(args, state, None, model=tiny_bert())
    assert not (tmp_path / "lw" / "embeddings").exists()


def test_fsdp_declared_but_not_applied_runs_as_one_process(tmp_path):
    # The Trainer falls back to DDP on a CPU: the model it hands over holds no shards.
    watch = LayerwatchCallback(splits(), tmp_path / "lw", **SETTINGS)
    model = tiny_bert(seed=0)
    watch.monitor.sharded_by("fsdp", wrapped=model)
    watch.setup(model)
    assert watch.monitor.engine is None and watch.monitor.runner is None


def test_the_run_records_the_engine(fsdp_run, solo_run):
    assert RunStore(fsdp_run / "lw").read_run()["sharding"] == "fsdp2"
    assert RunStore(solo_run / "lw").read_run()["sharding"] is None


# -- the lockstep itself, in one process --------------------------------------------------------

def _plan(indices, batch_size=4):
    from layerwatch.config import LayerwatchConfig
    from layerwatch.measures.base import SplitPlan

    indices = np.asarray(indices, dtype=np.int64)
    config = LayerwatchConfig(output_dir=".", batch_size=batch_size)
    return SplitPlan(split="train", indices=indices, positions=np.arange(len(indices)), n_rows=len(indices),
                     labels=np.zeros(len(indices), dtype=np.int64), layers="all", config=config)


class _Counting(torch.nn.Module):
    """Counts forward calls and the rows each one had (the module the lockstep calls)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls: list[int] = []

    def forward(self, **kwargs):
        self.calls.append(int(kwargs["input_ids"].shape[0]))
        return self.inner(**kwargs)


@pytest.mark.parametrize("rows, steps", [(10, 3), (10, 5), (0, 2)])
def test_a_rank_with_fewer_batches_runs_padding_calls_whose_outputs_are_dropped(rows, steps):
    from conftest import toy_dataset

    from layerwatch.capturing import COMMON, Lockstep, capture_split
    from layerwatch.config import LayerwatchConfig
    from layerwatch.measures.embeddings.measure import EmbeddingsMeasurement

    model = tiny_bert(seed=0).eval()
    ds = toy_dataset(12)
    emb = EmbeddingsMeasurement(LayerwatchConfig(output_dir="."))
    runner = _Counting(model)
    plan = _plan(np.arange(rows))
    parts = capture_split(model, ds, plan, [emb], batch_size=4, lockstep=Lockstep(steps=steps, filler=11, runner=runner))
    batches = -(-rows // 4)
    assert len(runner.calls) == steps  # every rank makes the same number of calls
    assert runner.calls[batches:] == [1] * (steps - batches)  # the padding ones: one row each
    if rows == 0:
        assert parts is None
        return
    plain = capture_split(model, ds, plan, [emb], batch_size=4)
    np.testing.assert_array_equal(parts[EmbeddingsMeasurement.name].rows["pooled"], plain[EmbeddingsMeasurement.name].rows["pooled"])
    np.testing.assert_array_equal(parts[COMMON].rows["head_predictions"], plain[COMMON].rows["head_predictions"])


def test_lockstep_counts_the_batches_of_the_rank_with_the_most_rows():
    from layerwatch.capturing import Lockstep

    assert Lockstep.steps_for(21, 2, 5) == 3  # 11 and 10 rows: 3 and 2 batches
    assert Lockstep.steps_for(1, 2, 5) == 1  # the rank without rows still makes one call
    assert Lockstep.steps_for(40, 1, 32) == 2


def test_a_failure_under_lockstep_is_raised_after_the_agreement_and_leaves_no_hook():
    from conftest import toy_dataset

    from layerwatch.capturing import Lockstep, capture_split
    from layerwatch.config import LayerwatchConfig
    from layerwatch.measures.embeddings.measure import EmbeddingsMeasurement

    model = tiny_bert(seed=0).eval()
    emb = EmbeddingsMeasurement(LayerwatchConfig(output_dir="."))
    real = emb.start

    def start(plan):
        acc = real(plan)

        def update(batch):
            raise RuntimeError("injected")
        acc.update = update
        return acc

    emb.start = start
    runner = _Counting(model)
    with torch.no_grad():  # transformers installs its own output-recording hooks on a first call, for good
        model(input_ids=torch.tensor([[1, 5, 2]]), output_hidden_states=True)
    model.train()
    before = {name: len(m._forward_hooks) for name, m in model.named_modules()}
    with pytest.raises(RuntimeError, match="injected"):
        capture_split(model, toy_dataset(12), _plan(np.arange(12)), [emb], batch_size=4,
                      lockstep=Lockstep(steps=3, filler=0, runner=runner))
    assert runner.calls == [4]  # stopped at the next agreement, not after the split
    assert {name: len(m._forward_hooks) for name, m in model.named_modules()} == before
    assert model.training  # the mode it was in
