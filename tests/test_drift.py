"""Representation drift per layer: linear CKA with known answers, and in every run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset
from scipy.stats import ortho_group

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.cli import main, summarize
from layerwatch.metrics import cka_matrix, cka_norms, layer_cka, linear_cka
from layerwatch.measures.embeddings.files import load_snapshot, write_metrics


def paper_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (2) with linear kernels: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),
    HSIC(K, L) = tr(K H L H) / (n - 1)^2, K = X X^T, L = Y Y^T, H = I - 11^T / n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return float(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)))


def test_cka_of_a_representation_with_itself_is_one():
    x = np.random.default_rng(0).normal(size=(50, 7))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_rotation_and_isotropic_scaling_of_either_side():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 5)) + rng.normal(size=(60, 1))
    base = linear_cka(x, y)
    q8, q5 = ortho_group.rvs(8, random_state=2), ortho_group.rvs(5, random_state=3)
    assert linear_cka(x @ q8, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, y @ q5) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x * 1e4, y * 3e-6) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, abs=1e-12)  # centred


@pytest.mark.parametrize("seed", range(5))
def test_cka_equals_the_papers_formula_on_random_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 12)) * rng.uniform(0.1, 3, size=12)
    y = x[:, :6] @ rng.normal(size=(6, 9)) + rng.normal(size=(40, 9))
    assert linear_cka(x, y) == pytest.approx(paper_cka(x, y), abs=1e-10)


def test_independent_random_representations_give_a_cka_that_shrinks_with_the_rows():
    # For independent Gaussian X (n, p) and Y (n, q), E[CKA] is about sqrt(p q) / n for
    # n >> p, q: with p = q = 10 it is near 10 / n; the bound 3 * 10 / n holds with a margin.
    rng = np.random.default_rng(7)
    values = {}
    for n in (100, 400, 1600, 6400):
        values[n] = np.mean([linear_cka(rng.normal(size=(n, 10)), rng.normal(size=(n, 10))) for _ in range(5)])
        assert values[n] < 3 * 10 / n
    assert values[6400] < values[400] < values[100]


def test_a_constant_layer_gives_a_defined_value_not_nan():
    x = np.random.default_rng(0).normal(size=(30, 4))
    const = np.full((30, 4), 2.5)
    assert linear_cka(const, const) == 1.0
    assert linear_cka(x, const) == 0.0 and linear_cka(np.zeros((30, 3)), x) == 0.0
    pooled = np.stack([x, const])
    assert np.isfinite(layer_cka(pooled, pooled)).all()
    assert np.isfinite(cka_matrix(pooled)).all()
    assert cka_matrix(pooled)[0, 1] == 0.0 and cka_matrix(pooled)[1, 1] == 1.0


def test_precomputed_norms_give_the_pairwise_cka_of_every_layer():
    # Layers: random, a rotation of the first plus noise, constant, and one holding a NaN.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    bad = rng.normal(size=(50, 6))
    bad[4, 2] = np.nan
    pooled = np.stack([x, x @ q + 0.3 * rng.normal(size=(50, 6)), np.full((50, 6), 1.5), bad])
    other = pooled + 0.5 * rng.normal(size=pooled.shape)
    norms, other_norms = cka_norms(pooled), cka_norms(other)
    assert np.isnan(norms[3]) and norms[2] == 0.0 and (norms[:2] > 0).all()
    expected = np.full((4, 4), np.nan)
    for i in range(3):
        for j in range(3):
            expected[i, j] = 1.0 if i == j else linear_cka(pooled[i], pooled[j])
    np.testing.assert_allclose(cka_matrix(pooled), expected, atol=1e-12)
    np.testing.assert_allclose(cka_matrix(pooled, norms), expected, atol=1e-12)
    by_layer = [linear_cka(pooled[j], other[j]) for j in range(3)] + [np.nan]
    np.testing.assert_allclose(layer_cka(pooled, other), by_layer, atol=1e-12)
    np.testing.assert_allclose(layer_cka(pooled, other, norms, other_norms), by_layer, atol=1e-12)
    assert expected[0, 1] == pytest.approx(paper_cka(pooled[0], pooled[1]), abs=1e-10)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"needs two \(rows, dim\) arrays of the same rows"):
        linear_cka(np.zeros((5, 2)), np.zeros((4, 2)))


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("drift")
    train, val = toy_dataset(32), toy_dataset(16, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, out / "lw", method="pca", progress=False)
    trainer = make_trainer(tiny_bert(), train, [watch], out / "t", epochs=2)
    trainer.train()
    return out / "lw", trainer


def test_drift_is_in_metrics_csv_the_log_history_and_its_heatmaps(drift_run):
    root, trainer = drift_run
    store = RunStore(root)
    rows = store.read_metrics()
    first = {(r["split"], r["step"], r["layer"]): r["value"] for r in rows if r["metric"] == "cka_first"}
    prev = {(r["split"], r["step"], r["layer"]): r["value"] for r in rows if r["metric"] == "cka_prev"}
    assert {s for s, _, _ in first} == {"train", "validation"}
    assert all(v == pytest.approx(1.0) for (s, step, _), v in first.items() if step == 0)
    assert {step for _, step, _ in prev} == {4, 8}  # no previous snapshot at the start
    # The stored figures are the CKA of the stored vectors.
    for split in ("train", "validation"):
        keys = store.keys(split)
        a, b, c = (load_snapshot(store, split, k) for k in keys)
        np.testing.assert_allclose([first[(split, 8, l)] for l in (0, 1, 2)], layer_cka(c.pooled, a.pooled), atol=1e-9)
        np.testing.assert_allclose([prev[(split, 8, l)] for l in (0, 1, 2)], layer_cka(c.pooled, b.pooled), atol=1e-9)
    logged = [h for h in trainer.state.log_history if "layerwatch/validation/cka_first/layer_2" in h]
    assert [h["step"] for h in logged] == [0, 4, 8]
    assert (root / "metrics_cka_first.png").exists() and (root / "metrics_cka_prev.png").exists()
    assert (root / "cka_layers.png").exists()


def test_info_names_the_layers_that_moved_most_and_least(drift_run, capsys):
    root, _ = drift_run
    info = summarize(str(root))["drift_at_last_snapshot"]
    rows = [r for r in RunStore(root).read_metrics() if r["metric"] == "cka_first" and r["step"] == 8]
    for split in ("train", "validation"):
        mine = {r["layer"]: r["value"] for r in rows if r["split"] == split}
        assert info[split]["moved_most"]["layer"] == min(mine, key=mine.get)
        assert info[split]["moved_least"]["layer"] == max(mine, key=mine.get)
    assert main(["info", str(root)]) == 0
    assert "drift of 'validation' since the first snapshot" in capsys.readouterr().out


def test_render_recomputes_the_drift_from_the_stored_vectors(drift_run, tmp_path):
    import shutil

    copy = tmp_path / "lw"
    shutil.copytree(drift_run[0], copy)
    before = {(r["split"], r["step"], r["layer"], r["metric"]): r["value"] for r in RunStore(copy).read_metrics()}
    rows = [r for r in RunStore(copy).read_metrics() if not r["metric"].startswith("cka")]
    write_metrics(RunStore(copy), rows)
    assert main(["render", str(copy), "--method", "pca"]) == 0
    after = {(r["split"], r["step"], r["layer"], r["metric"]): r["value"] for r in RunStore(copy).read_metrics()}
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k] == pytest.approx(v, abs=1e-9)


def test_no_training_means_no_drift(tmp_path):
    train = toy_dataset(32)
    watch = LayerwatchCallback({"train": train}, tmp_path / "lw", method="pca", progress=False)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=2, learning_rate=0.0).train()
    rows = [r for r in RunStore(tmp_path / "lw").read_metrics() if r["metric"].startswith("cka")]
    assert rows and all(r["value"] == pytest.approx(1.0, abs=1e-6) for r in rows)
