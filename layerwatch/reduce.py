"""Reducers by name: pooled vectors in, (n, 2) layouts out.

A reducer is configured once (method, seed, options) and then called on data, with an
optional ``previous`` layout of the same rows. With ``previous`` it ties the new layout
to the old one (warm start where the method has one, then an orthogonal Procrustes
rotation onto the previous frame), so a film of layouts moves only where the model does.
Every layout comes back centred and scaled to unit RMS radius, so panels can share
fixed axis limits across frames.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .config import METHODS, check_choice

# t-SNE input is first reduced to this many dimensions by PCA: the neighbour search then
# costs far less and the neighbourhoods barely change.
TSNE_PCA_DIMS = 50


def require_umap() -> Any:
    try:
        import umap  # noqa: F401
    except ImportError:
        raise ImportError(
            "method='umap' needs the umap-learn package: pip install 'layerwatch[umap]' "
            "(or choose method='tsne' or 'pca')"
        ) from None
    return umap


def normalize(layout: np.ndarray) -> np.ndarray:
    """Centre ``layout`` and scale it to unit RMS distance from the centre."""
    out = np.asarray(layout, dtype=np.float64)
    out = out - out.mean(axis=0, keepdims=True)
    rms = float(np.sqrt((out**2).sum(axis=1).mean())) if len(out) else 0.0
    if rms > 0 and np.isfinite(rms):
        out = out / rms
    return out.astype(np.float32)


def procrustes(layout: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate (or reflect) a centred ``layout`` to best match a centred ``target``."""
    a = np.asarray(layout, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    u, _, vt = np.linalg.svd(a.T @ b)
    return (a @ (u @ vt)).astype(np.float32)


def _pad2(x: np.ndarray) -> np.ndarray:
    """Give a layout two columns even when the data had fewer dimensions or rows."""
    if x.shape[1] >= 2:
        return x[:, :2]
    return np.hstack([x, np.zeros((x.shape[0], 2 - x.shape[1]), dtype=x.dtype)])


def _pca(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = min(k, x.shape[0], x.shape[1])
    if k < 1:
        return np.zeros((x.shape[0], 1), dtype=np.float32)
    return PCA(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)


class Reducer:
    """Turns (n, d) vectors into a normalised (n, 2) layout.

    Args:
        method: ``"tsne"``, ``"pca"`` or ``"umap"``.
        seed: Seeds every random choice, so the same input gives the same layout.
        align: When a ``previous`` layout is given, warm-start from it and rotate onto it.
        perplexity: t-SNE perplexity; lowered (with a warning) when a split is too small.
        n_iter: t-SNE iterations of a fresh fit.
        warm_iter: t-SNE iterations of a warm start.
        warm_exaggeration: early exaggeration of a warm start (mild, so that classes that
            separate in the model can still move apart in the picture).
    """

    def __init__(
        self,
        method: str = "tsne",
        seed: int = 0,
        align: bool = True,
        perplexity: float = 30.0,
        n_iter: int = 750,
        warm_iter: int = 500,
        warm_exaggeration: float = 4.0,
    ):
        check_choice("method", method, METHODS)
        if method == "umap":
            require_umap()
        self.method = method
        self.seed = int(seed)
        self.align = bool(align)
        self.perplexity = float(perplexity)
        self.n_iter = int(n_iter)
        self.warm_iter = int(warm_iter)
        self.warm_exaggeration = float(warm_exaggeration)
        self._warned: set[int] = set()

    def __repr__(self) -> str:
        return f"Reducer(method={self.method!r}, seed={self.seed}, align={self.align})"

    def perplexity_for(self, n: int) -> float:
        """The perplexity used for ``n`` points: t-SNE needs it well below ``n``."""
        return float(min(self.perplexity, max(1.0, (n - 1) / 3.0)))

    def __call__(self, x: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"expected (rows, dim) vectors, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the vectors hold NaN or infinite values (fp16 overflow?); this layer cannot be laid out")
        warm = previous if (self.align and previous is not None and len(previous) == len(x)) else None
        if len(x) < 3:
            layout = _pad2(_pca(x, 2, self.seed)) if len(x) > 1 else np.zeros((len(x), 2), np.float32)
        elif self.method == "pca":
            layout = _pad2(_pca(x, 2, self.seed))
        elif self.method == "tsne":
            layout = self._tsne(x, warm)
        else:
            layout = self._umap(x, warm)
        layout = normalize(layout)
        if warm is not None:
            layout = procrustes(layout, normalize(warm))
        return layout

    def _tsne(self, x: np.ndarray, warm: np.ndarray | None) -> np.ndarray:
        from sklearn.manifold import TSNE

        n = len(x)
        perplexity = self.perplexity_for(n)
        if perplexity < self.perplexity and n not in self._warned:
            self._warned.add(n)
            warnings.warn(
                f"t-SNE perplexity lowered from {self.perplexity:g} to {perplexity:g} for {n} rows "
                "(it must stay below the number of rows); pass max_samples= larger or perplexity= smaller",
                stacklevel=3,
            )
        data = _pca(x, TSNE_PCA_DIMS, self.seed) if x.shape[1] > TSNE_PCA_DIMS else x
        if warm is not None:
            init = normalize(warm).astype(np.float32) * 1e-4 / max(float(np.std(normalize(warm)[:, 0])), 1e-12)
            params = dict(init=init, max_iter=self.warm_iter, early_exaggeration=self.warm_exaggeration)
        else:
            params = dict(init="pca", max_iter=self.n_iter, early_exaggeration=12.0)
        tsne = TSNE(
            n_components=2,
            perplexity=perplexity,
            random_state=self.seed,
            learning_rate="auto",
            **params,
        )
        return tsne.fit_transform(data.astype(np.float32))

    def _umap(self, x: np.ndarray, warm: np.ndarray | None) -> np.ndarray:
        umap = require_umap()
        n = len(x)
        kwargs: dict[str, Any] = dict(n_components=2, random_state=self.seed, n_neighbors=min(15, n - 1))
        if warm is not None:
            kwargs["init"] = normalize(warm) * 10.0
        if n < 4096:
            # umap's exact neighbour search below 4096 points is a slow Python loop.
            kwargs["force_approximation_algorithm"] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return umap.UMAP(**kwargs).fit_transform(x)


def reduce_layers(
    pooled: np.ndarray,
    reducer: Reducer,
    previous: np.ndarray | None = None,
    skip: set[int] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Lay out every layer of ``pooled`` (layers, rows, dim) -> (layers, rows, 2).

    Layers whose vectors are not finite get NaN layouts and an entry in the returned
    ``problems`` dict (layer position -> message) instead of stopping the others.
    """
    out = np.full((pooled.shape[0], pooled.shape[1], 2), np.nan, dtype=np.float32)
    problems: dict[int, str] = {}
    for j in range(pooled.shape[0]):
        if skip and j in skip:
            continue
        prev = previous[j] if previous is not None and np.isfinite(previous[j]).all() else None
        try:
            out[j] = reducer(pooled[j], prev)
        except ValueError as exc:
            problems[j] = str(exc)
    return out, problems
