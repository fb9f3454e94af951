"""Per-layer numbers behind the pictures: arrays in, floats out.

All metrics are computed on the pooled vectors, not on the 2-D layouts.

- ``knn_accuracy``: k-nearest-neighbour accuracy (cosine). On the reference (train)
  split by stratified cross-validation within it; on any other split with neighbours
  taken from the reference split's vectors of the same snapshot and layer.
- ``probe_accuracy``: a logistic regression fitted on the reference split's vectors
  (standardised), cross-validated there, scored on the other splits.
- ``silhouette``: the cosine silhouette of the labels.
- ``model_accuracy``: accuracy of the classification head on the monitored rows.
"""

from __future__ import annotations

import warnings

import numpy as np

METRICS = ("knn_accuracy", "probe_accuracy", "silhouette")
K_NEIGHBOURS = 10
FOLDS = 5


def _usable(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "iu" and len(np.unique(labels)) >= 2


def _folds(labels: np.ndarray, seed: int):
    from sklearn.model_selection import StratifiedKFold

    _, counts = np.unique(labels, return_counts=True)
    n_splits = int(min(FOLDS, counts.min()))
    if n_splits < 2:
        return None
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _knn(k: int, n_fit: int):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=max(1, min(k, n_fit)), metric="cosine", algorithm="brute")


def _probe(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed))


def _cross_val(make, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    folds = _folds(y, seed)
    if folds is None:
        return float("nan")
    correct = 0
    for fit_idx, test_idx in folds.split(x, y):
        model = make(len(fit_idx)).fit(x[fit_idx], y[fit_idx])
        correct += int((model.predict(x[test_idx]) == y[test_idx]).sum())
    return correct / len(y)


def knn_accuracy(
    ref_x: np.ndarray, ref_y: np.ndarray, x: np.ndarray | None = None, y: np.ndarray | None = None,
    k: int = K_NEIGHBOURS, seed: int = 0,
) -> float:
    """kNN accuracy of ``(x, y)`` against ``(ref_x, ref_y)``, or cross-validated on the reference."""
    if not _usable(ref_y):
        return float("nan")
    if x is None:
        return _cross_val(lambda n: _knn(k, n), ref_x, ref_y, seed)
    model = _knn(k, len(ref_x)).fit(ref_x, ref_y)
    return float((model.predict(x) == y).mean())


def probe_accuracy(
    ref_x: np.ndarray, ref_y: np.ndarray, x: np.ndarray | None = None, y: np.ndarray | None = None,
    seed: int = 0,
) -> float:
    """Linear-probe accuracy: fitted on the reference split, scored on ``(x, y)``."""
    if not _usable(ref_y):
        return float("nan")
    with warnings.catch_warnings():
        # A probe that stops at max_iter still answers the question; don't flood the log.
        warnings.simplefilter("ignore")
        if x is None:
            return _cross_val(lambda n: _probe(seed), ref_x, ref_y, seed)
        model = _probe(seed).fit(ref_x, ref_y)
        return float((model.predict(x) == y).mean())


def silhouette(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine silhouette of the labels (1 = tight, separate classes; about 0 = mixed)."""
    from sklearn.metrics import silhouette_score

    if not _usable(y) or len(np.unique(y)) >= len(y):
        return float("nan")
    return float(silhouette_score(x, y, metric="cosine"))


def model_accuracy(predictions: np.ndarray | None, labels: np.ndarray) -> float:
    """Accuracy of the model's own predictions on the monitored rows."""
    if predictions is None or labels.dtype.kind not in "iu" or len(labels) == 0:
        return float("nan")
    return float((np.asarray(predictions) == labels).mean())


def layer_metrics(
    pooled: np.ndarray, labels: np.ndarray,
    ref_pooled: np.ndarray | None = None, ref_labels: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Every per-layer metric for one snapshot.

    Args:
        pooled: (layers, rows, dim) vectors of the split being measured.
        labels: its labels.
        ref_pooled, ref_labels: the reference (train) split of the same snapshot; ``None``
            when ``pooled`` is the reference itself (then cross-validation is used).

    Returns:
        ``{metric: (layers,) float array}``; NaN where a metric is undefined (one class,
        a regression target, a layer that is not finite or whose rows are all one vector).
    """
    from .reduce import is_degenerate

    n_layers = pooled.shape[0]
    out = {m: np.full(n_layers, np.nan) for m in METRICS}
    for j in range(n_layers):
        x = pooled[j]
        # A layer whose rows are all one vector separates nothing; its neighbours would be
        # decided by ties, so every metric is left undefined rather than made up.
        if not np.isfinite(x).all() or is_degenerate(x):
            continue
        if ref_pooled is None:
            out["knn_accuracy"][j] = knn_accuracy(x, labels, seed=seed)
            out["probe_accuracy"][j] = probe_accuracy(x, labels, seed=seed)
        elif np.isfinite(ref_pooled[j]).all():
            out["knn_accuracy"][j] = knn_accuracy(ref_pooled[j], ref_labels, x, labels, seed=seed)
            out["probe_accuracy"][j] = probe_accuracy(ref_pooled[j], ref_labels, x, labels, seed=seed)
        out["silhouette"][j] = silhouette(x, labels)
    return out
