"""The measurement seam: a new kind of measurement is one class plus its registration.

``RowNorm`` below is such a measurement, written only against the seam
(``layerwatch.measures``): it reduces each batch of the shared forward pass, stores its
arrays and a table, draws a picture, answers ``layerwatch info`` and is redrawn by
``layerwatch render``, without any change to the callback, the store or the CLI.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main, summarize
from layerwatch.distributed import Part
from layerwatch.measures import Accumulator, Measurement, register, unregister
from layerwatch.measures.embeddings.files import load_snapshot

FIELDS = ("split", "epoch", "step", "layer", "stat", "value")


class _Norms(Accumulator):
    def __init__(self, n: int):
        self.norms = np.zeros(n, dtype=np.float32)

    def update(self, batch) -> None:
        last = batch.output("hidden_states")[-1]  # the same forward pass the embeddings use
        mask = batch.mask.unsqueeze(-1).float()
        mean = (last * mask).sum(1) / mask.sum(1)
        self.norms[batch.rows] = mean.norm(dim=-1).float().cpu().numpy()

    def finish(self) -> Part:
        return Part(rows={"norm": self.norms}, sums={"total": np.array(self.norms.sum())})


class RowNorm(Measurement):
    """The norm of each row's mean top-layer vector, and its mean per split."""

    name = "rownorm"
    output_flags = {"output_hidden_states": True}

    def start(self, plan):
        return _Norms(len(plan.indices))

    def process(self, ctx, key, snaps):
        logs = {}
        for split in ctx.drawn(snaps):
            norms = snaps[split].results[self.name]["norm"]
            mean = float(norms.mean())
            logs[f"layerwatch/{split}/rownorm/mean"] = mean
            row = {"split": split, "epoch": key.epoch, "step": key.step, "layer": -1, "stat": "mean", "value": mean}
            ctx.guard("rownorm table", key, ctx.store.replace_rows, "rownorm.csv", FIELDS, split, key, [row], owner=self.name)
        if ctx.render:
            ctx.guard("rownorm picture", key, self.render_all, ctx)
        return logs

    def render_all(self, ctx):
        from matplotlib.figure import Figure

        from layerwatch.render import figure_png

        rows = ctx.store.read_table("rownorm.csv")
        fig = Figure(figsize=(3, 2))
        ax = fig.add_subplot()
        for split in sorted({r["split"] for r in rows}):
            mine = sorted((r["step"], r["value"]) for r in rows if r["split"] == split)
            ax.plot([s for s, _ in mine], [v for _, v in mine], label=split)
        ctx.store.write_bytes(ctx.store.file_path("rownorm.png"), figure_png(fig))

    def summarize(self, store):
        rows = store.read_table("rownorm.csv")
        return {"rownorm_at_last_snapshot": {r["split"]: round(r["value"], 4) for r in sorted(rows, key=lambda r: r["step"])}}


@pytest.fixture
def rownorm():
    register(RowNorm)
    yield RowNorm
    unregister(RowNorm.name)


def _counting(model):
    calls = {"n": 0}
    original = model.forward

    def forward(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    model.forward = forward
    return calls


@pytest.mark.parametrize("background", [False, True], ids=["in-process", "background"])
def test_a_new_measurement_rides_on_the_one_forward_pass(tmp_path, rownorm, background):
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=False,
                               batch_size=8, background=background)
    model = tiny_bert()
    trainer = make_trainer(model, train, [watch], tmp_path / "t", epochs=1)
    calls = _counting(model)
    watch.setup(model)
    before = calls["n"]
    from layerwatch.snapshot import SnapshotKey

    watch.snapshot(model, SnapshotKey(0))
    watch.close()
    assert calls["n"] - before == 4 + 2  # 32 + 16 rows at batch 8: one pass for both measurements
    store = RunStore(tmp_path / "lw")
    snap = load_snapshot(store, "validation", SnapshotKey(0))
    norms = store.load_arrays("rownorm", "validation", SnapshotKey(0))["norm"]
    np.testing.assert_allclose(norms, np.linalg.norm(snap.pooled[-1], axis=1), rtol=1e-5)
    rows = store.read_table("rownorm.csv")
    assert {(r["split"], r["step"]) for r in rows} == {("train", 0), ("validation", 0)}
    assert (tmp_path / "lw" / "rownorm.png").exists()
    assert store.read_run()["measurements"] == ["embeddings", "rownorm"]
    del trainer


def test_a_new_measurement_reaches_the_log_info_and_render(tmp_path, rownorm):
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2)
    trainer.train()
    logged = [h["step"] for h in trainer.state.log_history if "layerwatch/train/rownorm/mean" in h]
    assert logged == [0, 4, 8]
    info = summarize(str(tmp_path / "lw"))
    last = RunStore(tmp_path / "lw").read_table("rownorm.csv")[-1]["value"]
    assert info["rownorm_at_last_snapshot"]["train"] == pytest.approx(last, abs=1e-4)
    os.remove(tmp_path / "lw" / "rownorm.png")
    assert main(["render", str(tmp_path / "lw"), "--method", "pca"]) == 0
    assert (tmp_path / "lw" / "rownorm.png").exists()


def test_registration_is_checked():
    class Nameless(Measurement):
        pass

    with pytest.raises(TypeError, match="is not a Measurement subclass with a name"):
        register(Nameless)

    class Clash(Measurement):
        name = "embeddings"

    with pytest.raises(ValueError, match="a measurement named 'embeddings' is registered already"):
        register(Clash)
