"""Per-layer numbers behind the pictures: arrays in, floats out.

All metrics are computed on the pooled vectors, not on the 2-D layouts.

- ``knn_accuracy``: k-nearest-neighbour accuracy (cosine). On the reference (train)
  split by stratified cross-validation within it; on any other split with neighbours
  taken from the reference split's vectors of the same snapshot and layer.
- ``probe_accuracy``: a logistic regression fitted on the reference split's vectors
  (standardised), cross-validated there, scored on the other splits.
- ``silhouette``: the cosine silhouette of the labels.
- ``model_accuracy``: accuracy of the classification head on the monitored rows.
- ``cka_first`` / ``cka_prev``: linear centered kernel alignment (Kornblith et al. 2019)
  between a layer's vectors now and at the first / previous snapshot, for the same rows:
  1 = the representation has not changed (up to rotation and isotropic scaling), towards
  0 = nothing of its structure is left. Comparable across layers of any width.
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


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same rows: (n, p) and (n, q).

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``,
    computed in float64. Invariant to orthogonal transforms and isotropic scaling of
    either side. For degenerate inputs, where the formula is 0/0: 1.0 when both sides
    are constant (the same single point), 0.0 when only one is (no shared structure).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"linear_cka needs two (rows, dim) arrays of the same rows, got {x.shape} and {y.shape}")
    return _cka(_side(x), _side(y))


class _Side:
    """One representation ready for CKA: centred and scaled in float64 (``None`` when its
    rows are one vector) and its ``||Xc^T Xc||_F``, which every pair it is in reuses."""

    __slots__ = ("x", "norm")

    def __init__(self, x: np.ndarray | None, norm: float):
        self.x, self.norm = x, norm


def _side(x: np.ndarray, norm: float | None = None) -> _Side:
    x = np.asarray(x, dtype=np.float64)
    # A side whose rows are (numerically) one vector is constant: see linear_cka.
    if _constant(x):
        return _Side(None, 0.0)
    x = x - x.mean(axis=0, keepdims=True)
    # Scale first (CKA is scale-free): sums of squares stay in range for any magnitude.
    x = x / np.abs(x).max()
    if norm is None or not np.isfinite(norm):
        # ||Xc^T Xc||_F = ||Xc Xc^T||_F: the smaller of the two products.
        norm = float(np.linalg.norm(x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T))
    return _Side(x, float(norm))


def _cka(a: _Side, b: _Side) -> float:
    if a.x is None or b.x is None:
        return 1.0 if a.x is None and b.x is None else 0.0
    norm = a.norm * b.norm
    if not norm > 0:
        return 0.0
    cross = np.linalg.norm(b.x.T @ a.x) ** 2
    return float(np.clip(cross / norm, 0.0, 1.0))


def _constant(x: np.ndarray) -> bool:
    if len(x) < 2:
        return True
    return float(np.ptp(x, axis=0).max()) <= 1e-7 * max(1.0, float(np.abs(x).max()))


def cka_norms(pooled: np.ndarray) -> np.ndarray:
    """(layers,) ``||Xc^T Xc||_F`` of each layer as ``linear_cka`` scales it (NaN where a
    layer is not finite, 0 where it is constant): pass them to ``layer_cka`` and
    ``cka_matrix`` to compute them once for every pair a snapshot is in."""
    out = np.full(pooled.shape[0], np.nan)
    for j in range(pooled.shape[0]):
        if np.isfinite(pooled[j]).all():
            out[j] = _side(pooled[j]).norm
    return out


def layer_cka(
    pooled: np.ndarray, other: np.ndarray, norms: np.ndarray | None = None, other_norms: np.ndarray | None = None,
) -> np.ndarray:
    """``linear_cka`` of each layer of ``pooled`` (layers, rows, dim) with the same layer of
    ``other``; ``norms`` / ``other_norms`` from :func:`cka_norms` save recomputing them."""
    out = np.full(pooled.shape[0], np.nan)
    for j in range(pooled.shape[0]):
        if np.isfinite(pooled[j]).all() and np.isfinite(other[j]).all():
            out[j] = _cka(
                _side(pooled[j], None if norms is None else norms[j]),
                _side(other[j], None if other_norms is None else other_norms[j]),
            )
    return out


def cka_matrix(pooled: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """(layers, layers) linear CKA between every pair of layers of one snapshot."""
    n = pooled.shape[0]
    out = np.full((n, n), np.nan)
    finite = [j for j in range(n) if np.isfinite(pooled[j]).all()]
    for a, i in enumerate(finite):
        side = _side(pooled[i], None if norms is None else norms[i])
        out[i, i] = 1.0  # a representation with itself, constant or not (see linear_cka)
        for j in finite[a + 1:]:
            out[i, j] = out[j, i] = _cka(side, _side(pooled[j], None if norms is None else norms[j]))
    return out


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
