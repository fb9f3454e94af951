"""The capture's numeric precision: resolution, exactness of fp32, fidelity of half precision.

Tiny random-weight BERTs built in code; ``benchmarks/precision_fidelity.py`` measures the
same figures on the real model and data (where the bars are the issue's: cosine >= 0.999
for 99.9% of rows, kNN(10) recall >= 0.98, metrics within 0.01).
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pytest
import torch

import layerwatch
from layerwatch import precision as lp
from layerwatch.config import LayerwatchConfig
from layerwatch.measures.embeddings.files import load_snapshot

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from precision_fidelity import neighbour_recall, row_cosines  # noqa: E402

from conftest import tiny_bert  # noqa: E402

HALF = ["bf16", "fp16"]


def weak_rows(n: int, seed: int) -> dict:
    """Rows whose label shows only weakly in their tokens, so that no metric sits at 1.0 and
    a changed vector could change it."""
    rng = np.random.default_rng(seed)
    ids, masks, labels = [], [], []
    for _ in range(n):
        length = int(rng.integers(4, 20))
        body = rng.integers(5, 100, size=length - 2)
        labels.append(int((body < 30).mean() > 0.25))
        ids.append([1, *body.tolist(), 2])
        masks.append([1] * length)
    return {"input_ids": ids, "attention_mask": masks, "labels": labels}


def bert64(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=64, pad_token_id=0, num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU probe answers: ``cpu_bf16(True)``."""

    def set_flag(value: bool) -> None:
        monkeypatch.setattr(lp, "cpu_has_bf16", lambda *a, **k: value)

    return set_flag


# -- resolution ---------------------------------------------------------------------------
@pytest.mark.parametrize("flag, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_follows_its_bf16_instructions(cpu_bf16, flag, expected):
    cpu_bf16(flag)
    assert lp.resolve_precision("auto", torch.device("cpu")) == expected
    assert lp.resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 1), "fp32")])
def test_auto_on_a_cuda_gpu_follows_its_compute_capability(monkeypatch, cpu_bf16, capability, expected):
    # Ampere and later run bf16 natively; Volta and Turing only fp16 (their bf16 is emulated).
    cpu_bf16(True)  # the CPU's flags do not matter for a GPU
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert lp.resolve_precision("auto", torch.device("cuda", 0)) == expected
    assert lp.resolve_precision("auto", "cuda:1") == expected


def test_auto_elsewhere_is_fp32(cpu_bf16):
    cpu_bf16(True)
    assert lp.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert lp.resolve_precision("auto", "xla") == "fp32"


@pytest.mark.parametrize("setting", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_kept(cpu_bf16, setting):
    cpu_bf16(False)
    assert lp.resolve_precision(setting, torch.device("cpu")) == setting


def test_half_precision_where_torch_cannot_autocast_is_refused(monkeypatch):
    monkeypatch.setattr(lp, "autocast_available", lambda kind: kind == "cpu")
    with pytest.raises(ValueError, match=r"precision='bf16': torch cannot autocast on the model's device 'xla'; pass precision='fp32'"):
        lp.resolve_precision("bf16", "xla")
    assert lp.resolve_precision("fp32", "xla") == "fp32"


def test_slow_half_precisions_on_a_cpu_are_said(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        lp.resolve_precision("fp16", "cpu")
        lp.resolve_precision("bf16", "cpu")
    text = caplog.text
    assert "precision='fp16' on a CPU is emulated" in text
    assert "precision='bf16' on a CPU without bf16 instructions" in text
    caplog.clear()
    cpu_bf16(True)
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        lp.resolve_precision("bf16", "cpu")
    assert caplog.text == ""


def test_cpu_probe_reads_the_flags_line(tmp_path):
    yes = tmp_path / "yes"
    yes.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx512f amx_tile amx_bf16\n")
    no = tmp_path / "no"
    no.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\nbugs\t\t: avx512_bf16\n")
    assert lp.cpu_has_bf16(str(yes)) is True
    assert lp.cpu_has_bf16(str(amx)) is True
    assert lp.cpu_has_bf16(str(no)) is False
    assert lp.cpu_has_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("bad", ["fp8", "FP32", "half", None, 16])
def test_bad_precisions_are_refused_everywhere(bert, train_ds, tmp_path, bad):
    message = rf"precision={bad!r} is not one of 'auto', 'fp32', 'bf16', 'fp16'"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LayerwatchConfig(output_dir=str(tmp_path), precision=bad)
    with pytest.raises(ValueError, match="is not one of 'auto', 'fp32', 'bf16', 'fp16'"):
        layerwatch.LayerwatchCallback({"train": train_ds}, output_dir=str(tmp_path / "run"), precision=bad)
    with pytest.raises(ValueError, match="is not one of 'auto', 'fp32', 'bf16', 'fp16'"):
        layerwatch.capture(bert, train_ds, precision=bad)
    with pytest.raises(ValueError, match="is not one of 'auto', 'fp32', 'bf16', 'fp16'"):
        lp.resolve_precision(bad, "cpu")


def test_defaults(tmp_path):
    # Monitoring defaults to a fast capture where the hardware has one; the function
    # layerwatch.capture to the vectors of a plain forward pass.
    import inspect

    from conftest import toy_dataset

    assert LayerwatchConfig().precision == "auto"
    assert layerwatch.LayerwatchCallback({"train": toy_dataset(8)}, tmp_path / "lw", progress=False).config.precision == "auto"
    assert inspect.signature(layerwatch.capture).parameters["precision"].default == "fp32"


def test_autocast_factory_gives_a_fresh_context_per_call():
    layer = torch.nn.Linear(4, 4)
    # fp32 is a disabled autocast: it overrides an autocast context around it.
    off = lp.autocast_factory("fp32", "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with off():
            assert layer(torch.ones(1, 4)).dtype == torch.float32
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    make = lp.autocast_factory("bf16", torch.device("cpu"))
    first, second = make(), make()
    assert first is not second
    with first:
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with second:
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    assert layer(torch.ones(1, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision='auto' is not one of 'fp32', 'bf16', 'fp16'"):
        lp.autocast_factory("auto", "cpu")  # resolve first


# -- fp32 is exact ---------------------------------------------------------------------
def test_fp32_capture_is_the_default_capture_bit_for_bit(bert, train_ds):
    from layerwatch.capturing import COMMON, capture_split
    from layerwatch.measures.base import SplitPlan
    from layerwatch.measures.embeddings.measure import EmbeddingsMeasurement

    default = layerwatch.capture(bert, train_ds)
    fp32 = layerwatch.capture(bert, train_ds, precision="fp32")
    np.testing.assert_array_equal(fp32.pooled, default.pooled)
    np.testing.assert_array_equal(fp32.predictions, default.predictions)
    # ...and the model's own precision with no autocast at all (capture_split's default).
    config = LayerwatchConfig(output_dir=".")
    n = len(train_ds)
    plan = SplitPlan(split="", indices=np.arange(n), positions=np.arange(n), n_rows=n, labels=fp32.labels, layers="all", config=config)
    parts = capture_split(bert, train_ds, plan, [EmbeddingsMeasurement(config)])
    np.testing.assert_array_equal(parts[EmbeddingsMeasurement.name].rows["pooled"].transpose(1, 0, 2), fp32.pooled)
    assert COMMON in parts


def test_callback_at_fp32_stores_exactly_what_capture_gives(bert, train_ds, val_ds, tmp_path, cpu_bf16):
    from layerwatch.snapshot import SnapshotKey

    cpu_bf16(False)  # "auto" (the default) is fp32 on this CPU, so both runs must agree exactly
    for name, kw in (("explicit", dict(precision="fp32")), ("auto", {})):
        cb = layerwatch.LayerwatchCallback(
            {"train": train_ds, "validation": val_ds}, output_dir=str(tmp_path / name), progress=False,
            method="pca", metrics=False, **kw,
        )
        cb.snapshot(bert, SnapshotKey(0, 0))
        for split, ds in (("train", train_ds), ("validation", val_ds)):
            stored = load_snapshot(cb.store, split, SnapshotKey(0, 0))
            direct = layerwatch.capture(bert, ds, indices=stored.indices, precision="fp32")
            np.testing.assert_array_equal(stored.pooled, direct.pooled)
        assert json.loads((tmp_path / name / "run.json").read_text())["precision"] == "fp32"


# -- half precision ---------------------------------------------------------------------
@pytest.mark.parametrize("precision", HALF)
def test_half_precision_capture_is_faithful_on_a_tiny_model(precision):
    """The benchmark's figures on a random-weight model with hidden size 64 (300 rows a split).

    Bars: cosine >= 0.999 for every row (as strict as the real model's) and kNN(10) recall
    >= 0.98 (the same); metrics within 0.02 rather than 0.01, because with 300 rows one
    changed prediction moves an accuracy by 0.0033, and random weights carry the labels only
    weakly, so close calls are more common than in a trained model.
    """
    from layerwatch.metrics import layer_metrics

    model = bert64()
    train, val = weak_rows(300, seed=0), weak_rows(300, seed=1)
    ref = {k: layerwatch.capture(model, d, precision="fp32") for k, d in (("train", train), ("val", val))}
    half = {k: layerwatch.capture(model, d, precision=precision) for k, d in (("train", train), ("val", val))}
    for split in ref:
        a, b = ref[split].pooled, half[split].pooled
        assert b.dtype == np.float32
        assert not np.array_equal(a[1:], b[1:])  # the transformer layers did run in half precision
        for j in range(a.shape[0]):
            cos = row_cosines(a[j], b[j])
            assert (cos >= 0.999).all(), (split, j, cos.min())
            assert neighbour_recall(a[j], b[j]) >= 0.98, (split, j)
    for make in (
        lambda s: layer_metrics(s["train"].pooled, s["train"].labels),
        lambda s: layer_metrics(s["val"].pooled, s["val"].labels, s["train"].pooled, s["train"].labels),
    ):
        m_ref, m_half = make(ref), make(half)
        # Accuracies that could move either way (not saturated), every metric defined.
        assert 0.5 < np.min(m_ref["knn_accuracy"]) and np.max(m_ref["knn_accuracy"]) < 0.95
        for metric in m_ref:
            assert np.isfinite(m_ref[metric]).all(), metric
            np.testing.assert_allclose(m_half[metric], m_ref[metric], atol=0.02, err_msg=metric)


def test_mean_pool_sums_in_float32_under_autocast():
    from layerwatch.pooling import pool

    rng = np.random.default_rng(0)
    hidden = torch.from_numpy(rng.normal(size=(4, 9, 16)).astype(np.float32))
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 5:] = 0
    reference = {
        "mean": np.stack([hidden[i, : int(mask[i].sum())].double().mean(0).numpy() for i in range(4)]),
        "cls": hidden[:, 0].double().numpy(),
        "last": np.stack([hidden[i, int(mask[i].sum()) - 1].double().numpy() for i in range(4)]),
    }
    for method, expected in reference.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = pool(hidden, mask, method)
        assert out.dtype == torch.float32
        # Sums taken in bf16 would be off by ~1e-2; in float32 they are good to ~1e-7.
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, err_msg=method)
    # bf16 hidden states (a model run in bf16) are pooled in float32 too.
    half = hidden.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(half, mask, "mean")
    assert out.dtype == torch.float32
    expected = np.stack([half[i, : int(mask[i].sum())].double().mean(0).numpy() for i in range(4)])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_half_precision_capture_leaves_the_model_as_it_was(train_ds):
    model = tiny_bert()
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layerwatch.capture(model, train_ds, precision="bf16")
    assert model.training
    assert not torch.is_autocast_enabled("cpu")
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32, n
        assert torch.equal(p, before[n]), n
    # Training after it runs in the model's own precision.
    out = model(input_ids=torch.tensor([train_ds[0]["input_ids"]]), labels=torch.tensor([1]))
    assert out.logits.dtype == torch.float32


def test_the_run_records_the_precision_and_info_prints_it(bert, train_ds, val_ds, tmp_path, cpu_bf16, capsys):
    from layerwatch.cli import main
    from layerwatch.snapshot import SnapshotKey

    cpu_bf16(True)
    cb = layerwatch.LayerwatchCallback(
        {"train": train_ds, "validation": val_ds}, output_dir=str(tmp_path), progress=False, method="pca", metrics=False,
    )
    cb.snapshot(bert, SnapshotKey(0, 0))
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["precision"] == "bf16"
    assert info["config"]["precision"] == "auto"
    stored = load_snapshot(cb.store, "validation", SnapshotKey(0, 0))
    assert stored.pooled.dtype == np.float32
    direct = layerwatch.capture(bert, val_ds, indices=stored.indices, precision="bf16")
    np.testing.assert_array_equal(stored.pooled, direct.pooled)
    assert main(["info", str(tmp_path)]) == 0
    assert "capture precision: bf16" in capsys.readouterr().out



# -- whatever wraps forward: each pass runs in its own precision (bf16 / fp16 training) -----
def _accelerate_wrap(model, dtype, keep_original=True):
    """What ``Accelerator.prepare_model`` does under mixed precision (``bf16=True`` or
    ``fp16=True`` training): an autocast wrapper and fp32 outputs around ``forward``."""
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32

    if keep_original:
        model._original_forward = model.forward
    model.forward = MethodType(torch.autocast("cpu", dtype=dtype)(model.forward.__func__), model)
    model.forward = MethodType(convert_outputs_to_fp32(model.forward.__func__), model)
    return model


def _decorated(model, dtype):
    """A user's own precision wrapper: ``torch.autocast`` used as a decorator."""
    model.forward = torch.autocast("cpu", dtype=dtype)(model.forward)
    return model


WRAPPERS = {
    "accelerate-bf16": lambda m: _accelerate_wrap(m, torch.bfloat16),
    "accelerate-fp16": lambda m: _accelerate_wrap(m, torch.float16),
    "accelerate-without-original": lambda m: _accelerate_wrap(m, torch.bfloat16, keep_original=False),
    "accelerate-prepared-twice": lambda m: _accelerate_wrap(_accelerate_wrap(m, torch.bfloat16), torch.bfloat16),
    "autocast-decorator": lambda m: _decorated(m, torch.bfloat16),
}


def _one_row(ds, i=0):
    row = ds[i]
    return torch.tensor([row["input_ids"]]), torch.tensor([row["attention_mask"]])


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_every_pass_runs_in_its_own_precision_whatever_wraps_forward(train_ds, wrapper):
    from layerwatch.measures.attribution.ig import attribute
    from layerwatch.measures.attribution.norms import norm_maps
    from layerwatch.measures.attention.neuron import query_key_capture

    bare = tiny_bert().eval()
    wrapped = WRAPPERS[wrapper](tiny_bert().eval())
    installed = wrapped.forward
    ids, mask = _one_row(train_ds)
    # The wrapper does change the model's own forward pass...
    with torch.inference_mode():
        assert not torch.equal(wrapped(input_ids=ids, attention_mask=mask).logits, bare(input_ids=ids, attention_mask=mask).logits)
    # ...and every measurement pass is the bare model's in the precision asked for.
    for precision in ("fp32", "bf16"):
        np.testing.assert_array_equal(
            layerwatch.capture(wrapped, train_ds, precision=precision).pooled,
            layerwatch.capture(bare, train_ds, precision=precision).pooled, err_msg=precision,
        )
        got, want = query_key_capture(wrapped, ids, mask, precision=precision), query_key_capture(bare, ids, mask, precision=precision)
        for name in ("q", "k", "attention"):
            assert got[name].dtype == np.float32
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{precision} {name}")
    got, want = attribute(wrapped, ids, mask, target=1, steps=4, special_ids=(1, 2)), attribute(bare, ids, mask, target=1, steps=4, special_ids=(1, 2))
    np.testing.assert_array_equal(got.token_attributions, want.token_attributions)
    np.testing.assert_array_equal(got.conductance, want.conductance)
    got, want = norm_maps(wrapped, ids, mask), norm_maps(bare, ids, mask)
    np.testing.assert_array_equal(got.weighted, want.weighted)
    # The wrapper is back afterwards, so training goes on in its mixed precision.
    assert wrapped.forward is installed


def test_an_autocast_around_the_call_does_not_decide_the_precision(train_ds):
    from layerwatch.measures.attribution.ig import attribute

    model = tiny_bert().eval()
    ids, mask = _one_row(train_ds)
    reference = layerwatch.capture(model, train_ds, precision="fp32").pooled
    expected = attribute(model, ids, mask, target=0, steps=4, special_ids=(1, 2)).token_attributions
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_array_equal(layerwatch.capture(model, train_ds, precision="fp32").pooled, reference)
        np.testing.assert_array_equal(attribute(model, ids, mask, target=0, steps=4, special_ids=(1, 2)).token_attributions, expected)


def test_weights_stored_in_bf16_are_recorded_as_what_the_capture_runs_in(train_ds, val_ds, tmp_path):
    from layerwatch.model_utils import computed_precision, weights_precision
    from layerwatch.snapshot import SnapshotKey

    model = tiny_bert().eval().to(torch.bfloat16)
    assert weights_precision(model) == "bf16"
    assert computed_precision("fp32", model) == "bf16 (model weights)"
    assert computed_precision("fp16", model) == "fp16"
    assert computed_precision("fp32", tiny_bert()) == "fp32"
    cb = layerwatch.LayerwatchCallback(
        {"train": train_ds, "validation": val_ds}, output_dir=str(tmp_path), progress=False, method="pca", metrics=False,
        precision="fp32", attribution=True, attribution_examples=2, attribution_steps=4, on_error="raise",
    )
    cb.snapshot(model, SnapshotKey(0, 0))
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["precision"] == "bf16 (model weights)"  # not "fp32": fp32 cannot be had from bf16 weights
    assert info["methods"]["attribution"]["precision"] == "bf16 (model weights)"
    stored = load_snapshot(cb.store, "validation", SnapshotKey(0, 0))
    assert stored.pooled.dtype == np.float32 and np.isfinite(stored.pooled).all()
    assert np.isfinite(cb.store.load_arrays("attribution", "validation", SnapshotKey(0, 0))["token_attributions"]).all()


@pytest.fixture(scope="module")
def bf16_training(tmp_path_factory):
    """A real Trainer with ``bf16=True`` on the CPU (accelerate's autocast wrapper around
    forward), with attention and attribution on, at precision fp32 and bf16."""
    import copy

    from conftest import make_trainer, toy_dataset
    from test_attribution import ToyTokenizer

    train, val = toy_dataset(24), toy_dataset(12, seed=1)
    out = tmp_path_factory.mktemp("bf16")
    runs = {}
    for precision in ("fp32", "bf16"):
        model = tiny_bert()
        initial = copy.deepcopy(model).eval()
        watch = layerwatch.LayerwatchCallback(
            {"train": train, "validation": val}, out / precision, method="pca", progress=False, metrics=False,
            attention=True, attention_examples=2, attribution=True, attribution_examples=2, attribution_steps=4,
            precision=precision,
        )
        trainer = make_trainer(model, train, [watch], out / f"t-{precision}", epochs=1, bf16=True)
        trainer.processing_class = trainer.callback_handler.processing_class = ToyTokenizer()
        trainer.train()
        assert "_original_forward" in vars(trainer.model)  # the wrapper was there during training
        final = tiny_bert()
        final.load_state_dict(trainer.model.state_dict())
        runs[precision] = {"dir": out / precision, "weights": {0: initial, 1: final.eval()}, "val": val, "train": train}
    return runs


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_training_stores_vectors_of_the_precision_it_records(bf16_training, precision, capsys):
    from layerwatch import RunStore
    from layerwatch.cli import main
    from layerwatch.model_utils import eager_attention
    from layerwatch.snapshot import SnapshotKey

    run = bf16_training[precision]
    store = RunStore(run["dir"])
    assert json.loads((run["dir"] / "run.json").read_text())["precision"] == precision
    assert main(["info", str(run["dir"])]) == 0
    assert f"capture precision: {precision}" in capsys.readouterr().out
    for split in ("train", "validation"):
        assert [k.epoch for k in store.keys(split)] == [0, 1]
        for epoch, weights in run["weights"].items():
            stored = load_snapshot(store, split, SnapshotKey(epoch))
            ds = run["train" if split == "train" else "val"]
            # Eager attention, as the run's pass with attention on (sdpa rounds otherwise in bf16).
            with eager_attention(weights):
                same = layerwatch.capture(weights, ds, indices=stored.indices, precision=precision).pooled
            np.testing.assert_allclose(stored.pooled, same, rtol=0, atol=1e-6, err_msg=f"{split} {epoch}")
            if precision == "fp32":
                # ...and not what bf16 gives (small with these random weights, whose layers add
                # little to the residual stream, yet far beyond the tolerance above).
                half = layerwatch.capture(weights, ds, indices=stored.indices, precision="bf16").pooled
                assert np.abs(stored.pooled[1:] - half[1:]).max() > 2e-5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_training_stores_attribution_at_every_snapshot(bf16_training, precision):
    from layerwatch import RunStore
    from layerwatch.measures.attribution.ig import attribute, baseline_ids
    from layerwatch.snapshot import SnapshotKey

    run = bf16_training[precision]
    store = RunStore(run["dir"])
    methods = json.loads((run["dir"] / "run.json").read_text())["methods"]
    assert methods["attribution"]["precision"] == "fp32"  # integrated gradients run in fp32 either way
    assert [k.epoch for k in store.keys("validation", "attribution")] == [0, 1]
    assert [k.epoch for k in store.keys("validation", "attention")] == [0, 1]
    for epoch, weights in run["weights"].items():
        arrays = store.load_arrays("attribution", "validation", SnapshotKey(epoch))
        snap = load_snapshot(store, "validation", SnapshotKey(epoch), pooled=False)
        for r, position in enumerate(arrays["positions"]):
            row = run["val"][int(snap.indices[position])]
            ids, mask = torch.tensor([row["input_ids"]]), torch.tensor([row["attention_mask"]])
            expected = attribute(weights, ids, mask, target=int(arrays["target"][r]), steps=4,
                                 baseline=baseline_ids(ids, (1, 2), 0))
            n = ids.shape[1]
            np.testing.assert_allclose(arrays["token_attributions"][r, :n], expected.token_attributions, atol=1e-6)


def test_a_wrapper_that_cannot_be_set_aside_is_refused_not_mislabelled(train_ds):
    """A wrapper layerwatch does not recognise opens bf16 autocast inside forward: an fp32
    pass says so instead of storing bf16 vectors as fp32."""
    from layerwatch.measures.attribution.ig import attribute

    model = tiny_bert().eval()
    inner = model.forward

    def sneaky(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return inner(*args, **kwargs)

    model.forward = sneaky
    with pytest.raises(ValueError, match=r"computed in bf16 although layerwatch ran it in fp32.*precision='bf16'"):
        layerwatch.capture(model, train_ds, precision="fp32")
    ids, mask = _one_row(train_ds)
    with pytest.raises(ValueError, match="computed in bf16 although layerwatch ran it in fp32"):
        attribute(model, ids, mask, target=0, steps=4, special_ids=(1, 2))
    # Asked for what it computes, the pass runs; nothing of ours is left hooked.
    hooks = (len(model._forward_pre_hooks), sum(len(m._forward_hooks) for m in model.modules()))
    np.testing.assert_array_equal(
        layerwatch.capture(model, train_ds, precision="bf16").pooled,
        layerwatch.capture(tiny_bert().eval(), train_ds, precision="bf16").pooled,
    )
    assert (len(model._forward_pre_hooks), sum(len(m._forward_hooks) for m in model.modules())) == hooks
