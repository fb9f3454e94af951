"""Training dynamics (data maps, area under the margin): known answers and how training ends.

The measures are checked against the papers' formulas on hand-built logits, recorded from
real training with every way a run can go (gradient accumulation, group_by_length,
max_steps mid-epoch, evaluation, a resume after a crash), and shown to leave training
bit for bit as it was.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import torchrun, PAD, make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, LayerwatchConfig, RunStore
from layerwatch.measures.dynamics import Dynamics, compute
from layerwatch.measures.dynamics.recorder import Recorder, RowIndex, dataset_hashes, epoch_lines
from layerwatch.measures.dynamics.render import data_map_points
from layerwatch.measures.embeddings.files import load_snapshot

SETTINGS = dict(method="pca", progress=False, max_samples=16, metrics=False, report=False, precision="fp32")


def _table(run) -> list[dict]:
    return RunStore(run).read_table("dynamics.csv")


def _lines(rows, split="train", source=None):
    return [r for r in rows if r["split"] == split and (source is None or r["source"] == source)]


# -- known answers ----------------------------------------------------------------------------
# Two rows, three classes, three epochs; row 0 is visited twice in epoch 2.
LOGITS = {
    (0, 1): [[2.0, 0.0, -1.0]],
    (0, 2): [[1.0, 1.5, 0.0], [0.5, 0.0, 0.0]],
    (0, 3): [[3.0, 0.0, 0.0]],
    (1, 1): [[0.0, 1.0, 0.0]],
    (1, 2): [[0.0, 0.0, 2.0]],
    (1, 3): [[0.0, -1.0, 1.0]],
}
GOLD = {0: 0, 1: 2}


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _expected(row):
    """The papers' formulas written out for ``row``."""
    per_epoch_p, per_epoch_c, margins = [], [], []
    for epoch in (1, 2, 3):
        visits = LOGITS[(row, epoch)]
        y = GOLD[row]
        ps = [_softmax(z)[y] for z in visits]
        cs = [1.0 if max(range(3), key=lambda j: z[j]) == y else 0.0 for z in visits]
        margins += [z[y] - max(v for j, v in enumerate(z) if j != y) for z in visits]
        per_epoch_p.append(sum(ps) / len(ps))
        per_epoch_c.append(sum(cs) / len(cs))
    conf = sum(per_epoch_p) / 3
    var = math.sqrt(sum((p - conf) ** 2 for p in per_epoch_p) / 3)  # population std (Swayamdipta et al.)
    return conf, var, sum(per_epoch_c) / 3, sum(margins) / len(margins)


class _Fixed(torch.nn.Module):
    """A 'model' whose logits for a row are set by hand (looked up by its first token)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.table = {}

    def forward(self, input_ids, attention_mask=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        first = [int(r[m.bool()][0]) for r, m in zip(input_ids, attention_mask)]
        logits = torch.stack([self.table[f].pop(0) for f in first]) + self.w
        return SequenceClassifierOutput(loss=logits.sum(), logits=logits)


def test_hand_built_logits_give_the_papers_measures_exactly():
    # Row 0 is stored right-padded, row 1 left-padded: the batches pad them the other way.
    ids = [[11, 5, 6, PAD], [PAD, 12, 7, 8]]
    mask = [[1, 1, 1, 0], [0, 1, 1, 1]]
    index = RowIndex(dataset_hashes(ids, mask, PAD), np.array([0, 2]))
    rec = Recorder(index, 3, PAD)
    model = _Fixed().train()
    rec.attach(model)
    rec.armed = True
    lines = []
    for epoch in (1, 2, 3):
        model.table = {11: [torch.tensor(z) for z in LOGITS[(0, epoch)]], 12: [torch.tensor(z) for z in LOGITS[(1, epoch)]]}
        for v in range(2):
            rows = [(11, [PAD, PAD, 11, 5, 6], 0), (12, [12, 7, 8, PAD, PAD], 2)]
            rows = [r for r in rows if len(model.table[r[0]]) > 0]
            if rows:
                batch = torch.tensor([r[1] for r in rows])
                model(input_ids=batch, attention_mask=(batch != PAD).long(), labels=torch.tensor([r[2] for r in rows]))
        rec.flush()
        got = epoch_lines(rec.sums)
        for r, y, p, g, m, c, v in zip(*(got[k] for k in ("row", "label", "predicted", "gold_prob", "margin", "correct", "visits"))):
            lines.append((r, y, p, g, m, c, v, epoch))
        rec.reset()
    rec.detach()
    assert not model._forward_hooks
    cols = list(zip(*lines))
    m = compute.cumulative(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
    for i, row in enumerate(m.rows):
        conf, var, corr, aum = _expected(int(row))
        assert m.confidence[i] == pytest.approx(conf, abs=1e-6)
        assert m.variability[i] == pytest.approx(var, abs=1e-6)
        assert m.correctness[i] == pytest.approx(corr, abs=1e-6)
        assert m.aum[i] == pytest.approx(aum, abs=1e-6)
    assert list(m.visits) == [4, 3] and list(m.epochs) == [3, 3]
    # The numpy reference of one visit agrees with the hook's on-device numbers.
    p, margin, correct = compute.visit_measures(np.array([[1.0, 1.5, 0.0]]), np.array([0]))
    assert p[0] == pytest.approx(_softmax([1.0, 1.5, 0.0])[0]) and margin[0] == pytest.approx(-0.5) and correct[0] == 0


def test_duplicate_rows_share_their_visits_by_label():
    index = RowIndex(dataset_hashes([[5, 6], [5, 6], [5, 6], [7]], None, PAD), np.array([0, 1, 0, 1]))
    assert index.duplicates == 3
    visits = np.zeros(4)
    keys = dataset_hashes([[5, 6]] * 3 + [[7]], None, PAD)
    rows = index.locate(keys, np.array([0, 0, 1, 1]), visits)
    assert list(rows) == [0, 2, 1, 3]
    assert list(index.locate(dataset_hashes([[9]], None, PAD), np.array([0]), visits)) == [-1]


def test_settings_are_checked_when_built():
    with pytest.raises(ValueError, match=r"Dynamics\(top=0\)"):
        Dynamics(top=0)
    with pytest.raises(ValueError, match="confidence_threshold"):
        Dynamics(confidence_threshold=1.5)
    with pytest.raises(ValueError, match="dynamics='yes' must be True, False"):
        LayerwatchCallback({"train": toy_dataset(8)}, dynamics="yes", progress=False)
    with pytest.raises(ValueError, match="unknown settings"):
        LayerwatchCallback({"train": toy_dataset(8)}, dynamics={"tops": 3}, progress=False)
    cfg = LayerwatchConfig(measures=[Dynamics(top=7)])
    assert cfg.to_dict()["measures"]["dynamics"] == {"top": 7, "confidence_threshold": 0.5, "variability_threshold": 0.2}
    assert LayerwatchConfig.from_dict(cfg.to_dict()).measure("dynamics") == Dynamics(top=7)
    assert LayerwatchConfig().measure("dynamics") is None  # off by default
    import layerwatch

    assert layerwatch.Dynamics is Dynamics


# -- from real training --------------------------------------------------------------------
def _train(tmp_path, name, dynamics=True, epochs=2, rows=40, callbacks=(), **kw):
    train = toy_dataset(rows)
    val = toy_dataset(16, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / name / "lw", dynamics=dynamics, **SETTINGS)
    model = tiny_bert()
    trainer = make_trainer(model, train, [watch, *callbacks], tmp_path / name / "t", epochs=epochs,
                           eval_dataset=val, **kw)
    return watch, model, trainer


def test_training_is_bit_identical_with_and_without_dynamics(tmp_path):
    kw = dict(gradient_accumulation_steps=2, train_sampling_strategy="group_by_length", eval_strategy="epoch")
    results = []
    for on in (False, True):
        watch, model, trainer = _train(tmp_path, f"on{on}", dynamics=on, **kw)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        results.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
        assert not any(model._forward_hooks.values()) if on else True
    (l0, w0), (l1, w1) = results
    assert l0 == l1 and len(l0) == 2
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch run with gradient accumulation, group_by_length and evaluation each epoch."""
    tmp = tmp_path_factory.mktemp("dyn")
    watch, model, trainer = _train(tmp, "run", gradient_accumulation_steps=2, train_sampling_strategy="group_by_length", eval_strategy="epoch")
    trainer.train()
    return tmp / "run" / "lw", watch, model, trainer


def test_every_training_row_is_counted_once_per_epoch(trained):
    run, watch, model, trainer = trained
    assert watch.failures == []
    lines = _lines(_table(run), source="training")
    for epoch in (1, 2):
        mine = [r for r in lines if r["epoch"] == epoch]
        # 40 rows, every one once: the evaluation passes (eval mode) are never counted.
        assert sorted(int(r["row"]) for r in mine) == list(range(40))
        assert all(int(r["visits"]) == 1 for r in mine)
        assert {r["step"] for r in mine} == {3 * epoch}
    labels = toy_dataset(40)["labels"]
    assert all(int(r["label"]) == labels[int(r["row"])] for r in lines)
    assert not any(model._forward_hooks.values())  # removed at the end


def test_other_splits_are_measured_from_the_capture_pass(trained):
    run, watch, model, trainer = trained
    lines = _lines(_table(run), "validation")
    assert {r["source"] for r in lines} == {"capture"} and {r["step"] for r in lines} == {0, 3, 6}
    last = sorted((r for r in lines if r["step"] == 6), key=lambda r: int(r["row"]))
    val = toy_dataset(16, seed=1)
    model.eval()
    with torch.no_grad():
        for r in last:
            ids = torch.tensor([val["input_ids"][int(r["row"])]])
            z = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].double()
            y = val["labels"][int(r["row"])]
            p = torch.softmax(z, -1)[y].item()
            assert float(r["gold_prob"]) == pytest.approx(p, abs=1e-5)
            assert float(r["margin"]) == pytest.approx((z[y] - z[1 - y]).item(), abs=1e-5)
            assert int(r["predicted"]) == int(z.argmax()) and int(r["visits"]) == 1


def test_data_maps_frames_and_suspects_come_from_the_table(trained):
    run, *_ = trained
    store = RunStore(run)
    lines = _table(run)
    for split, after in (("train", -1), ("validation", 0)):
        keys = store.keys(split, "datamaps")
        assert len(keys) == 2
        stored = store.load_arrays("datamaps", split, keys[-1])
        expect = compute.from_table(lines, split, after_step=after)
        np.testing.assert_allclose(stored["aum"], expect.aum)
        m = compute.RowMeasures(**{k: stored[k] for k in compute.RowMeasures.__dataclass_fields__})
        pts = data_map_points(m)
        np.testing.assert_array_equal(pts["x"], expect.variability)
        np.testing.assert_array_equal(pts["y"], expect.confidence)
        for k in keys:
            assert os.path.exists(store.array_path("datamap_frames", split, k, ".png"))
        assert (run / f"datamap_{split}.gif").exists()
    suspects = [r for r in store.read_table("dynamics_suspects.csv") if r["split"] == "train"]
    expect = compute.suspects(compute.from_table(lines, "train"))
    assert [int(r["row"]) for r in suspects] == [r["row"] for r in expect[: len(suspects)]]
    assert [float(r["aum"]) for r in suspects] == sorted(float(r["aum"]) for r in suspects)
    assert all(r["label_name"] in ("LABEL_0", "LABEL_1") for r in suspects)


def test_render_redraws_the_data_map_films(trained, tmp_path):
    import shutil

    from layerwatch.cli import main

    run = tmp_path / "lw"
    shutil.copytree(trained[0], run)
    before = _table(run)
    for split in ("train", "validation"):
        os.remove(run / f"datamap_{split}.gif")
    assert main(["render", str(run), "--method", "pca"]) == 0
    assert (run / "datamap_train.gif").exists() and (run / "datamap_validation.gif").exists()
    assert _table(run) == before


def test_suspects_command_reads_the_table_without_torch(trained, tmp_path):
    run, *_ = trained
    out = tmp_path / "s.csv"
    code = (
        "import sys; from layerwatch.cli import main; "
        f"rc = main(['suspects', {str(run)!r}, '--top', '5', '--csv', {str(out)!r}]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    import csv

    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    expect = compute.suspects(compute.from_table(_table(run), "train"), 5)
    assert [int(r["row"]) for r in rows] == [r["row"] for r in expect]
    assert len(done.stdout.strip().splitlines()) == 6
    from layerwatch.cli import main, summarize

    assert main(["suspects", str(run), "--split", "nope"]) == 2
    info = summarize(str(run))["dynamics"]
    m = compute.from_table(_table(run), "train")
    regions = np.bincount(m.regions(), minlength=3)
    assert info["train"] == {"rows": 40, "epochs": 2, "easy-to-learn": int(regions[0]), "ambiguous": int(regions[1]),
                             "hard-to-learn": int(regions[2]), "lowest_aum": round(float(m.aum.min()), 4)}
    assert main(["info", str(run)]) == 0


def test_max_steps_ending_mid_epoch_writes_the_visited_rows(tmp_path):
    watch, model, trainer = _train(tmp_path, "ms", epochs=3, max_steps=7)  # 5 steps an epoch of 40 rows
    trainer.train()
    lines = _lines(_table(tmp_path / "ms" / "lw"), source="training")
    assert len([r for r in lines if r["epoch"] == 1]) == 40
    partial = [r for r in lines if r["epoch"] == 2]
    assert len(partial) == 16 and {r["step"] for r in partial} == {7}
    assert not any(model._forward_hooks.values())


class _Crash:
    """A callback that stops training with an error at ``step``."""

    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("crash")


def test_a_resumed_run_counts_no_visit_twice(tmp_path):
    save = dict(save_strategy="steps", save_steps=3)
    ref, _, trainer = _train(tmp_path, "ref", **save)
    trainer.train()
    reference = _lines(_table(tmp_path / "ref" / "lw"), source="training")

    watch, model, trainer = _train(tmp_path, "crash", callbacks=[_Crash(8)], **save)
    with pytest.raises(RuntimeError, match="crash"):
        trainer.train()
    watch.close()  # a hook left by the crash goes with the callback's close
    assert not any(model._forward_hooks.values())
    # The run resumes from step 6, mid-epoch 2 (5 steps an epoch): the epoch's first 8 rows
    # come from the checkpoint, the rest from the resumed training.
    watch2, model2, trainer2 = _train(tmp_path, "crash", **save)
    trainer2.train(resume_from_checkpoint=str(tmp_path / "crash" / "t" / "checkpoint-6"))
    resumed = _lines(_table(tmp_path / "crash" / "lw"), source="training")
    key = lambda r: (r["epoch"], int(r["row"]))  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, reference))
    assert all(int(r["visits"]) == 1 for r in resumed)
    ref_by = {key(r): r for r in reference}
    for r in resumed:
        assert float(r["gold_prob"]) == pytest.approx(float(ref_by[key(r)]["gold_prob"]), abs=1e-5)


def test_regression_heads_are_told_and_training_goes_on(tmp_path, caplog):
    from datasets import Dataset

    rows = toy_dataset(24).to_dict()
    rows["labels"] = [float(v) + 0.5 for v in rows["labels"]]
    train = Dataset.from_dict(rows)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", dynamics=True, **SETTINGS)
    trainer = make_trainer(tiny_bert(num_labels=1), train, [watch], tmp_path / "t", epochs=1)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        trainer.train()
    assert trainer.state.global_step == 3
    assert any("for single-label classification" in r.getMessage() and "num_labels=1" in r.getMessage() for r in caplog.records)
    assert _lines(_table(tmp_path / "lw")) == []


def test_multi_label_batches_are_told_and_left_out(caplog):
    index = RowIndex(dataset_hashes([[5, 6]], None, PAD), None)
    rec = Recorder(index, 3, PAD)
    model = _Fixed().train()
    model.table = {5: [torch.zeros(3)]}
    rec.attach(model)
    rec.armed = True
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        model(input_ids=torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 2, dtype=torch.long),
              labels=torch.tensor([[1.0, 0.0, 1.0]]))
    rec.detach()
    assert rec.disabled and "single-label classification" in caplog.text
    rec.flush()
    assert not rec.sums["visits"].any()


def test_report_text_false_stores_no_text(tmp_path):
    from datasets import Dataset

    rows = toy_dataset(24).to_dict()
    rows["text"] = [f"secret {i}" for i in range(24)]
    train = Dataset.from_dict(rows)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", dynamics=True, report_text=False, **SETTINGS)
    make_trainer(tiny_bert(), train.remove_columns("text"), [watch], tmp_path / "t", epochs=1).train()
    found = [p for p, _, files in os.walk(tmp_path / "lw") for f in files
             if "secret" in open(os.path.join(p, f), encoding="latin-1").read()]
    assert found == []
    assert all(r["text"] == "" for r in RunStore(tmp_path / "lw").read_table("dynamics_suspects.csv"))


# -- the known answer on noisy labels ------------------------------------------------------------
class _Bag(torch.nn.Module):
    """A tiny bag-of-words classifier that learns the demo corpus's topics in a few epochs."""

    def __init__(self, vocab: int, dim: int = 32, k: int = 4):
        from transformers import PretrainedConfig

        super().__init__()
        self.config = PretrainedConfig(num_labels=k, pad_token_id=PAD, num_hidden_layers=0)
        self.emb = torch.nn.Embedding(vocab, dim, padding_idx=PAD)
        self.drop = torch.nn.Dropout(0.1)
        self.out = torch.nn.Linear(dim, k)

    def forward(self, input_ids, attention_mask=None, labels=None, output_hidden_states=False, return_dict=True, **kw):
        from transformers.modeling_outputs import SequenceClassifierOutput

        e = self.emb(input_ids)
        m = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1).float()
        logits = self.out(self.drop((e * m).sum(1) / m.sum(1)))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=(e,) if output_hidden_states else None)


def test_flipped_labels_sink_to_the_bottom_of_the_aum_ranking(tmp_path):
    from datasets import Dataset

    from layerwatch.demo.corpus import make_corpus

    corpus = make_corpus(400, seed=0, noise=0.0, two_topic_share=0.0)["train"]
    texts, labels = corpus["text"], list(corpus["label"])
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), len(labels) // 10, replace=False)
    for i in flipped:
        labels[i] = (labels[i] + 1 + int(rng.integers(0, 3))) % 4
    words = sorted({w for t in texts for w in re.findall(r"[a-z']+", t.lower())})
    vocab = {w: i + 3 for i, w in enumerate(words)}
    ids = [[1] + [vocab[w] for w in re.findall(r"[a-z']+", t.lower())] + [2] for t in texts]
    train = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": labels})
    torch.manual_seed(0)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", dynamics=True, **SETTINGS)
    make_trainer(_Bag(len(vocab) + 3), train, [watch], tmp_path / "t", epochs=3, learning_rate=6e-2,
                 lr_scheduler_type="constant").train()
    m = compute.from_table(_table(tmp_path / "lw"), "train")
    assert list(m.rows) == list(range(400)) and set(m.epochs) == {3}
    lowest = set(m.rows[m.ranking()[:40]].tolist())
    caught = len(lowest & set(flipped.tolist())) / len(flipped)
    assert caught >= 0.8
    clean = np.setdiff1d(np.arange(400), flipped)
    assert m.confidence[flipped].mean() < m.confidence[clean].mean()
    assert m.correctness[clean].mean() > 0.7  # the model did learn
    info = json.loads(open(tmp_path / "lw" / "dynamics" / "meta.json").read())
    assert info["rows"] == 400


# -- the report page -------------------------------------------------------------------------
def test_report_page_shows_an_interactive_data_map_and_the_suspects(trained, open_page, tmp_path):
    from layerwatch.report import write_report

    run, *_ = trained
    path = write_report(str(run), out=str(tmp_path / "report.html"))
    page, log = open_page(path)
    store = RunStore(run)
    m = compute.from_table(_table(run), "validation", after_step=0)
    # Hover a validation dot: its row, label, confidence, variability and margin are read.
    i = int(np.argmin(m.aum))
    row = int(m.rows[i])
    page.locator(".datamap canvas[data-split='validation']").scroll_into_view_if_needed()
    pt = page.evaluate(f"window.layerwatchDataMap.pointOf('validation', {row})")
    page.mouse.move(pt["x"], pt["y"])
    state = page.evaluate("window.layerwatchDataMap.state('validation')")
    assert state["hovered"] == row
    for text in (f"validation row {row}", f"LABEL_{m.label[i]}", f"{m.confidence[i]:.3f}", f"{m.variability[i]:.3f}",
                 f"{m.aum[i]:.3f}"):
        assert text in state["details"]
    # Click: pinned on the map and in every layer's layout of the same split.
    page.mouse.click(pt["x"], pt["y"])
    assert page.evaluate("window.layerwatchDataMap.state('validation')")["pinned"] == row
    report = page.evaluate("window.layerwatchReport.state()")
    indices = list(load_snapshot(store, "validation", store.keys("validation")[0]).indices)
    assert report["split"] == "validation" and report["pinned"] == indices.index(row)
    # The suspects: ranked by AUM, sortable, downloadable as CSV.
    train = compute.from_table(_table(run), "train")
    state = page.evaluate("window.layerwatchDataMap.state('train')")
    assert state["tableRows"] == [int(train.rows[j]) for j in train.ranking()]
    page.locator(".suspects-table th[data-key='y']").first.click()  # the train section comes first
    state = page.evaluate("window.layerwatchDataMap.state('train')")
    conf = dict(zip(train.rows.tolist(), np.round(train.confidence, 4).tolist()))
    assert [conf[r] for r in state["tableRows"]] == sorted(conf[r] for r in state["tableRows"])
    lines = state["csv"].strip().split("\n")
    assert lines[0].startswith("rank,row,AUM") and len(lines) == 1 + 40
    with page.expect_download() as dl:
        page.locator(".suspects button.download").first.click()
    assert dl.value.suggested_filename == "suspects_train.csv"
    assert open(dl.value.path(), encoding="utf-8").read() == state["csv"]
    assert log.page_errors == [] and log.requests == [] and log.console_errors == []


# -- DDP -------------------------------------------------------------------------------------
def test_ddp_table_equals_the_one_process_table_of_the_same_batches(tmp_path):
    proc = torchrun("ddp_dynamics_worker.py", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "world.txt").read_text() == "2"
    # The one-process table of the same batches: every rank's batches, in the order each
    # rank saw them, epoch by epoch (each rank sees 40 / 2 / 8 = 3 batches an epoch; the
    # sampler pads the last one by repeating rows).
    from ddp_dynamics_worker import unique_rows

    ids = unique_rows()["input_ids"]
    where = {tuple(r): i for i, r in enumerate(ids)}
    expected = {}
    for rank in (0, 1):
        batches = torch.load(tmp_path / f"batches-{rank}.pt")
        assert len(batches) == 6
        for b, batch in enumerate(batches):
            epoch = 1 + b // 3
            p, margin, correct = compute.visit_measures(batch["logits"].numpy(), batch["labels"].numpy())
            pred = batch["logits"].numpy().argmax(1)
            for k in range(len(p)):
                row = where[tuple(batch["input_ids"][k][batch["attention_mask"][k].bool()].tolist())]
                e = expected.setdefault((epoch, row), [0, 0.0, 0.0, 0.0])
                e[0] += 1
                e[1] += p[k]
                e[2] += margin[k]
                e[3] += correct[k]
                assert pred[k] in (0, 1)
    got = {(r["epoch"], int(r["row"])): r for r in _lines(_table(tmp_path / "lw"), source="training")}
    assert set(got) == set(expected)
    for key, (v, ps, ms, cs) in expected.items():
        r = got[key]
        assert int(r["visits"]) == v
        assert float(r["gold_prob"]) == pytest.approx(ps / v, abs=2e-6)
        assert float(r["margin"]) == pytest.approx(ms / v, abs=2e-6)
        assert float(r["correct"]) == pytest.approx(cs / v, abs=1e-9)
    assert sum(int(r["visits"]) for r in got.values()) == 2 * 48  # 2 epochs x 2 ranks x 3 batches x 8


# -- whatever wraps the model --------------------------------------------------------------------
@pytest.mark.parametrize("wrap", ["bf16", "peft"])
def test_wrapped_models_are_recorded_alike(tmp_path, wrap):
    """bf16 training (accelerate's autocast wrapper around forward) and a PEFT model:
    every row once an epoch, and the numbers are those of the batch's own logits."""
    kw = {}
    model = tiny_bert()
    if wrap == "bf16":
        kw["bf16"] = True
    else:
        peft = pytest.importorskip("peft")
        model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]))
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", dynamics=True, **SETTINGS)
    seen = []

    def record(module, args, kwargs, output):
        if module.training and torch.is_grad_enabled():
            seen.append((kwargs["labels"].clone(), output.logits.detach().float().clone()))

    trainer = make_trainer(model, train, [watch], tmp_path / "t", epochs=1, **kw)
    handle = trainer.model.register_forward_hook(record, with_kwargs=True)
    trainer.train()
    handle.remove()
    assert watch.failures == []
    lines = _lines(_table(tmp_path / "lw"), source="training")
    assert sorted(int(r["row"]) for r in lines) == list(range(24)) and all(int(r["visits"]) == 1 for r in lines)
    labels = torch.cat([s[0] for s in seen]).numpy()
    p, margin, _ = compute.visit_measures(torch.cat([s[1] for s in seen]).numpy(), labels)
    np.testing.assert_allclose(sorted(float(r["gold_prob"]) for r in lines), np.sort(p), atol=2e-6)
    np.testing.assert_allclose(sorted(float(r["margin"]) for r in lines), np.sort(margin), atol=2e-6)
    assert not any(trainer.model._forward_hooks.values())


def test_the_data_map_plots_its_rows_and_names_the_regions():
    from matplotlib.figure import Figure

    from layerwatch.measures.dynamics.render import draw_data_map

    m = compute.RowMeasures(
        rows=np.arange(4), label=np.zeros(4, int), predicted=np.zeros(4, int),
        confidence=np.array([0.9, 0.1, 0.5, 0.3]), variability=np.array([0.05, 0.02, 0.3, 0.1]),
        correctness=np.array([1.0, 0.0, 0.5, 0.25]), aum=np.zeros(4), epochs=np.full(4, 3.0), visits=np.full(4, 3.0),
    )
    fig = draw_data_map(Figure(), m, "t", 0.5, 0.2)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.c_[m.variability, m.confidence])
    np.testing.assert_array_equal(ax.collections[0].get_array(), m.correctness)
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["ambiguous (1)", "easy-to-learn (1)", "hard-to-learn (2)"]
    assert list(m.regions()) == [0, 2, 1, 2]


def test_what_the_dynamics_send_to_the_tools_comes_from_its_files(trained, tmp_path):
    """Export sends the mean margin the Trainer's log got, the data-map films, the suspects and the tables."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    from layerwatch.cli import main
    from layerwatch.integrations import RunInfo
    from layerwatch.measures.base import File, Film, Table

    run, watch, model, trainer = trained
    logged = {h["step"]: h["layerwatch/validation/dynamics/mean_margin"] for h in trainer.state.log_history
              if "layerwatch/validation/dynamics/mean_margin" in h}
    assert len(logged) >= 2
    assert main(["export", str(run), "--tensorboard", str(tmp_path / "tb")]) == 0
    acc = ea.EventAccumulator(str(tmp_path / "tb"), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    got = {s.step: s.value for s in acc.Scalars("layerwatch/validation/dynamics/mean_margin")}
    assert got == pytest.approx(logged, rel=1e-6)
    items = RunInfo.from_store(run).items(None)
    films = {i.name: os.path.basename(i.path) for i in items if isinstance(i, Film)}
    assert films["datamap/train"] == "datamap_train.gif"
    (suspects,) = [i for i in items if isinstance(i, Table) and i.name == "suspects/train"]
    stored = [r for r in RunStore(run).read_table("dynamics_suspects.csv") if r["split"] == "train"]
    assert [int(r[suspects.columns.index("row")]) for r in suspects.rows] == [int(r["row"]) for r in stored]
    files = [os.path.basename(i.path) for i in items if isinstance(i, File)]
    assert "dynamics.csv" in files and "dynamics_suspects.csv" in files


def test_the_data_map_picture_follows_the_pages_slider(trained, open_page, tmp_path):
    # The section's picture is the data map of the snapshot the slider selects (or the
    # latest before it), from the stored frames of every snapshot.
    import base64
    import json

    from layerwatch.report import write_report
    from layerwatch.snapshot import epoch_value

    run, *_ = trained
    store = RunStore(run)
    keys = [store.snapshot_key("validation", k) for k in store.keys("validation", "datamaps")]  # with their steps
    assert len(keys) >= 2
    path = write_report(str(run), out=str(tmp_path / "report.html"))
    text = open(path, encoding="utf-8").read()
    start = text.index('id="layerwatch-data">') + len('id="layerwatch-data">')
    data = json.loads(text[start : text.index("</script>", start)])
    page, log = open_page(path)
    split = page.evaluate("window.layerwatchReport.state().split")
    snapshots = next(s for s in data["splits"] if s["name"] == split)["snapshots"]
    seen = set()
    for k, snap in enumerate(snapshots):
        page.evaluate(f"document.getElementById('slider').value = '{k}'")
        page.dispatch_event("#slider", "input")
        fig = page.locator("figure.picture[data-group='datamap/validation']")
        now = (int(snap["step"]), epoch_value(snap["epoch"]))
        before = [key for key in keys if (key.step, key.epoch) <= now]
        assert fig.get_attribute("data-snapshot") == (before[-1].title if before else ""), snap
        if before:
            src = fig.locator("img").get_attribute("src")
            frame = store.array_path("datamap_frames", "validation", before[-1], ".png")
            assert base64.b64decode(src.split(",", 1)[1]) == open(frame, "rb").read()
            seen.add(before[-1].title)
    assert len(seen) >= 2, (keys, snapshots)  # it moved with the slider
    assert log.page_errors == [] and log.console_errors == []
