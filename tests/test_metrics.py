"""layerwatch.metrics against scikit-learn, on data whose answer is known.

Tolerances for "chance": with shuffled labels and n rows, each prediction is right with
probability 1/2 (balanced classes), so an accuracy has a standard deviation of about
sqrt(0.25 / n); for n = 600 that is 0.020, and the tests allow 0.08 (4 sigma; the folds'
predictions are not fully independent, so a little more than a binomial's 3 sigma). The
seeds are fixed, so the tests are deterministic; the tolerance only says how far from 0.5 a
correct implementation can land on other seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from layerwatch.metrics import K_NEIGHBOURS, knn_accuracy, layer_metrics, model_accuracy, probe_accuracy, silhouette

CHANCE_TOL = 0.08


def separable(n: int = 200, dim: int = 16, seed: int = 0):
    """Two tight classes along different directions: every metric should be perfect."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.eye(dim)[y] + 0.05 * rng.normal(size=(n, dim))
    return x.astype(np.float32), y.astype(np.int64)


def shuffled(n: int = 600, dim: int = 32, seed: int = 0):
    """Vectors with structure, labels that have nothing to do with it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) + 3.0 * (np.arange(n) % 3)[:, None] * np.eye(dim)[0]
    y = rng.permutation(np.arange(n) % 2)
    return x.astype(np.float32), y.astype(np.int64)


def sk_knn_cv(x, y, seed=0):
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=10, metric="cosine"), x, y, cv=cv)
    return float((pred == y).mean())


def sk_probe_cv(x, y, seed=0):
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed))
    pred = cross_val_predict(probe, x, y, cv=cv)
    return float((pred == y).mean())


# -- perfectly separable: every metric says so --------------------------------------------
def test_separable_is_perfect_on_train_by_cross_validation():
    x, y = separable()
    assert knn_accuracy(x, y) == 1.0
    assert probe_accuracy(x, y) == 1.0
    assert silhouette(x, y) > 0.9
    assert silhouette(x, y) == pytest.approx(silhouette_score(x, y, metric="cosine"), abs=1e-6)


def test_separable_is_perfect_on_another_split_against_train():
    x, y = separable(seed=0)
    vx, vy = separable(n=80, seed=1)
    assert knn_accuracy(x, y, vx, vy) == 1.0
    assert probe_accuracy(x, y, vx, vy) == 1.0


def cones(n: int, small_class: int, seed: int):
    """Class 0 along 0 degrees, class 1 along 30 degrees; ``small_class`` has norms near 0.3,
    the other near 10. Cosine sees the directions; Euclidean distance sees the norms."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    angle = np.where(y == 1, np.pi / 6, 0.0) + 0.01 * rng.normal(size=n)
    norm = np.where(y == small_class, rng.uniform(0.2, 0.4, n), rng.uniform(8.0, 12.0, n))
    return (np.c_[np.cos(angle), np.sin(angle)] * norm[:, None]).astype(np.float32), y


def test_knn_uses_cosine_not_euclidean():
    x, y = cones(200, small_class=0, seed=0)
    vx, vy = cones(100, small_class=1, seed=1)
    euclid = KNeighborsClassifier(n_neighbors=10).fit(x, y).score(vx, vy)
    assert euclid == 0.0  # the data really does tell the two metrics apart
    assert knn_accuracy(x, y, vx, vy) == 1.0


def test_knn_uses_ten_neighbours():
    # The query's single nearest neighbour is class 1, the next ten are class 0: a 1-NN
    # says 1, a 10-NN says 0.
    angles = np.r_[0.0, np.linspace(0.05, 0.3, 10), np.linspace(2.0, 2.5, 10)]
    ref = np.c_[np.cos(angles), np.sin(angles)]
    ref_y = np.r_[1, [0] * 10, [1] * 10]
    query = np.array([[1.0, 0.0]])
    assert K_NEIGHBOURS == 10
    assert knn_accuracy(ref, ref_y, query, np.array([0])) == 1.0
    assert knn_accuracy(ref, ref_y, query, np.array([0]), k=1) == 0.0


# -- shuffled labels: chance ---------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_shuffled_labels_give_chance_on_train(seed):
    x, y = shuffled(seed=seed)
    knn, probe = knn_accuracy(x, y, seed=seed), probe_accuracy(x, y, seed=seed)
    assert abs(knn - 0.5) < CHANCE_TOL
    assert abs(probe - 0.5) < CHANCE_TOL
    assert abs(silhouette(x, y)) < 0.05


def test_shuffled_labels_give_chance_on_another_split():
    x, y = shuffled(seed=0)
    vx, vy = shuffled(seed=1)
    assert abs(knn_accuracy(x, y, vx, vy) - 0.5) < CHANCE_TOL
    assert abs(probe_accuracy(x, y, vx, vy) - 0.5) < CHANCE_TOL


def test_train_split_is_cross_validated_not_scored_on_its_own_fit():
    # With more dimensions than a probe needs to memorise the rows, scoring on the rows it
    # was fitted on (or counting each row as its own neighbour) is far above chance.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 150)).astype(np.float32)
    y = rng.permutation(np.arange(200) % 2)
    resub_probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y).score(x, y)
    resub_knn = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(x, y).score(x, y)
    assert resub_probe > 0.95 and resub_knn == 1.0
    assert abs(probe_accuracy(x, y) - 0.5) < 0.12  # n = 200: sigma 0.035
    assert abs(knn_accuracy(x, y, k=1) - 0.5) < 0.12


# -- the same numbers as a direct scikit-learn computation ---------------------------------
@pytest.mark.parametrize("seed", [0, 3])
def test_cross_validated_figures_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = np.arange(300) % 3
    x = (rng.normal(size=(300, 12)) + 1.2 * np.eye(12)[y]).astype(np.float32)
    knn = knn_accuracy(x, y, seed=seed)
    probe = probe_accuracy(x, y, seed=seed)
    assert 0.5 < knn < 1.0 and 0.5 < probe < 1.0  # neither trivial nor perfect
    assert knn == pytest.approx(sk_knn_cv(x, y, seed), abs=1e-12)
    assert probe == pytest.approx(sk_probe_cv(x, y, seed), abs=1e-12)
    assert silhouette(x, y) == pytest.approx(silhouette_score(x, y, metric="cosine"), abs=1e-6)


def test_other_split_figures_equal_sklearn_fitted_on_train():
    rng = np.random.default_rng(5)
    y, vy = np.arange(300) % 3, rng.integers(0, 3, size=120)
    x = (rng.normal(size=(300, 12)) + 1.2 * np.eye(12)[y]).astype(np.float32)
    vx = (rng.normal(size=(120, 12)) + 1.2 * np.eye(12)[vy]).astype(np.float32)
    want_knn = KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(x, y).score(vx, vy)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=0)).fit(x, y)
    assert knn_accuracy(x, y, vx, vy) == pytest.approx(want_knn, abs=1e-12)
    assert probe_accuracy(x, y, vx, vy) == pytest.approx(probe.score(vx, vy), abs=1e-12)


def test_layer_metrics_per_layer_and_reference_split():
    x_sep, y = separable(n=200, seed=0)
    x_rand = np.random.default_rng(1).normal(size=x_sep.shape).astype(np.float32)
    pooled = np.stack([x_rand, x_sep])  # layer 0 knows nothing, layer 1 everything
    train = layer_metrics(pooled, y, seed=0)
    assert set(train) == {"knn_accuracy", "probe_accuracy", "silhouette"}
    assert all(v.shape == (2,) for v in train.values())
    assert train["knn_accuracy"][0] == pytest.approx(sk_knn_cv(x_rand, y), abs=1e-12)
    assert abs(train["knn_accuracy"][0] - 0.5) < 0.12
    assert train["knn_accuracy"][1] == train["probe_accuracy"][1] == 1.0
    assert train["silhouette"][1] == pytest.approx(silhouette_score(x_sep, y, metric="cosine"), abs=1e-6)

    v_sep, vy = separable(n=60, seed=4)
    v_rand = np.random.default_rng(2).normal(size=v_sep.shape).astype(np.float32)
    val = layer_metrics(np.stack([v_rand, v_sep]), vy, pooled, y, seed=0)
    for j, (ref, q) in enumerate([(x_rand, v_rand), (x_sep, v_sep)]):
        assert val["knn_accuracy"][j] == pytest.approx(
            KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(ref, y).score(q, vy), abs=1e-12
        )
        assert val["silhouette"][j] == pytest.approx(silhouette_score(q, vy, metric="cosine"), abs=1e-6)
    assert val["knn_accuracy"][1] == val["probe_accuracy"][1] == 1.0


# -- undefined: NaN, never a made-up number -------------------------------------------------
def test_single_class_gives_nan():
    x, _ = separable(n=50)
    one = np.zeros(50, dtype=np.int64)
    assert np.isnan(knn_accuracy(x, one))
    assert np.isnan(probe_accuracy(x, one))
    assert np.isnan(silhouette(x, one))
    assert np.isnan(knn_accuracy(x, one, x[:5], one[:5]))
    out = layer_metrics(x[None], one)
    assert all(np.isnan(v).all() for v in out.values())


def test_regression_labels_give_nan():
    x, _ = separable(n=50)
    target = np.linspace(0.0, 1.0, 50).astype(np.float32)
    assert np.isnan(knn_accuracy(x, target))
    assert np.isnan(probe_accuracy(x, target))
    assert np.isnan(silhouette(x, target))
    assert np.isnan(model_accuracy(np.zeros(50, dtype=np.int64), target))
    out = layer_metrics(np.stack([x, x]), target)
    assert all(np.isnan(v).all() for v in out.values())


def test_class_with_one_row_cannot_be_cross_validated():
    x, y = separable(n=41)
    y = y.copy()
    y[-1] = 2  # a class of one row
    assert np.isnan(knn_accuracy(x, y))
    assert np.isnan(probe_accuracy(x, y))
    assert np.isfinite(silhouette(x, y))


def test_non_finite_layer_is_nan_and_others_are_measured():
    x, y = separable(n=100, seed=0)
    bad = x.copy()
    bad[3, 0] = np.nan
    out = layer_metrics(np.stack([bad, x]), y)
    assert all(np.isnan(v[0]) for v in out.values())
    assert out["knn_accuracy"][1] == 1.0
    # A non-finite reference layer leaves that layer's kNN and probe undefined on other splits.
    val = layer_metrics(np.stack([x, x]), y, np.stack([bad, x]), y)
    assert np.isnan(val["knn_accuracy"][0]) and np.isnan(val["probe_accuracy"][0])
    assert np.isfinite(val["silhouette"][0])
    assert val["knn_accuracy"][1] == 1.0


def test_model_accuracy():
    labels = np.array([0, 1, 1, 0, 2])
    assert model_accuracy(np.array([0, 1, 0, 0, 1]), labels) == pytest.approx(0.6)
    assert np.isnan(model_accuracy(None, labels))
    assert np.isnan(model_accuracy(np.array([], dtype=np.int64), np.array([], dtype=np.int64)))
