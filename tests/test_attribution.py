"""Attribution as a measurement of the snapshot: fixed examples, stored, drawn, and no side effect."""

from __future__ import annotations

import copy
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_bert, tiny_distilbert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main, summarize
from layerwatch.measures.attribution.accumulate import TOKEN_CLASSES
from layerwatch.measures.attribution.ig import attribute, baseline_ids
from layerwatch.measures.attribution.norms import norm_maps
from layerwatch.snapshot import SnapshotKey
from layerwatch.measures.embeddings.files import load_snapshot

SPECIAL = (1, 2)  # the toy rows' [CLS] and [SEP]


class ToyTokenizer:
    """What the measurement reads of a tokenizer, for the toy vocabulary of conftest."""

    pad_token_id, cls_token_id, sep_token_id = 0, 1, 2
    bos_token_id = eos_token_id = None
    all_special_ids = [0, 1, 2]

    def convert_ids_to_tokens(self, ids):
        names = {0: "[PAD]", 1: "[CLS]", 2: "[SEP]", 99: ","}
        return [names.get(int(i), f"w{int(i)}") for i in ids]

    def get_vocab(self):
        return {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, **{f"w{i}": i for i in range(3, 99)}, ",": 99}


@pytest.fixture(scope="module")
def attribution_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution")
    train, val = toy_dataset(32), toy_dataset(24, seed=1)
    model = tiny_bert()
    initial = copy.deepcopy(model)
    # fp32 capture: the norms taken in its forward pass are compared with fp32 computations.
    watch = LayerwatchCallback({"train": train, "validation": val}, out / "lw", method="pca", progress=False,
                               attribution=True, attribution_examples=3, attribution_steps=16, precision="fp32")
    trainer = make_trainer(model, train, [watch], out / "t", epochs=2)
    trainer.processing_class = ToyTokenizer()
    trainer.callback_handler.processing_class = trainer.processing_class
    trainer.train()
    return {"dir": out / "lw", "initial": initial, "val": val, "trainer": trainer}


def test_stored_attributions_equal_a_direct_computation(attribution_run):
    store = RunStore(attribution_run["dir"])
    arrays = store.load_arrays("attribution", "validation", SnapshotKey(0))
    snap = load_snapshot(store, "validation", SnapshotKey(0))
    assert arrays["positions"].tolist() and len(arrays["positions"]) == 3
    model = attribution_run["initial"].eval()
    for r, position in enumerate(arrays["positions"]):
        row = attribution_run["val"][int(snap.indices[position])]
        ids = torch.tensor([row["input_ids"]])
        mask = torch.tensor([row["attention_mask"]])
        expected = attribute(model, ids, mask, target=int(snap.labels[position]), steps=16,
                             baseline=baseline_ids(ids, [0, 1, 2], 0))
        n = int(arrays["lengths"][r])
        np.testing.assert_allclose(arrays["token_attributions"][r, :n], expected.token_attributions, atol=1e-6)
        np.testing.assert_allclose(arrays["conductance"][r, :, :n], expected.conductance, atol=1e-6)
        assert arrays["f_x"][r] == pytest.approx(expected.f_x, abs=1e-6)
        assert arrays["completeness_gap"][r] == pytest.approx(expected.completeness_gap, abs=1e-6)
        assert [str(t) for t in arrays["tokens"][r, :n]][0] == "[CLS]"


def test_norm_shares_over_all_rows_equal_an_explicit_computation(attribution_run):
    store = RunStore(attribution_run["dir"])
    rows = [r for r in store.read_table("norms.csv") if r["split"] == "validation" and r["step"] == 0]
    model = attribution_run["initial"].eval()
    snap = load_snapshot(store, "validation", SnapshotKey(0))
    weight = np.zeros((2, 2, 4))
    norm = np.zeros((2, 2, 4))
    for i in snap.indices:
        row = attribution_run["val"][int(i)]
        ids = torch.tensor([row["input_ids"]])
        maps = norm_maps(model, ids, torch.tensor([row["attention_mask"]]))
        classes = np.array([[t == 1, t == 2, t == 99, t not in (1, 2, 99)] for t in row["input_ids"]]).T  # (4, T)
        for c in range(4):
            weight[:, :, c] += (maps.attention[:, :, :, classes[c]].sum(-1) / maps.attention.sum(-1)).mean(-1)
            norm[:, :, c] += (maps.weighted[:, :, :, classes[c]].sum(-1) / maps.weighted.sum(-1)).mean(-1)
    weight /= len(snap.indices)
    norm /= len(snap.indices)
    got = {(r["layer"], r["head"], r["stat"]): r["value"] for r in rows}
    for l in range(2):
        for h in range(2):
            for c, cls in enumerate(TOKEN_CLASSES):
                assert got[(l + 1, h + 1, f"weight_share_{cls}")] == pytest.approx(weight[l, h, c], abs=1e-5)
                assert got[(l + 1, h + 1, f"norm_share_{cls}")] == pytest.approx(norm[l, h, c], abs=1e-5)
            assert sum(got[(l + 1, h + 1, f"weight_share_{cls}")] for cls in TOKEN_CLASSES) == pytest.approx(1.0, abs=1e-5)


def test_run_json_records_the_method_and_the_pictures_are_written(attribution_run):
    import imageio.v3 as iio

    root = attribution_run["dir"]
    method = RunStore(root).read_run()["methods"]["attribution"]
    assert method["steps"] == 16 and method["target"] == "label" and "pad token" in method["baseline"]
    assert method["captum_ig_method"] == "riemann_left"
    gifs = sorted(f for f in os.listdir(root) if f.startswith("attribution_validation_") and f.endswith(".gif"))
    assert len(gifs) == 3
    assert all(iio.improps(root / g, index=None).shape[0] == 3 for g in gifs)
    assert (root / "norm_shares_train.png").exists() and (root / "norm_shares_validation.png").exists()
    info = summarize(str(root))["attribution"]["validation"]
    assert info["examples"] == 3 and info["steps"] == 16


def test_render_rebuilds_the_attribution_pictures_without_the_model(attribution_run, tmp_path):
    copy_dir = tmp_path / "lw"
    shutil.copytree(attribution_run["dir"], copy_dir)
    shutil.rmtree(copy_dir / "attribution_frames")
    for f in os.listdir(copy_dir):
        if f.startswith(("attribution_", "norm_shares_")) and f.endswith((".gif", ".png")):
            os.remove(copy_dir / f)
    assert main(["render", str(copy_dir), "--method", "pca"]) == 0
    assert len([f for f in os.listdir(copy_dir) if f.startswith("attribution_validation_")]) == 3
    assert (copy_dir / "norm_shares_validation.png").exists()


def _three_steps(tmp_path, name, **settings):
    torch.manual_seed(0)
    model = tiny_bert()
    train = toy_dataset(24)
    watch = LayerwatchCallback({"train": train}, tmp_path / name, method="pca", progress=False, every_n_steps=1,
                               attention=True, **settings)
    trainer = make_trainer(model, train, [watch], tmp_path / f"t-{name}", epochs=1, logging_strategy="steps", logging_steps=1,
                           max_steps=3)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_attribution_between_training_steps_changes_nothing_of_training(tmp_path):
    # Snapshots after every step, with attribution on and off: bit-identical losses and weights.
    plain_losses, plain = _three_steps(tmp_path, "off")
    losses, weights = _three_steps(tmp_path, "on", attribution=True, attribution_examples=2, attribution_steps=4,
                                   attribution_target="prediction")
    assert len(losses) == 3 and losses == plain_losses
    for n in plain:
        assert torch.equal(plain[n], weights[n]), n
    assert len(RunStore(tmp_path / "on").keys("train", "attribution")) == 4


def test_distilbert_is_supported_and_other_models_get_a_clear_message(tmp_path):
    train = toy_dataset(16)
    watch = LayerwatchCallback({"train": train}, tmp_path / "d", method="pca", progress=False, attribution=True,
                               attribution_examples=2, attribution_steps=4)
    model = tiny_distilbert()
    watch.setup(model)
    watch.snapshot(model, SnapshotKey(0))
    assert RunStore(tmp_path / "d").load_arrays("attribution", "train", SnapshotKey(0))["conductance"].shape[1] == 3
    from test_models import tiny_gpt2

    gpt = LayerwatchCallback({"train": train}, tmp_path / "g", method="pca", progress=False, attribution=True, pooling="last")
    with pytest.raises(ValueError, match=r"is not supported: attribution and attention norms need the BERT family"):
        gpt.check_model(tiny_gpt2())


def test_attribution_of_labels_needs_a_head_that_matches_them(tmp_path):
    watch = LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "lw", attribution=True)
    with pytest.raises(ValueError, match=r"attribution_target='label'.*pass attribution_target='prediction'"):
        watch.check_model(tiny_bert(num_labels=6))
    with pytest.raises(ValueError, match=r"attribution_target='logit' is not one of 'label', 'prediction'"):
        LayerwatchCallback({"train": toy_dataset(16)}, tmp_path / "x", attribution=True, attribution_target="logit")


def test_the_tools_are_sent_every_examples_film_and_the_norms_table(attribution_run):
    import os

    from layerwatch.config import LayerwatchConfig
    from layerwatch.integrations.base import RunInfo
    from layerwatch.measures import AttributionMeasurement
    from layerwatch.measures.sent import File, Film

    run = RunInfo.from_store(attribution_run["dir"])
    items = AttributionMeasurement(LayerwatchConfig(output_dir=str(attribution_run["dir"]))).sends(run, None)
    gifs = sorted(n for n in os.listdir(attribution_run["dir"]) if n.startswith("attribution_") and n.endswith(".gif"))
    assert len(gifs) == 3  # one per example
    assert sorted(os.path.basename(i.path) for i in items if isinstance(i, Film)) == gifs
    assert [os.path.basename(i.path) for i in items if isinstance(i, File)] == ["norms.csv"]
