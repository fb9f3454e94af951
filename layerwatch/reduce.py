"""Reducers by name: pooled vectors in, (n, 2) layouts out.

A reducer is configured once (method, seed, options) and then called on data, with an
optional ``previous`` layout of the same rows. With ``previous`` it ties the new layout
to the old one, so a film of layouts moves only where the model does:

- PCA: the fit itself has no freedom left but a rotation or reflection of the plane, so
  the layout is rotated (or reflected) onto the previous frame (orthogonal Procrustes).
- t-SNE: a warm start from the previous layout, shrunk to the tiny scale of sklearn's own
  PCA initialisation (std 1e-4), then Procrustes. Shrinking is what keeps it honest: a
  warm start that simply continues from the previous layout at its full size holds still
  but freezes the first frame's arrangement (classes that separate in the vectors stay
  mixed in the picture), because at full size the repulsion between points stops whole
  groups from moving through each other. From the tiny scale the layout re-forms around
  the current vectors in the previous frame's arrangement. Starting in the right
  arrangement, it needs far fewer iterations than a fresh fit: a short first phase (50
  iterations at momentum 0.5), then momentum 0.8 until the KL gradient is small
  (``warm_min_grad_norm``, 1e-3, checked every 50 iterations), 250 at most. A looser
  3e-3 stopped sooner but let the films lag the vectors: on the fine-tuned MiniLM run of
  ``benchmarks/alignment.py`` the top layer's 2-D class separation fell 0.103 behind
  independent fits (the bar is 0.1), against 0.091 at 1e-3. Fresh fits keep their full schedule: stopped at a
  gradient norm of 3e-3 they end after about 500 iterations with the same
  neighbourhoods, but their pictures change enough to move the reference that
  ``benchmarks/alignment.py`` holds the films to (one cell's 2-D silhouette by 0.08).
  ``benchmarks/alignment.py`` measures the choice against independent fits (how much
  less the films move, neighbour recall, 2-D class separation), ``benchmarks/tsne_cost.py``
  what the schedules cost; ``docs/costs.md`` gives the figures.
- UMAP: a warm start from the previous layout, turned so that its bounding box is a
  square (umap-learn rescales each axis of an initial layout to [0, 10] on its own, which
  would stretch any other orientation), at umap's own starting scale, then a short, gentle
  schedule (``UMAP_WARM_EPOCHS`` epochs at learning rate ``UMAP_WARM_LEARNING_RATE``
  instead of 500 at 1.0), then Procrustes. The full schedule from the previous layout
  re-arranged whole clusters of unchanged vectors by chance (a third of the picture's
  radius on some seeds and CPUs); the short one keeps them where they were and still
  follows vectors that change.

Which library lays out t-SNE (``backend``): scikit-learn's Barnes-Hut below
``OPENTSNE_MIN_ROWS`` rows, openTSNE's FFT-accelerated gradients at and above it, where they
pay (``benchmarks/scale.py``; ``docs/costs.md``), when openTSNE is installed
(``pip install 'layerwatch[scale]'``; without it, scikit-learn with a one-line note). Both
run the same schedule from the same starts: the same PCA start of std 1e-4 for fresh fits,
the same shrunk previous layout for warm ones, the same phases, momenta and learning rate,
and the same stop on the KL gradient's norm. openTSNE's affinities come from exact
nearest neighbours (``nearest_neighbours``, blocked matrix products) up to
``EXACT_NEIGHBOURS_MAX_ROWS`` rows, from Annoy above. When the model is on a CUDA device
(``device``), TorchDR lays t-SNE out there (``pip install 'layerwatch[gpu]'``) from the
same starts and with the same phases; without TorchDR or usable CUDA the CPU path does,
with a one-line note.

Every layout comes back centred and scaled to unit RMS radius, so panels can share
fixed axis limits across frames.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from concurrent.futures import Executor
from typing import Any, Callable

import numpy as np

from .config import METHODS, UMAP_HINT, check_choice, check_int, check_perplexity, require

# t-SNE backends: "auto" picks by rows and by what is installed.
TSNE_BACKENDS = ("auto", "sklearn", "opentsne", "torchdr")
OPENTSNE_HINT = (
    "backend='opentsne' needs the openTSNE package: pip install 'layerwatch[scale]' "
    "(or leave backend='auto', which uses scikit-learn when openTSNE is missing)"
)
TORCHDR_HINT = (
    "backend='torchdr' needs the torchdr package: pip install 'layerwatch[gpu]' "
    "(with torch==2.13.0 or the CUDA build of torch you train with)"
)

# From this many rows up, "auto" lays out t-SNE with openTSNE's FFT-accelerated gradients
# (where scikit-learn's Barnes-Hut costs grow faster than the rows): measured to pay at
# 5,000 rows and to cost more at 1,000 (benchmarks/scale.py --layouts; docs/costs.md).
OPENTSNE_MIN_ROWS = 5000
# A UMAP warm start: epochs and learning rate (umap's own: 500 epochs below 10,000 rows, 1.0).
UMAP_WARM_EPOCHS = 100
UMAP_WARM_LEARNING_RATE = 0.1
# The names run.json and `layerwatch info` give each backend.
BACKEND_NAMES = {
    "sklearn": "scikit-learn",
    "opentsne": "openTSNE (FFT)",
    "umap": "umap-learn",
    "torchdr": "TorchDR (GPU)",
}

# openTSNE's neighbours are found exactly (blocked matrix products) up to this many rows,
# by Annoy above: exact is faster here at 10,000 rows (benchmarks/scale.py --layouts).
EXACT_NEIGHBOURS_MAX_ROWS = 20000

# t-SNE input is first reduced to this many dimensions by PCA: the neighbour search then
# costs far less and the neighbourhoods barely change.
TSNE_PCA_DIMS = 50


# Rows this close to each other (relative to the vectors' size) are one point: t-SNE's
# PCA initialisation divides by their spread, which is zero, and scikit-learn's
# Barnes-Hut code then crashes the whole process instead of raising.
_IDENTICAL = 1e-7
# UMAP's spectral initialisation needs a few more rows than its two output dimensions.
_MIN_UMAP_ROWS = 5


class DegenerateInput(ValueError):
    """Every row of a layer holds the same vector: there is no arrangement to lay out."""


def is_degenerate(x: np.ndarray) -> bool:
    """Whether every row of ``x`` (rows, dim) is (numerically) the same vector."""
    x = np.asarray(x)
    if len(x) < 2:
        return False
    finite = x[np.isfinite(x).all(axis=1)]
    if len(finite) < 2:
        return False
    spread = float(np.ptp(finite, axis=0).max())
    scale = max(1.0, float(np.abs(finite).max()))
    return spread <= _IDENTICAL * scale


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


# sklearn's TSNE refuses fewer iterations in all (early stopping may end a fit sooner).
_MIN_TSNE_ITER = 250
# A warm start begins from the previous layout shrunk to this standard deviation, the
# scale sklearn gives its own PCA initialisation (see the module docstring for why).
WARM_INIT_STD = 1e-4


@functools.lru_cache(maxsize=None)
def _tsne_class(exaggeration_iter: int) -> type:
    """sklearn's TSNE with a first (early-exaggeration) phase of ``exaggeration_iter``.

    sklearn fixes that phase at 250 iterations in a class attribute; everything else,
    the Barnes-Hut gradient and the convergence checks included, is sklearn's own.
    """
    from sklearn.manifold import TSNE

    if exaggeration_iter == 250:  # scikit-learn's own schedule
        return TSNE
    # scikit-learn offers no parameter for the length of this phase; a subclass that sets
    # its class attribute is the only way to change it.
    return type("LayerwatchTSNE", (TSNE,), {"_EXPLORATION_MAX_ITER": int(exaggeration_iter)})


class Reducer:
    """Turns (n, d) vectors into a normalised (n, 2) layout.

    Args:
        method: ``"tsne"``, ``"pca"`` or ``"umap"``.
        seed: Seeds every random choice, so the same input gives the same layout.
        align: When a ``previous`` layout is given, warm-start from it and rotate onto it;
            ``False`` gives independent seeded fits that ignore ``previous``.
        perplexity: t-SNE perplexity; lowered (with a warning) when a split is too small.
        n_iter: t-SNE iterations of a fresh fit, the first ``exaggeration_iter`` of them
            with early exaggeration (at least 250 in all; sklearn's own default is 1,000).
        warm_iter: t-SNE iterations of a warm start at most (at least 250, sklearn's
            minimum; ``warm_min_grad_norm`` usually ends it sooner). A warm start begins in
            the right arrangement, so it needs far fewer than a fresh fit.
        exaggeration_iter: iterations of a fresh fit's first phase (early exaggeration 12,
            momentum 0.5); 250 as in sklearn. Shorter schedules are faster and keep the
            neighbourhoods but hold the films less still (``benchmarks/alignment.py``).
        warm_exaggeration: early exaggeration of a warm start; 1.0 (none) by default. The
            shrunk start already lets groups move apart; exaggeration made the films move
            more without separating classes any better (``benchmarks/alignment.py --variants``).
        warm_exaggeration_iter: iterations of a warm start's first phase (momentum 0.5,
            ``warm_exaggeration``); 50. After it the warm start runs at momentum 0.8,
            which converges in far fewer iterations than sklearn's 250 at 0.5.
        warm_min_grad_norm: a warm start stops once the norm of the KL gradient, checked
            every 50 iterations, is at most this (sklearn's ``min_grad_norm``, whose
            default of 1e-7 never ends a fit early); 0 runs all ``warm_iter``. With
            sklearn's learning rate ("auto", which grows with the rows) the norm at a given
            iteration depends little on the number of rows.
        backend: which library lays out t-SNE: ``"auto"`` (scikit-learn below
            ``OPENTSNE_MIN_ROWS`` rows, openTSNE at and above it when installed),
            ``"sklearn"`` or ``"opentsne"`` (needs ``pip install 'layerwatch[scale]'``).
            Both run the same schedule; see :meth:`backend_for`. ``"torchdr"``: TorchDR's
            t-SNE on ``device`` (``pip install 'layerwatch[gpu]'``), from the same starts
            and with the same phases.
        device: where the model trains (``"cpu"``, ``"cuda"``, ``"cuda:1"``); on a CUDA
            device ``"auto"`` lays t-SNE out there with TorchDR when it is installed and
            CUDA is usable, and otherwise on the CPU with a one-line note.
    """

    def __init__(
        self,
        method: str = "tsne",
        seed: int = 0,
        align: bool = True,
        perplexity: float = 30.0,
        n_iter: int = 750,
        warm_iter: int = 250,
        warm_exaggeration: float = 1.0,
        exaggeration_iter: int = 250,
        warm_exaggeration_iter: int = 50,
        warm_min_grad_norm: float = 1e-3,
        backend: str = "auto",
        device: str = "cpu",
    ):
        check_choice("method", method, METHODS)
        check_choice("backend", backend, TSNE_BACKENDS)
        if backend == "opentsne":
            require("openTSNE", OPENTSNE_HINT, "TSNEEmbedding")
        if backend == "torchdr":
            require("torchdr", TORCHDR_HINT)
        if not isinstance(device, str) or not device:
            raise ValueError(f"device={device!r} must be a torch device name such as 'cpu' or 'cuda'")
        check_perplexity(perplexity)
        for name, value in (("n_iter", n_iter), ("warm_iter", warm_iter)):
            check_int(name, value, _MIN_TSNE_ITER, allowed=f"an integer of at least {_MIN_TSNE_ITER} (sklearn's minimum)")
        check_int("exaggeration_iter", exaggeration_iter, 1, int(n_iter), f"an integer from 1 to n_iter ({n_iter})")
        check_int("warm_exaggeration_iter", warm_exaggeration_iter, 1, int(warm_iter), f"an integer from 1 to warm_iter ({warm_iter})")
        if not (isinstance(warm_exaggeration, (int, float)) and warm_exaggeration >= 1):
            raise ValueError(f"warm_exaggeration={warm_exaggeration!r} must be a number of at least 1 (1 = none)")
        if isinstance(warm_min_grad_norm, bool) or not isinstance(warm_min_grad_norm, (int, float)) or not (
            np.isfinite(warm_min_grad_norm) and warm_min_grad_norm >= 0
        ):
            raise ValueError(f"warm_min_grad_norm={warm_min_grad_norm!r} must be a number of at least 0 (0 = no early stop)")
        if method == "umap":
            require("umap", UMAP_HINT, "UMAP")
        self.method = method
        self.seed = int(seed)
        self.align = bool(align)
        self.perplexity = float(perplexity)
        self.n_iter = int(n_iter)
        self.warm_iter = int(warm_iter)
        self.warm_exaggeration = float(warm_exaggeration)
        self.exaggeration_iter = int(exaggeration_iter)
        self.warm_exaggeration_iter = int(warm_exaggeration_iter)
        self.warm_min_grad_norm = float(warm_min_grad_norm)
        self.backend = backend
        self.device = device
        self._noted_device = False
        self._warned: set[int] = set()
        self._noted_fallback = False

    def __repr__(self) -> str:
        return f"Reducer(method={self.method!r}, seed={self.seed}, align={self.align})"

    def backend_for(self, n: int) -> str:
        """The library that lays out ``n`` rows: ``"sklearn"``, ``"opentsne"`` or ``"umap"``."""
        if self.method == "umap":
            return "umap" if n >= _MIN_UMAP_ROWS else "sklearn"
        if self.method != "tsne" or n < 3 or self.backend == "sklearn":
            return "sklearn"
        if self.backend in ("opentsne", "torchdr"):
            return self.backend
        if self.device.startswith("cuda") and gpu_layouts_available():
            return "torchdr"
        return "opentsne" if n >= OPENTSNE_MIN_ROWS and has_opentsne() else "sklearn"

    def describe(self, rows: dict[str, int]) -> dict[str, Any]:
        """What run.json records of the layouts: method and the backend for each split's rows."""
        return {
            "method": self.method,
            "aligned": self.align,
            "backend": {split: BACKEND_NAMES[self.backend_for(int(n))] for split, n in rows.items()},
        }

    def perplexity_for(self, n: int) -> float:
        """The perplexity used for ``n`` points: t-SNE needs it well below ``n``."""
        return float(min(self.perplexity, max(1.0, (n - 1) / 3.0)))

    def __call__(self, x: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        """Lay out ``x`` (rows, dim); ``previous`` is the same rows' layout of the frame before.

        Returns a float32 (rows, 2) layout, centred at unit RMS radius, tied to
        ``previous`` when ``align`` is on.

        Raises:
            ValueError: the vectors are not finite.
            DegenerateInput: every row holds the same vector (the layout would be one point).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"expected (rows, dim) vectors, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the vectors hold NaN or infinite values (fp16 overflow?); this layer cannot be laid out")
        if is_degenerate(x):
            raise DegenerateInput(f"all {len(x)} vectors are identical; there is no arrangement to lay out")
        warm = None
        if self.align and previous is not None:
            previous = np.asarray(previous, dtype=np.float32)
            # A previous frame of other rows, an empty (NaN) panel or one with every point in
            # one place holds no arrangement to keep: fit afresh.
            usable = previous.shape == (len(x), 2) and np.isfinite(previous).all()
            if usable and len(x) and float(np.ptp(previous, axis=0).max()) > 0:
                warm = previous
        if len(x) < 3 or (self.method == "umap" and len(x) < _MIN_UMAP_ROWS):
            # Too few rows for a neighbour graph: the plane of the two main directions.
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
        if self.backend == "auto" and n >= OPENTSNE_MIN_ROWS and not has_opentsne() and not self._noted_fallback:
            self._noted_fallback = True
            warnings.warn(
                f"layerwatch: openTSNE is not installed, so {n} rows are laid out by scikit-learn's "
                f"slower t-SNE; pip install 'layerwatch[scale]' for FFT-accelerated layouts",
                stacklevel=3,
            )
        chosen = self.backend_for(n)
        if self.backend == "auto" and self.device.startswith("cuda") and chosen != "torchdr" and not self._noted_device:
            self._noted_device = True
            warnings.warn(
                f"layerwatch: the model is on {self.device} but {gpu_unavailable_reason()}, so t-SNE layouts run on the CPU "
                f"({BACKEND_NAMES[chosen]})",
                stacklevel=3,
            )
        if chosen == "torchdr":
            return self._torchdr(data.astype(np.float32), warm, perplexity)
        if chosen == "opentsne":
            return self._opentsne(data.astype(np.float32), warm, perplexity)
        if warm is not None:
            # Shrunk, not continued at full size: see the module docstring.
            params = dict(
                init=self._start(warm), max_iter=self.warm_iter, early_exaggeration=self.warm_exaggeration,
                # 0: sklearn's own default, which never stops a fit early.
                min_grad_norm=self.warm_min_grad_norm or 1e-7,
            )
            first_phase = self.warm_exaggeration_iter
        else:
            params = dict(init="pca", max_iter=self.n_iter, early_exaggeration=12.0)
            first_phase = self.exaggeration_iter
        tsne = _tsne_class(first_phase)(
            n_components=2,
            perplexity=perplexity,
            random_state=self.seed,
            learning_rate="auto",
            **params,
        )
        return tsne.fit_transform(data.astype(np.float32))

    def _start(self, warm: np.ndarray) -> np.ndarray:
        """The previous layout shrunk to t-SNE's starting scale (see the module docstring)."""
        start = normalize(warm)
        return (start * (WARM_INIT_STD / float(start.std(axis=0).max()))).astype(np.float32)

    def _opentsne(self, data: np.ndarray, warm: np.ndarray | None, perplexity: float) -> np.ndarray:
        """openTSNE's FFT-accelerated t-SNE on scikit-learn's schedule (same starts, phases,
        momenta, learning rate and stop on the KL gradient's norm)."""
        from openTSNE import TSNEEmbedding, affinity
        from openTSNE.tsne import kl_divergence_fft

        n = len(data)
        # The affinities: perplexity-based on the 3 x perplexity nearest neighbours, exact
        # (as scikit-learn's) up to EXACT_NEIGHBOURS_MAX_ROWS rows, where a blocked search
        # by matrix products costs less than Annoy's approximate one; Annoy (seeded) above.
        k = min(n - 1, int(3 * perplexity))
        if n <= EXACT_NEIGHBOURS_MAX_ROWS:
            from openTSNE.nearest_neighbors import PrecomputedNeighbors

            aff = affinity.PerplexityBasedNN(knn_index=PrecomputedNeighbors(*nearest_neighbours(data, k)), perplexity=perplexity, n_jobs=1)
        else:
            aff = affinity.PerplexityBasedNN(data, perplexity=perplexity, method="annoy", n_jobs=1, random_state=self.seed)
        if warm is not None:
            init = self._start(warm).astype(np.float64)
            first, total, exaggeration = self.warm_exaggeration_iter, self.warm_iter, self.warm_exaggeration
            min_grad_norm = self.warm_min_grad_norm
        else:
            # sklearn's init="pca": the first two principal components at std 1e-4.
            pcs = _pad2(_pca(data, 2, self.seed)).astype(np.float64)
            init = pcs / (float(pcs[:, 0].std()) or 1.0) * 1e-4
            first, total, exaggeration = self.exaggeration_iter, self.n_iter, 12.0
            min_grad_norm = 0.0
        # scikit-learn's learning_rate="auto", N / early_exaggeration / 4 (at least 50), for
        # its gradient, which is 4 times openTSNE's: the same steps.
        lr = 4.0 * max(n / exaggeration / 4.0, 50.0)
        emb = TSNEEmbedding(init, aff, negative_gradient_method="fft", n_jobs=1, random_state=self.seed, verbose=False)
        common = dict(learning_rate=lr, max_grad_norm=None, max_step_norm=None, n_jobs=1)
        emb = emb.optimize(first, exaggeration=exaggeration, momentum=0.5, **common)

        def small_gradient(iteration: int, error: float, embedding: Any) -> bool:
            # sklearn's check, every 50 iterations: the norm of its (4 times larger) gradient.
            _, grad = kl_divergence_fft(np.asarray(embedding), aff.P, dof=1, bh_params={}, fft_params=dict(
                n_interpolation_points=3, min_num_intervals=50, ints_in_interval=1), n_jobs=1)
            return 4.0 * float(np.linalg.norm(grad)) <= min_grad_norm

        rest = total - first
        if rest > 0:
            callbacks = [small_gradient] if min_grad_norm > 0 else None
            emb = emb.optimize(rest, exaggeration=1.0, momentum=0.8, callbacks=callbacks, callbacks_every_iters=50, **common)
        return np.asarray(emb, dtype=np.float32)

    def _torchdr(self, data: np.ndarray, warm: np.ndarray | None, perplexity: float) -> np.ndarray:
        """TorchDR's t-SNE on ``self.device``: the same starts (the first two principal
        components, or the previous layout, at std 1e-4) and phases as the CPU backends."""
        torchdr = require("torchdr", TORCHDR_HINT)
        if warm is not None:
            init = self._start(warm)
            total, first, exaggeration = self.warm_iter, self.warm_exaggeration_iter, self.warm_exaggeration
            # TorchDR's gradient is not scaled as scikit-learn's, so warm_min_grad_norm would
            # stop it at another point (at once, on the benchmark's check): the whole warm
            # schedule instead, which a GPU runs in a fraction of a second.
            min_grad_norm = 1e-7
        else:
            init = _pad2(_pca(data, 2, self.seed))
            total, first, exaggeration, min_grad_norm = self.n_iter, self.exaggeration_iter, 12.0, 1e-7
        model = torchdr.TSNE(
            perplexity=perplexity, n_components=2, init=init.astype(np.float32), init_scaling=WARM_INIT_STD,
            max_iter=total, early_exaggeration_coeff=exaggeration, early_exaggeration_iter=first,
            min_grad_norm=min_grad_norm, device=self.device, random_state=self.seed, verbose=False,
        )
        out = model.fit_transform(data)
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)

    def _umap(self, x: np.ndarray, warm: np.ndarray | None) -> np.ndarray:
        umap = require("umap", UMAP_HINT, "UMAP")
        n = len(x)
        kwargs: dict[str, Any] = dict(n_components=2, random_state=self.seed, n_neighbors=min(15, n - 1))
        if warm is not None:
            # umap-learn rescales each axis of an initial layout to [0, 10] on its own; a
            # layout turned so its box is square keeps its shape through that.
            kwargs["init"] = (_square_box(normalize(warm)) * 10.0).astype(np.float32)
            kwargs["n_epochs"] = UMAP_WARM_EPOCHS
            kwargs["learning_rate"] = UMAP_WARM_LEARNING_RATE
        if n < 4096:
            # umap's exact neighbour search below 4096 points is a slow Python loop.
            kwargs["force_approximation_algorithm"] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return umap.UMAP(**kwargs).fit_transform(x)


def _square_box(layout: np.ndarray) -> np.ndarray:
    """``layout`` turned about its centre so that its x and y ranges are equal.

    Turning by 90 degrees swaps the two ranges, so their difference changes sign between
    0 and 90 degrees and, being continuous, is zero somewhere in between (bisection).
    """
    a = np.asarray(layout, dtype=np.float64)

    def turned(t: float) -> np.ndarray:
        c, s = np.cos(t), np.sin(t)
        return a @ np.array([[c, -s], [s, c]])

    def gap(t: float) -> float:
        r = turned(t)
        return float(np.ptp(r[:, 0]) - np.ptp(r[:, 1]))

    lo, hi = 0.0, np.pi / 2
    g_lo = gap(lo)
    if g_lo == 0.0 or len(a) < 2:
        return a
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if (gap(mid) > 0) == (g_lo > 0):
            lo = mid
        else:
            hi = mid
    return turned(0.5 * (lo + hi))


def nearest_neighbours(x: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest neighbours of every row of ``x`` (itself excluded), nearest
    first: (indices, Euclidean distances), each (rows, k).

    Squared distances by matrix products, a block of rows at a time (memory: ``block`` x
    rows floats), then a partial sort of each row.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d = x[start:stop] @ x.T
        d *= -2.0
        d += sq[None, :]
        d += sq[start:stop, None]
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        near = np.argpartition(d, k - 1, axis=1)[:, :k]
        nd = np.take_along_axis(d, near, axis=1)
        order = np.argsort(nd, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(near, order, axis=1)
        dist[start:stop] = np.sqrt(np.maximum(np.take_along_axis(nd, order, axis=1), 0.0))
    return idx, dist


def has_opentsne() -> bool:
    """Whether openTSNE can be imported."""
    try:
        require("openTSNE", OPENTSNE_HINT, "TSNEEmbedding")
    except ImportError:
        return False
    return True


def gpu_unavailable_reason() -> str | None:
    """Why t-SNE cannot be laid out on a CUDA device here (None: it can)."""
    try:
        require("torchdr", TORCHDR_HINT)
    except ImportError:
        return "torchdr is not installed (pip install 'layerwatch[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not usable in this process"
    return None


def gpu_layouts_available() -> bool:
    """Whether t-SNE can be laid out on a CUDA device here (torchdr and CUDA)."""
    return gpu_unavailable_reason() is None


def thread_limit(threads: int, user_api: str | None = None):
    """Limit BLAS/OpenMP threads to ``threads`` inside the block (0: no limit).

    On a few cores the t-SNE's OpenMP loop and the BLAS pools left spinning by the PCA
    and the metrics slow each other down several times; one thread is the fastest there.
    ``user_api="openmp"`` limits only OpenMP, whose setting belongs to the calling thread
    (what a layout running in a pool thread needs).
    """
    if not threads:
        return contextlib.nullcontext()
    # A limit reaches only the thread pools already loaded: load scikit-learn's OpenMP
    # runtime (its t-SNE module is built with it) and SciPy's BLAS first, or the first
    # snapshot's t-SNE would run unlimited.
    import scipy.linalg  # noqa: F401
    import sklearn.manifold  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api=user_api)


def _job(threads: int, fn: Callable, *args: Any) -> Any:
    """Run ``fn`` in a pool thread under its own OpenMP limit (a per-thread setting)."""
    with thread_limit(threads, user_api="openmp"):
        return fn(*args)


def start_layouts(
    pooled: np.ndarray,
    reducer: Reducer,
    previous: np.ndarray | None = None,
    skip: set[int] | None = None,
    pool: Executor | None = None,
    threads: int = 1,
) -> Callable[[], tuple[np.ndarray, dict[int, str]]]:
    """Start laying out every layer of ``pooled``; call the result to collect them.

    With a thread ``pool`` the layers are laid out at once, each under an OpenMP limit of
    ``threads`` (scikit-learn's t-SNE spends its time in compiled code that releases the
    GIL); without one they are laid out in order when collected. Each layer's layout
    depends only on its own vectors, previous layout and the reducer's seed, so both
    ways give the same layouts.
    """
    out = np.full((pooled.shape[0], pooled.shape[1], 2), np.nan, dtype=np.float32)
    todo = []
    for j in range(pooled.shape[0]):
        if skip and j in skip:
            continue
        prev = previous[j] if previous is not None and np.isfinite(previous[j]).all() else None
        todo.append((j, prev))
    futures = {j: pool.submit(_job, threads, reducer, pooled[j], prev) for j, prev in todo} if pool is not None else {}

    def collect(tell: Callable[[int, list[int], int], None] | None = None) -> tuple[np.ndarray, dict[int, str]]:
        """``tell(done, running, total)``, when given, hears before each layout and after
        the last how many of the ``total`` layers are done and the positions of those
        being laid out now."""
        problems: dict[int, str] = {}
        for done, (j, prev) in enumerate(todo):
            if tell is not None:
                running = [i for i, _ in todo[done:] if not futures or futures[i].running()] if futures else [j]
                tell(done, running or [j], len(todo))
            try:
                out[j] = futures[j].result() if futures else reducer(pooled[j], prev)
            except ValueError as exc:
                problems[j] = str(exc)
        if tell is not None:
            tell(len(todo), [], len(todo))
        return out, problems

    return collect


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
    return start_layouts(pooled, reducer, previous, skip)()
