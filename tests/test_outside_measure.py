"""A fourth measurement written outside the package: ``tests/outside_measure/token_norms``.

It is one folder (settings, front and back half, table, report section, ``info`` line,
what it sends to the tools), registered only through the ``layerwatch.measurements``
entry-point group of an installed distribution (a ``.dist-info`` folder on ``sys.path``),
turned on by ``measures=[TokenNorms(layer=1)]`` or the flat ``token_norms=True,
token_norms_layer=1``, and it touches no file of ``layerwatch/``. Its per-token values (rows of different
lengths) are checked against norms computed directly from the trained model, in the run's
table, in ``layerwatch info``, in the report and in TensorBoard, live and exported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_trainer, tiny_bert, toy_dataset

import layerwatch
import layerwatch.measures as registry
from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main, summarize
from layerwatch.measures.base import unpack_ragged

TESTS = Path(__file__).resolve().parent
ENTRY_POINT = "token_norms = outside_measure.token_norms:TokenNormsMeasurement"


def _install(folder: Path) -> None:
    """An installed distribution whose only content is the entry point (as pip would leave it)."""
    info = folder / "token_norms_outside-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: token-norms-outside\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[layerwatch.measurements]\n{ENTRY_POINT}\n", encoding="utf-8")


def _norms(model, dataset, rows, layer: int) -> dict[int, np.ndarray]:
    """Every token's L2 norm of hidden state ``layer``, one row at a time (no padding), straight from the model."""
    model.eval()
    out = {}
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([dataset[int(r)]["input_ids"]])
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
            out[int(r)] = hidden[layer][0].norm(dim=-1).numpy()
    return out


def _accumulator(folder):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The outside measurement, found by the registry through its entry point alone."""
    site = tmp_path_factory.mktemp("site")
    _install(site)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        mp.syspath_prepend(str(TESTS))
        # The registry reads the entry points once per process; this one was added after that.
        registry.load_entry_points(again=True)
        found = registry.registered()
        assert found["token_norms"].__module__ == "outside_measure.token_norms.measure"
        try:
            yield os.pathsep.join([str(site), str(TESTS), str(TESTS.parent)])
        finally:
            registry.unregister("token_norms")


@pytest.fixture(scope="module")
def outside(installed, tmp_path_factory):
    """A 2-epoch run with the outside measurement on the middle hidden state (``TokenNorms(layer=1)``)."""
    pytest.importorskip("tensorboard")
    from outside_measure.token_norms import TokenNorms

    out = tmp_path_factory.mktemp("outside")
    train, val = toy_dataset(24), toy_dataset(12, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, out / "lw", method="pca", progress=False,
                               tensorboard=str(out / "tb_live"), measures=[TokenNorms(layer=1)])
    model = tiny_bert()
    trainer = make_trainer(model, train, [watch], out / "t", epochs=2)
    trainer.train()
    return {"out": out, "lw": out / "lw", "model": model, "trainer": trainer, "splits": {"train": train, "validation": val},
            "path": installed}


def test_its_settings_are_the_same_as_an_object_and_as_flat_keywords(installed, tmp_path):
    from outside_measure.token_norms import TokenNorms

    splits = {"train": toy_dataset(8)}
    given = LayerwatchCallback(splits, tmp_path / "a", measures=[TokenNorms(layer=1)])
    sugar = LayerwatchCallback(splits, tmp_path / "b", token_norms=True, token_norms_layer=1)
    assert given.config.measure("token_norms") == sugar.config.measure("token_norms") == TokenNorms(layer=1)
    assert LayerwatchCallback(splits, tmp_path / "c", token_norms=True).config.measure("token_norms") == TokenNorms()
    assert LayerwatchCallback(splits, tmp_path / "d").config.measure("token_norms") is None  # off unless asked for
    with pytest.raises(ValueError, match=r"TokenNorms\(layer='last'\): layer must be an integer"):
        LayerwatchCallback(splits, tmp_path / "e", token_norms=True, token_norms_layer="last")
    with pytest.raises(ValueError, match="token_norms_layer given but token_norms is off"):
        LayerwatchCallback(splits, tmp_path / "f", token_norms_layer=1)


def test_the_measurement_lives_outside_the_package_and_the_package_names_it_nowhere():
    from outside_measure.token_norms import measure

    package = Path(layerwatch.__file__).resolve().parent
    assert package not in Path(measure.__file__).resolve().parents
    named = [str(p.relative_to(package)) for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".js", ".css")
             and "token_norms" in p.read_text(encoding="utf-8", errors="replace")]
    assert named == []


def test_every_tokens_norm_equals_the_models_own(outside):
    store = RunStore(outside["lw"])
    info = store.read_run()
    assert info["measurements"] == ["embeddings", "token_norms"]
    assert info["config"]["measures"]["token_norms"] == {"layer": 1}
    for split, dataset in outside["splits"].items():
        keys = store.keys(split)
        assert len(keys) == 3  # before training and after each epoch
        key = store.snapshot_key(split, keys[-1])  # taken after the last epoch: the trained model
        snap = store.load_snapshot(split, key)
        direct = _norms(outside["model"], dataset, snap.indices, layer=1)
        last = _norms(outside["model"], dataset, snap.indices, layer=-1)
        assert not np.allclose(direct[int(snap.indices[0])], last[int(snap.indices[0])], rtol=1e-2)  # the setting matters
        stored = unpack_ragged(store.load_arrays("token_norms", split, key), "norms")
        assert len({len(r) for r in stored}) > 1  # ragged: rows of different lengths
        assert [len(r) for r in stored] == [len(dataset[int(i)]["input_ids"]) for i in snap.indices]
        for row, norms in zip(snap.indices, stored):
            np.testing.assert_allclose(norms, direct[int(row)], rtol=1e-4, atol=1e-5)
        # The table: one line per token, in the rows' order.
        lines = [r for r in store.read_table("token_norms.csv") if r["split"] == split and r["step"] == key.step]
        assert len(lines) == sum(len(v) for v in direct.values())
        for row in snap.indices:
            mine = sorted((int(r["token"]), r["value"]) for r in lines if int(r["row"]) == int(row))
            np.testing.assert_allclose([v for _, v in mine], direct[int(row)], rtol=1e-4, atol=1e-5)
    logged = [h["step"] for h in outside["trainer"].state.log_history if "layerwatch/validation/token_norms/mean" in h]
    assert logged == [0, 3, 6]


def _means(outside, split) -> dict[int, float]:
    """The mean token norm of every snapshot of ``split``, by step, from the stored per-token arrays
    (which the test above holds to the model's own norms)."""
    store = RunStore(outside["lw"])
    out = {}
    for k in store.keys(split):
        key = store.snapshot_key(split, k)
        out[key.step] = float(np.mean(np.concatenate(unpack_ragged(store.load_arrays("token_norms", split, key), "norms"))))
    return out


def test_info_in_a_fresh_interpreter_finds_it_through_the_entry_point(outside):
    store = RunStore(outside["lw"])
    key = store.snapshot_key("validation", store.keys("validation")[-1])
    snap = store.load_snapshot("validation", key)
    direct = _norms(outside["model"], outside["splits"]["validation"], snap.indices, layer=1)
    mean = float(np.mean(np.concatenate(list(direct.values()))))
    tokens = sum(len(v) for v in direct.values())
    env = {**os.environ, "PYTHONPATH": outside["path"]}
    proc = subprocess.run([sys.executable, "-m", "layerwatch.cli", "info", str(outside["lw"])], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("token norms of 'validation'"))
    assert line == f"token norms of 'validation' at the last snapshot: mean {mean:.4f} over {tokens} tokens of {len(direct)} rows"
    assert summarize(str(outside["lw"]))["token_norms"]["validation"]["mean"] == pytest.approx(mean, abs=1e-4)


def test_render_writes_the_same_table_again(outside, tmp_path):
    import shutil

    run = tmp_path / "lw"
    shutil.copytree(outside["lw"], run)
    before = RunStore(run).read_table("token_norms.csv")
    os.remove(run / "token_norms.csv")
    assert main(["render", str(run), "--method", "pca"]) == 0
    after = RunStore(run).read_table("token_norms.csv")
    assert len(after) == len(before) > 0
    assert [(r["split"], r["step"], r["row"], r["token"]) for r in after] == [(r["split"], r["step"], r["row"], r["token"]) for r in before]
    np.testing.assert_allclose([r["value"] for r in after], [r["value"] for r in before], rtol=1e-6)


def test_the_report_has_its_section(outside, tmp_path):
    mean = _means(outside, "validation")[6]
    assert main(["report", str(outside["lw"]), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Token norms" in page and f"validation: mean {mean:.4f}" in page


def test_its_scalar_reaches_tensorboard_live_and_exported(outside, tmp_path):
    means = _means(outside, "validation")
    assert main(["export", str(outside["lw"]), "--tensorboard", str(tmp_path / "tb")]) == 0
    for folder in (outside["out"] / "tb_live", tmp_path / "tb"):
        got = _accumulator(folder).Scalars("layerwatch/validation/token_norms/mean")
        assert [s.step for s in got] == [0, 3, 6]
        assert [s.value for s in got] == pytest.approx([means[s] for s in (0, 3, 6)], rel=1e-5)
    # Export sends its table to MLflow's artifacts at the end, with the embeddings' films and metrics.
    from layerwatch.integrations import RunInfo
    from layerwatch.measures.base import File

    files = [os.path.basename(i.path) for i in RunInfo.from_store(outside["lw"]).items(None, kinds=(File,))]
    assert files == ["metrics.csv", "token_norms.csv"]
