"""Reducers: layouts that are tied to the previous frame, deterministic and checked.

Small synthetic data only (a t-SNE of 120 points); the benchmark in
``benchmarks/alignment.py`` measures the same properties on real runs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from layerwatch.measures.embeddings.files import load_layout
from layerwatch.reduce import Reducer, normalize, procrustes, reduce_layers

FAST_TSNE = dict(n_iter=300, warm_iter=250)


@pytest.fixture(autouse=True)
def _one_thread():
    # A t-SNE of 120 points gains nothing from threads, and OpenMP threads that spin-wait
    # on a machine busy with other work make it several times slower.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def blobs(n: int = 120, dim: int = 20, classes: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 4.0
    return (centres[np.arange(n) % classes] + rng.normal(size=(n, dim))).astype(np.float32)


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def mean_move(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(normalize(a) - normalize(b), axis=1).mean())


# -- building blocks -----------------------------------------------------------------
def test_normalize_centres_and_gives_unit_rms_radius():
    rng = np.random.default_rng(0)
    layout = rng.normal(size=(50, 2)) * [7.0, 0.3] + [100.0, -4.0]
    out = normalize(layout)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    assert np.sqrt((out.astype(np.float64) ** 2).sum(axis=1).mean()) == pytest.approx(1.0, abs=1e-6)
    # Only a shift and one common scale: the shape is unchanged.
    np.testing.assert_allclose(out / out[:, :1].std(), (layout - layout.mean(0)) / layout[:, :1].std(), atol=1e-4)


def test_normalize_leaves_a_single_point_cloud_at_zero():
    out = normalize(np.full((5, 2), 3.0))
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_a_known_rotation_or_reflection(reflect):
    target = normalize(np.random.default_rng(1).normal(size=(40, 2)) * [3.0, 1.0])
    turn = rotation(1.1) @ (np.diag([1.0, -1.0]) if reflect else np.eye(2))
    moved = target @ turn
    assert np.abs(moved - target).max() > 0.5
    np.testing.assert_allclose(procrustes(moved, target), target, atol=1e-5)


def test_procrustes_only_rotates():
    rng = np.random.default_rng(2)
    a, b = normalize(rng.normal(size=(30, 2))), normalize(rng.normal(size=(30, 2)))
    out = procrustes(a, b)
    # Distances between points are kept: an orthogonal map, no stretching toward the target.
    d = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(out), d(a), atol=1e-5)


# -- aligned layouts ------------------------------------------------------------------
def test_aligned_pca_of_a_rotated_sign_flipped_copy_coincides_with_the_previous_frame():
    x = blobs(dim=12)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))
    copy = -(x @ q) + 5.0  # same cloud, rotated, mirrored and shifted in high-D
    first = Reducer("pca", seed=0)(x)
    tied = Reducer("pca", seed=0, align=True)(copy, first)
    free = Reducer("pca", seed=0, align=False)(copy, first)
    np.testing.assert_allclose(tied, first, atol=1e-4)
    assert mean_move(free, first) > 0.5  # PCA alone does flip or turn: the tie is doing work


def test_aligned_pca_of_changed_vectors_is_the_fresh_fit_turned_onto_the_previous_frame():
    x = blobs(dim=12)
    changed = x + np.random.default_rng(7).normal(size=x.shape).astype(np.float32)
    first = Reducer("pca")(x)
    tied = Reducer("pca", align=True)(changed, first)
    free = Reducer("pca", align=False)(changed)
    np.testing.assert_allclose(tied, procrustes(free, first), atol=1e-6)
    assert mean_move(tied, first) <= mean_move(free, first)


def test_aligned_tsne_on_nearly_identical_input_moves_far_less_than_independent_fits():
    x = blobs()
    rng = np.random.default_rng(4)
    # Nearly the same vectors, mirrored in high-D: a fresh t-SNE is free to come back mirrored.
    nudged = -(x + 0.05 * rng.normal(size=x.shape).astype(np.float32))
    first = Reducer("tsne", seed=0, **FAST_TSNE)(x)
    tied = Reducer("tsne", seed=0, align=True, **FAST_TSNE)(nudged, first)
    free = Reducer("tsne", seed=0, align=False, **FAST_TSNE)(nudged, first)
    assert mean_move(free, first) > 5 * mean_move(tied, first)
    assert mean_move(tied, first) < 0.2


def test_aligned_tsne_shows_the_classes_whatever_the_previous_arrangement():
    # Stability must not hide change. Worst case for a tie: the previous frame is an
    # arrangement that has nothing to do with the classes (as when classes separate that
    # were mixed). The tied layout must still show them apart, as a fresh fit does; a warm
    # start continued at several times t-SNE's own scale keeps them scattered (silhouette
    # 0.1-0.5 here), and at 1,000 points even at its own scale (benchmarks/alignment.py).
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(6)
    labels = np.arange(150) % 3
    apart = (rng.normal(size=(150, 20)) + 6.0 * np.eye(20)[labels]).astype(np.float32)
    unrelated = normalize(rng.normal(size=(150, 2)))
    tied = Reducer("tsne", seed=0, align=True, **FAST_TSNE)(apart, unrelated)
    free = Reducer("tsne", seed=0, align=False, **FAST_TSNE)(apart)
    assert abs(silhouette_score(unrelated, labels)) < 0.05
    assert silhouette_score(free, labels) > 0.8
    assert silhouette_score(tied, labels) > silhouette_score(free, labels) - 0.1


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_align_false_ignores_previous(method):
    x = blobs()
    prev = normalize(np.random.default_rng(5).normal(size=(len(x), 2)))
    kw = FAST_TSNE if method == "tsne" else {}
    free = Reducer(method, seed=0, align=False, **kw)
    np.testing.assert_array_equal(free(x, prev), free(x))
    # ...whereas the aligned reducer does use it, so the check above could fail.
    tied = Reducer(method, seed=0, align=True, **kw)
    assert not np.allclose(tied(x, prev), free(x), atol=1e-3)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_seeded_layouts_are_deterministic(method):
    x = blobs()
    kw = FAST_TSNE if method == "tsne" else {}
    a = Reducer(method, seed=7, **kw)(x)
    b = Reducer(method, seed=7, **kw)(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(Reducer(method, seed=7, **kw)(x * 1.01, a), Reducer(method, seed=7, **kw)(x * 1.01, a))
    assert a.shape == (len(x), 2) and a.dtype == np.float32


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_layouts_come_back_normalised(method):
    x = blobs()
    kw = FAST_TSNE if method == "tsne" else {}
    for out in (Reducer(method, **kw)(x), Reducer(method, **kw)(x, Reducer(method, **kw)(x[::-1].copy()))):
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
        assert np.sqrt((out.astype(np.float64) ** 2).sum(axis=1).mean()) == pytest.approx(1.0, abs=1e-5)


def test_previous_that_cannot_be_a_tie_is_not_used():
    x = blobs(n=60)
    r = Reducer("pca", align=True)
    fresh = r(x)
    np.testing.assert_array_equal(r(x, np.ones((59, 2), np.float32)), fresh)  # other rows
    np.testing.assert_array_equal(r(x, np.full((60, 2), np.nan, np.float32)), fresh)  # an empty panel
    assert not np.allclose(r(x, -fresh), fresh)  # ...while a usable one is used


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_previous_with_every_point_in_one_place_gives_a_fresh_fit(method):
    x = blobs()
    r = Reducer(method, seed=0, **(FAST_TSNE if method == "tsne" else {}))
    np.testing.assert_array_equal(r(x, np.full((len(x), 2), 0.5, np.float32)), r(x))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(perplexity=0), "perplexity=0 must be a positive number"),
        (dict(n_iter=100), "n_iter=100 must be an integer of at least 250"),
        (dict(warm_iter=249.5), "warm_iter=249.5 must be an integer"),
        (dict(warm_exaggeration=0.5), "warm_exaggeration=0.5 must be a number of at least 1"),
        (dict(exaggeration_iter=0), "exaggeration_iter=0 must be an integer from 1 to n_iter"),
        (dict(n_iter=300, exaggeration_iter=301), "exaggeration_iter=301 must be an integer from 1"),
    ],
)
def test_bad_settings_are_refused_when_constructed(kw, message):
    with pytest.raises(ValueError, match=message):
        Reducer("tsne", **kw)


# -- bad input ----------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises_a_clear_error(bad):
    x = blobs(n=30)
    x[4, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        Reducer("pca")(x)


def test_wrong_shape_and_unknown_method_raise():
    with pytest.raises(ValueError, match=r"expected \(rows, dim\)"):
        Reducer("pca")(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="method='tnse' is not one of 'tsne', 'pca', 'umap'"):
        Reducer("tnse")


def test_perplexity_is_lowered_with_a_warning_for_tiny_inputs():
    x = blobs(n=12)
    r = Reducer("tsne", perplexity=30.0, **FAST_TSNE)
    assert r.perplexity_for(12) == pytest.approx(11 / 3)
    assert r.perplexity_for(1000) == 30.0
    with pytest.warns(UserWarning, match=r"perplexity lowered from 30 to 3\.66667 for 12 rows"):
        out = r(x)
    assert out.shape == (12, 2) and np.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per size, not on every frame
        r(x, out)


def test_one_or_two_rows_still_get_a_layout():
    for n in (1, 2):
        out = Reducer("tsne")(blobs(n=n))
        assert out.shape == (n, 2) and np.isfinite(out).all()


def test_reduce_layers_skips_a_non_finite_layer_and_lays_out_the_rest():
    pooled = np.stack([blobs(n=40, seed=s) for s in range(3)])
    pooled[1, 0, 0] = np.nan
    out, problems = reduce_layers(pooled, Reducer("pca"))
    assert list(problems) == [1] and "NaN" in problems[1]
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    # A previous frame whose layer is NaN is no tie for that layer: it is laid out afresh.
    pooled[1, 0, 0] = 0.0
    again, problems = reduce_layers(pooled, Reducer("pca", align=True), out)
    assert problems == {} and np.isfinite(again).all()
    np.testing.assert_array_equal(again[1], Reducer("pca")(pooled[1]))


# -- optional backend -------------------------------------------------------------------
# Seeds and data other than the first: a tie that held for one seed on one CPU by luck
# (umap's 500 epochs from the previous layout re-arranged whole clusters, 0.56 on a CPU
# without AVX512, above 0.5 for other seeds here) must hold for all of them.
@pytest.mark.parametrize("seed, data_seed", [(0, 0), (1, 0), (2, 1)])
def test_umap_layout_is_normalised_seeded_and_tied(seed, data_seed):
    pytest.importorskip("umap")
    x = blobs(n=100, seed=data_seed)
    first = Reducer("umap", seed=seed)(x)
    assert first.shape == (100, 2) and np.isfinite(first).all()
    assert np.sqrt((first.astype(np.float64) ** 2).sum(axis=1).mean()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(Reducer("umap", seed=seed)(x), first)
    # The previous frame, turned: a tied layout follows it, an independent one cannot know.
    prev = first @ rotation(2.0).astype(np.float32)
    tied = Reducer("umap", seed=seed, align=True)(x, prev)
    free = Reducer("umap", seed=seed, align=False)(x, prev)
    np.testing.assert_array_equal(free, first)
    assert mean_move(tied, prev) < 0.35
    assert mean_move(free, prev) > 1.0


@pytest.mark.parametrize("n, forced", [(100, True), (4096, None)])
def test_umap_forces_its_approximate_neighbour_search_below_4096_points(monkeypatch, n, forced):
    # Below 4,096 points umap-learn would take its exact search, a slow Python loop.
    umap = pytest.importorskip("umap")
    seen: dict = {}

    class Recording:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def fit_transform(self, x):
            return np.random.default_rng(0).normal(size=(len(x), 2))

    monkeypatch.setattr(umap, "UMAP", Recording)
    Reducer("umap", seed=0)(np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32))
    assert seen.get("force_approximation_algorithm") is forced
    assert seen["random_state"] == 0


def test_umap_warm_start_is_square_short_and_gentle(monkeypatch):
    # umap-learn rescales each axis of an initial layout to [0, 10]: the previous layout is
    # handed over turned so both ranges are equal (its shape survives that), with the warm
    # schedule's epochs and learning rate; a fresh fit keeps umap's own.
    umap = pytest.importorskip("umap")
    from layerwatch.reduce import UMAP_WARM_EPOCHS, UMAP_WARM_LEARNING_RATE

    seen: list[dict] = []

    class Recording:
        def __init__(self, **kwargs):
            seen.append(kwargs)

        def fit_transform(self, x):
            return np.random.default_rng(0).normal(size=(len(x), 2))

    monkeypatch.setattr(umap, "UMAP", Recording)
    x = np.random.default_rng(1).normal(size=(60, 8)).astype(np.float32)
    prev = np.random.default_rng(2).normal(size=(60, 2)) * [5.0, 0.5] @ rotation(0.4)
    Reducer("umap", seed=0)(x, prev)
    Reducer("umap", seed=0)(x)
    warm, fresh = seen
    init = warm["init"]
    assert np.ptp(init[:, 0]) == pytest.approx(np.ptp(init[:, 1]), rel=1e-6)
    # Only turned (and scaled): every distance between points keeps its ratio.
    d = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(init) / d(init).max(), d(normalize(prev)) / d(normalize(prev)).max(), atol=1e-5)
    assert (warm["n_epochs"], warm["learning_rate"]) == (UMAP_WARM_EPOCHS, UMAP_WARM_LEARNING_RATE)
    assert "init" not in fresh and "n_epochs" not in fresh and "learning_rate" not in fresh


def test_umap_warm_start_follows_vectors_that_change():
    # Classes that separate between two frames are separated in the tied frame nearly as
    # well as in a fresh fit (a gentle warm start must not freeze the previous picture).
    pytest.importorskip("umap")
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    base = rng.normal(size=(300, 20)).astype(np.float32)
    centres = rng.normal(size=(3, 20)).astype(np.float32) * 4.0
    mixed, apart = base + 0.15 * centres[labels], base + centres[labels]
    r = Reducer("umap", seed=0)
    tied = r(apart, r(mixed))
    assert silhouette_score(tied, labels) > silhouette_score(r(apart), labels) - 0.2
    assert silhouette_score(tied, labels) > silhouette_score(r(mixed), labels) + 0.3


def test_umap_missing_gives_an_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_umap(name, *args, **kw):
        if name == "umap" or name.startswith("umap."):
            raise ImportError("No module named 'umap'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    with pytest.raises(ImportError, match=r"pip install 'layerwatch\[umap\]'"):
        Reducer("umap")


def test_a_short_schedule_keeps_the_neighbourhoods_of_the_default_one():
    # exaggeration_iter shortens sklearn's fixed 250-iteration first phase: 125 + 250
    # iterations must lay out the neighbourhoods as faithfully as the default 250 + 500.
    from sklearn.manifold import trustworthiness

    x = blobs(n=300, dim=30, classes=5, seed=3)
    default = Reducer("tsne", seed=0, align=False)
    short = Reducer("tsne", seed=0, align=False, n_iter=375, warm_iter=250, exaggeration_iter=125)
    assert (default.n_iter, default.exaggeration_iter) == (750, 250)
    t_short = trustworthiness(x, short(x), n_neighbors=10)
    t_default = trustworthiness(x, default(x), n_neighbors=10)
    assert t_default > 0.9
    assert t_short >= t_default - 0.02
    assert not np.allclose(short(x), default(x), atol=1e-3)  # the shorter schedule did run


@pytest.mark.parametrize("threads, expected", [(1, 1), (0, None)])
def test_pipeline_lays_out_and_measures_under_its_thread_limit(tmp_path, monkeypatch, threads, expected):
    # t-SNE, PCA and the metrics run with `threads` BLAS/OpenMP threads (0: untouched).
    from threadpoolctl import threadpool_info, threadpool_limits

    from layerwatch.capturing import Snapshot
    from layerwatch.config import LayerwatchConfig
    from layerwatch.pipeline import Pipeline
    from layerwatch.store import RunStore, SnapshotKey

    seen: list[set[int]] = []
    real_call = Reducer.__call__

    def recording(self, x, previous=None):
        seen.append({info["num_threads"] for info in threadpool_info()})
        return real_call(self, x, previous)

    monkeypatch.setattr(Reducer, "__call__", recording)
    x = blobs(n=60, dim=8)
    snap = Snapshot(
        pooled=np.stack([x, x * 2]), labels=np.arange(60) % 3, layers=np.array([0, 1]),
        indices=np.arange(60), predictions=None, split="train", label_names=None,
    )
    config = LayerwatchConfig(output_dir=str(tmp_path), method="pca", threads=threads, progress=False)
    # This module's autouse fixture holds every pool at one thread: set two here, so that
    # the test sees what the pipeline itself sets.
    with threadpool_limits(limits=2):
        Pipeline(RunStore(str(tmp_path)), config, reference_split="train").process({"train": snap}, SnapshotKey(0), render=False)
    assert len(seen) == 2
    assert all(s == {expected or 2} for s in seen), seen


def test_layouts_in_a_thread_pool_equal_layouts_in_order():
    # Each layer's t-SNE depends only on its own vectors, previous layout and the seed.
    from concurrent.futures import ThreadPoolExecutor

    from layerwatch.reduce import start_layouts

    reducer = Reducer("tsne", seed=0, **FAST_TSNE)
    pooled = np.stack([blobs(seed=s) for s in range(3)])
    pooled[1, 5, 0] = np.nan  # a broken layer is reported, not fatal, both ways
    previous = np.stack([reducer(p) for p in np.stack([blobs(seed=s + 10) for s in range(3)])])
    in_order, problems = reduce_layers(pooled, reducer, previous)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled_out, pooled_problems = start_layouts(pooled, reducer, previous, pool=pool, threads=1)()
    assert set(problems) == set(pooled_problems) == {1}
    assert "NaN" in pooled_problems[1]
    np.testing.assert_array_equal(np.isnan(in_order), np.isnan(pooled_out))
    np.testing.assert_array_equal(in_order[[0, 2]], pooled_out[[0, 2]])
    assert np.isnan(pooled_out[1]).all()


def _two_split_snapshots():
    from layerwatch.capturing import Snapshot

    snaps = {}
    for i, split in enumerate(("train", "validation")):
        x = blobs(n=100, dim=12, seed=i)
        snaps[split] = Snapshot(
            pooled=np.stack([x, x * 2 + 1, -x]), labels=np.arange(100) % 3, layers=np.array([0, 1, 2]),
            indices=np.arange(100), predictions=None, split=split, label_names=None,
        )
    return snaps


def test_pipeline_lays_out_layers_at_once_with_the_same_result(tmp_path, monkeypatch):
    # n_jobs=2 runs the t-SNE layouts of both splits in two pool threads, each held to
    # `threads` OpenMP threads; the stored layouts equal those of one job in order.
    import threading

    from threadpoolctl import threadpool_info

    from layerwatch.config import LayerwatchConfig
    from layerwatch.pipeline import Pipeline
    from layerwatch.store import RunStore, SnapshotKey

    seen: list[tuple[str, set[int]]] = []
    real_call = Reducer.__call__

    def recording(self, x, previous=None):
        omp = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}
        seen.append((threading.current_thread().name, omp))
        return real_call(self, x, previous)

    monkeypatch.setattr(Reducer, "__call__", recording)
    layouts = {}
    for jobs in (1, 2):
        root = tmp_path / f"jobs{jobs}"
        config = LayerwatchConfig(output_dir=str(root), method="tsne", n_jobs=jobs, progress=False, metrics=False)
        pipe = Pipeline(RunStore(str(root)), config, reference_split="train")
        pipe.reducer.n_iter, pipe.reducer.warm_iter = FAST_TSNE["n_iter"], FAST_TSNE["warm_iter"]
        seen.clear()
        for epoch in range(2):  # the second snapshot is warm-started from the first
            pipe.process(_two_split_snapshots(), SnapshotKey(epoch), render=False)
        layouts[jobs] = {s: np.stack([f.data.layout for f in film.frames]) for s, film in pipe.films.items()}
        names = {name for name, _ in seen}
        assert len(seen) == 12  # 2 snapshots x 2 splits x 3 layers
        if jobs > 1:
            assert all(name.startswith("layerwatch-layout") for name in names)
            assert all(omp <= {1} for _, omp in seen)
        else:
            assert names == {threading.main_thread().name}
    for split in ("train", "validation"):
        np.testing.assert_array_equal(layouts[1][split], layouts[2][split])


CONSTANT_LAYER = """
import numpy as np
from layerwatch.config import LayerwatchConfig
from layerwatch.pipeline import Pipeline
from layerwatch.snapshot import Snapshot, SnapshotKey
from layerwatch.store import RunStore

rng = np.random.default_rng(0)
x = rng.normal(size=(60, 8)).astype(np.float32)
pooled = np.stack([x, np.zeros_like(x), np.full_like(x, 3.5)])  # a live layer, an all-zero one, a constant one
snap = Snapshot(pooled=pooled, labels=np.arange(60) % 3, layers=[0, 1, 2], indices=np.arange(60), split="train")
pipe = Pipeline(RunStore({root!r}), LayerwatchConfig(output_dir={root!r}, method="tsne", progress=False, n_jobs=1), reference_split="train")
pipe.process({{"train": snap}}, SnapshotKey(0))
pipe.process({{"train": snap}}, SnapshotKey(1, 4))
print("survived")
"""


def test_a_layer_of_identical_vectors_is_drawn_at_one_point_not_handed_to_tsne(tmp_path):
    # scikit-learn's t-SNE crashes the whole process on such a layer; run it apart.
    import subprocess
    import sys

    from layerwatch.store import RunStore
    from layerwatch.snapshot import SnapshotKey

    proc = subprocess.run([sys.executable, "-c", CONSTANT_LAYER.format(root=str(tmp_path))],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "survived" in proc.stdout
    assert "every row of layer 1 holds the same vector" in proc.stderr
    layout = load_layout(RunStore(tmp_path), "train", SnapshotKey(1, 4))["layout"]
    assert np.isfinite(layout[0]).all() and np.ptp(layout[0], axis=0).min() > 0
    np.testing.assert_array_equal(layout[1], 0.0)
    np.testing.assert_array_equal(layout[2], 0.0)
    rows = RunStore(tmp_path).read_metrics()
    assert {r["layer"] for r in rows if r["metric"] == "silhouette"} == {0}  # undefined for one point


def test_the_reducer_refuses_identical_vectors_instead_of_crashing():
    from layerwatch.reduce import DegenerateInput, is_degenerate

    assert is_degenerate(np.zeros((10, 4))) and is_degenerate(np.full((10, 4), 1e6))
    assert not is_degenerate(np.eye(10, 4))
    for method in ("pca", "tsne"):
        with pytest.raises(DegenerateInput, match="all 10 vectors are identical"):
            Reducer(method, align=False)(np.ones((10, 4), np.float32))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_umap_of_a_tiny_split_gives_a_layout(n):
    pytest.importorskip("umap")
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    layout = Reducer("umap", align=False)(x)
    assert layout.shape == (n, 2) and np.isfinite(layout).all()

# -- the short warm-start schedule (#18) ------------------------------------------------
@pytest.fixture
def fitted(monkeypatch):
    """Record, for every t-SNE fit, its first phase, early stop and iterations run."""
    from sklearn.manifold import TSNE

    seen: list[dict] = []
    real = TSNE.fit_transform

    def recording(self, x, *args, **kwargs):
        out = real(self, x, *args, **kwargs)
        seen.append(dict(first=self._EXPLORATION_MAX_ITER, max_iter=self.max_iter, min_grad_norm=self.min_grad_norm,
                         iterations=int(self.n_iter_) + 1, warm=not isinstance(self.init, str)))
        return out

    monkeypatch.setattr(TSNE, "fit_transform", recording)
    return seen


def test_default_schedule(fitted):
    r = Reducer("tsne")
    assert (r.n_iter, r.exaggeration_iter, r.warm_iter, r.warm_exaggeration_iter, r.warm_min_grad_norm) == (750, 250, 250, 50, 1e-3)
    x = blobs(n=300, dim=30, classes=4, seed=8)
    first = r(x)
    r(x + 0.05 * np.random.default_rng(0).normal(size=x.shape).astype(np.float32), first)
    fresh, warm = fitted
    assert not fresh["warm"] and warm["warm"]
    assert (fresh["first"], fresh["max_iter"], fresh["min_grad_norm"]) == (250, 750, 1e-7)  # sklearn's schedule
    assert (warm["first"], warm["max_iter"], warm["min_grad_norm"]) == (50, 250, 1e-3)
    assert warm["iterations"] <= 250 and fresh["iterations"] == 750
    # The early stop on the KL gradient ends a warm start before its last iteration once
    # the gradient is small enough (here with a looser threshold than the default's).
    loose = Reducer("tsne", warm_min_grad_norm=3e-3)
    loose(x + 0.05 * np.random.default_rng(0).normal(size=x.shape).astype(np.float32), loose(x))
    assert fitted[-1]["warm"] and fitted[-1]["min_grad_norm"] == 3e-3 and fitted[-1]["iterations"] < 250


def test_no_early_stop_runs_every_iteration(fitted):
    r = Reducer("tsne", warm_min_grad_norm=0)
    x = blobs(n=150)
    r(x, r(x))
    assert [f["iterations"] for f in fitted] == [750, 250]
    assert all(f["min_grad_norm"] == 1e-7 for f in fitted)  # sklearn's own default: no early stop


def test_default_warm_start_holds_still_and_shows_the_classes():
    # The two properties the long schedule was chosen for, at the new defaults: nearly the
    # same vectors (mirrored in high-D) give nearly the same layout, and a previous frame
    # whose arrangement has nothing to do with the classes does not hide them.
    from sklearn.metrics import silhouette_score

    x = blobs()
    nudged = -(x + 0.05 * np.random.default_rng(4).normal(size=x.shape).astype(np.float32))
    first = Reducer("tsne", seed=0)(x)
    tied = Reducer("tsne", seed=0, align=True)(nudged, first)
    free = Reducer("tsne", seed=0, align=False)(nudged, first)
    assert mean_move(free, first) > 5 * mean_move(tied, first)
    assert mean_move(tied, first) < 0.2

    rng = np.random.default_rng(6)
    labels = np.arange(150) % 3
    apart = (rng.normal(size=(150, 20)) + 6.0 * np.eye(20)[labels]).astype(np.float32)
    unrelated = normalize(rng.normal(size=(150, 2)))
    shown = Reducer("tsne", seed=0, align=True)(apart, unrelated)
    fresh = Reducer("tsne", seed=0, align=False)(apart)
    assert silhouette_score(fresh, labels) > 0.8
    assert silhouette_score(shown, labels) > silhouette_score(fresh, labels) - 0.1


def test_short_schedule_film_moves_less_and_separates_like_independent_fits():
    # A small film whose classes separate frame by frame, then hold (as in
    # benchmarks/alignment.py), while the cloud turns in high-D every frame: the tied film
    # moves at least 3x less than independent fits over the film, and shows the classes as
    # well as they do in every frame. (Frames where classes come apart must move: the 3x is
    # over the whole film, as the benchmark's bar.)
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(11)
    n, dim = 300, 16
    labels = np.arange(n) % 3
    base = rng.normal(size=(n, dim))
    means = rng.normal(size=(3, dim))
    frames = []
    for sep in (0.0, 1.0, 2.0, 3.0, 3.0):
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        base = base + 0.05 * rng.normal(size=base.shape)
        frames.append(((base + sep * means[labels]) @ q).astype(np.float32))
    tied, free = Reducer("tsne", seed=0, align=True), Reducer("tsne", seed=0, align=False)
    a, b = [tied(frames[0])], [free(frames[0])]
    for x in frames[1:]:
        a.append(tied(x, a[-1]))
        b.append(free(x))
    move_a = np.mean([mean_move(a[t], a[t - 1]) for t in range(1, len(a))])
    move_b = np.mean([mean_move(b[t], b[t - 1]) for t in range(1, len(b))])
    assert move_b > 3 * move_a
    for t in range(len(frames)):
        assert abs(silhouette_score(a[t], labels) - silhouette_score(b[t], labels)) < 0.1, t
    assert silhouette_score(a[-1], labels) > 0.5  # the classes did come apart in the tied film


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(warm_exaggeration_iter=0), r"warm_exaggeration_iter=0 must be an integer from 1 to warm_iter \(250\)"),
        (dict(warm_iter=300, warm_exaggeration_iter=301), "warm_exaggeration_iter=301 must be an integer from 1 to warm_iter"),
        (dict(warm_iter=200), "warm_iter=200 must be an integer of at least 250"),
        (dict(warm_min_grad_norm=-1.0), "warm_min_grad_norm=-1.0 must be a number of at least 0"),
        (dict(warm_min_grad_norm=float("nan")), "warm_min_grad_norm=nan must be a number of at least 0"),
        (dict(warm_min_grad_norm=True), "warm_min_grad_norm=True must be a number"),
    ],
)
def test_bad_schedule_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        Reducer("tsne", **kw)
