"""How still a tied UMAP layout holds, and how well it follows vectors that change.

The cases of ``tests/test_reduce.py::test_umap_layout_is_normalised_seeded_and_tied``
over many seeds: 100 points in 3 classes (20 dims), laid out fresh, the layout turned by 2
radians and handed back as the previous frame of the same vectors; the figure is the mean
distance a point moves (each layout at unit RMS radius; the test's bound is 0.35). Then a
frame of 300 points whose classes separate between two frames (from 0.15 to a full class
separation): the 2-D silhouette of the tied frame against a fresh fit's (lag; t-SNE's bar
is 0.1). Run it under other CPU settings to see the spread across machines, e.g.
``NUMBA_CPU_NAME=generic`` (numba compiles for a generic x86-64 CPU) or
``NUMBA_NUM_THREADS=2``.

Usage::

    python benchmarks/umap_tie.py               # seeds 0-5 (about 2 minutes on 2 cores)
    python benchmarks/umap_tie.py --seeds 2
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from layerwatch.reduce import Reducer, normalize  # noqa: E402


def blobs(n: int = 100, dim: int = 20, classes: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 4.0
    return (centres[np.arange(n) % classes] + rng.normal(size=(n, dim))).astype(np.float32)


def move(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(normalize(a) - normalize(b), axis=1).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args(argv)
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    c, s = np.cos(2.0), np.sin(2.0)
    turn = np.array([[c, -s], [s, c]], dtype=np.float32)
    moves, gaps = [], []
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        for seed in range(args.seeds):
            r = Reducer("umap", seed=seed)
            for data_seed in (0, 1):
                x = blobs(seed=data_seed)
                prev = r(x) @ turn
                moves.append(move(r(x, prev), prev))
                rng = np.random.default_rng(data_seed)
                labels = np.arange(300) % 3
                base = rng.normal(size=(300, 20)).astype(np.float32)
                centres = (rng.normal(size=(3, 20)) * 4).astype(np.float32)
                mixed, apart = base + 0.15 * centres[labels], base + centres[labels]
                gaps.append(silhouette_score(r(apart), labels) - silhouette_score(r(apart, r(mixed)), labels))
    print(f"{len(moves)} cases (seeds 0-{args.seeds - 1} x 2 data sets); NUMBA_CPU_NAME={os.environ.get('NUMBA_CPU_NAME', '(host)')}")
    print(f"tied move: worst {max(moves):.3f}, mean {np.mean(moves):.3f} (test bound 0.35)")
    print(f"2-D silhouette lag behind fresh fits, classes separating: worst {max(gaps):.3f}")


if __name__ == "__main__":
    main()
