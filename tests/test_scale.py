"""Runs that scale: the t-SNE backend chosen by rows and by what is installed, openTSNE's
warm starts, the backend named in run.json and ``layerwatch info``, and stores that keep
less (float16 vectors; the vectors of the first and latest snapshots only).

Small synthetic data and one tiny trained run per setting; ``benchmarks/scale.py``
measures the same at 1,000 and 10,000 rows.
"""

from __future__ import annotations

import csv
import json
import re
import warnings

import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import reduce as reduce_mod
from layerwatch.reduce import OPENTSNE_MIN_ROWS, Reducer
from layerwatch.measures.embeddings.files import has_vectors, load_layout, load_snapshot, save_snapshot

FAST_TSNE = dict(n_iter=250, warm_iter=250, exaggeration_iter=100)


@pytest.fixture(autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def blobs(n: int = 150, dim: int = 20, classes: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 4.0
    return (centres[np.arange(n) % classes] + rng.normal(size=(n, dim))).astype(np.float32)


def mean_move(a: np.ndarray, b: np.ndarray) -> float:
    from layerwatch.reduce import normalize

    return float(np.linalg.norm(normalize(a) - normalize(b), axis=1).mean())


# -- which library lays out a map ------------------------------------------------------------
@pytest.mark.parametrize("installed", [True, False])
def test_tsne_backend_follows_the_rows_and_what_is_installed(monkeypatch, installed):
    monkeypatch.setattr(reduce_mod, "has_opentsne", lambda: installed)
    auto = Reducer("tsne")
    assert auto.backend_for(OPENTSNE_MIN_ROWS - 1) == "sklearn"
    assert auto.backend_for(OPENTSNE_MIN_ROWS) == ("opentsne" if installed else "sklearn")
    assert Reducer("tsne", backend="sklearn").backend_for(10 * OPENTSNE_MIN_ROWS) == "sklearn"
    # PCA is scikit-learn's at any size; UMAP is umap-learn's (where umap is installed).
    assert Reducer("pca").backend_for(10 * OPENTSNE_MIN_ROWS) == "sklearn"
    assert auto.describe({"train": OPENTSNE_MIN_ROWS, "validation": 100}) == {
        "method": "tsne", "aligned": True,
        "backend": {"train": "openTSNE (FFT)" if installed else "scikit-learn", "validation": "scikit-learn"},
    }


def test_without_opentsne_large_splits_fall_back_to_sklearn_with_one_note(monkeypatch):
    monkeypatch.setattr(reduce_mod, "has_opentsne", lambda: False)
    monkeypatch.setattr(reduce_mod, "OPENTSNE_MIN_ROWS", 60)
    x = blobs(n=60)
    r = Reducer("tsne", seed=0, **FAST_TSNE)
    with pytest.warns(UserWarning, match=r"openTSNE is not installed, so 60 rows are laid out by scikit-learn's") as seen:
        first = r(x)
        r(x, first)
    assert len([w for w in seen if "openTSNE" in str(w.message)]) == 1  # one line, not one per map
    np.testing.assert_array_equal(first, Reducer("tsne", seed=0, backend="sklearn", **FAST_TSNE)(x))


def test_opentsne_asked_for_but_missing_gives_an_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_opentsne(name, *args, **kw):
        if name == "openTSNE" or name.startswith("openTSNE."):
            raise ImportError("No module named 'openTSNE'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_opentsne)
    with pytest.raises(ImportError, match=r"pip install 'layerwatch\[scale\]'"):
        Reducer("tsne", backend="opentsne")
    assert reduce_mod.has_opentsne() is False


def test_a_backend_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="backend='bh' is not one of 'auto', 'sklearn', 'opentsne', 'torchdr'"):
        Reducer("tsne", backend="bh")


# -- openTSNE: same schedule, same ties -------------------------------------------------------
def test_opentsne_layout_is_seeded_faithful_and_tied():
    pytest.importorskip("openTSNE")
    from sklearn.manifold import trustworthiness

    x = blobs(n=150)
    r = Reducer("tsne", seed=0, backend="opentsne", **FAST_TSNE)
    first = r(x)
    assert first.shape == (150, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(r(x), first)  # seeded: the same input, the same map
    assert trustworthiness(x, first, n_neighbors=10) > 0.9
    # Known answer: the same vectors warm-started from their own layout (turned) barely move;
    # an independent fit from a turned previous frame moves the whole turn.
    c, s = np.cos(2.0), np.sin(2.0)
    prev = first @ np.array([[c, -s], [s, c]], dtype=np.float32)
    tied = r(x, prev)
    free = Reducer("tsne", seed=0, align=False, backend="opentsne", **FAST_TSNE)(x, prev)
    assert mean_move(tied, prev) < 0.25
    assert mean_move(free, prev) > 1.0
    # Vectors that changed are followed: the classes of new, separated vectors are separated
    # in the warm-started map as well as in a fresh one.
    from sklearn.metrics import silhouette_score

    labels = np.arange(150) % 3
    mixed = blobs(n=150, seed=1) * np.float32(0.1) + np.random.default_rng(2).normal(size=(150, 20)).astype(np.float32)
    moved = r(blobs(n=150, seed=1), r(mixed))
    fresh = r(blobs(n=150, seed=1))
    assert silhouette_score(moved, labels) > silhouette_score(fresh, labels) - 0.1


def test_exact_neighbours_are_scikit_learns_and_give_annoys_affinities():
    from sklearn.neighbors import NearestNeighbors

    from layerwatch.reduce import nearest_neighbours

    x = blobs(n=300, dim=12)
    idx, dist = nearest_neighbours(x, 9, block=64)  # blocks that do not divide the rows
    want_d, want_i = NearestNeighbors(n_neighbors=10).fit(x).kneighbors(x)
    np.testing.assert_array_equal(idx, want_i[:, 1:])
    np.testing.assert_allclose(dist, want_d[:, 1:], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(dist, axis=1) >= 0) and not (idx == np.arange(300)[:, None]).any()
    pytest.importorskip("openTSNE")
    from openTSNE import affinity
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    exact = affinity.PerplexityBasedNN(knn_index=PrecomputedNeighbors(*nearest_neighbours(x, 90)), perplexity=30, n_jobs=1)
    annoy = affinity.PerplexityBasedNN(x, perplexity=30, method="annoy", n_jobs=1, random_state=0)
    assert abs(exact.P - annoy.P).sum() < 0.02  # the same affinities (Annoy's neighbours are nearly exact here)


def test_opentsne_warm_start_stops_on_the_kl_gradient(monkeypatch):
    pytest.importorskip("openTSNE")
    from openTSNE import TSNEEmbedding

    runs: list[int] = []
    real = TSNEEmbedding.optimize

    def recording(self, n_iter, *args, callbacks=None, **kw):
        if callbacks:
            def counting(iteration, error, embedding, inner=callbacks[0]):
                runs.append(iteration)
                return inner(iteration, error, embedding)
            callbacks = [counting]
        return real(self, n_iter, *args, callbacks=callbacks, **kw)

    monkeypatch.setattr(TSNEEmbedding, "optimize", recording)
    x = blobs(n=120)
    first = Reducer("tsne", seed=0, backend="opentsne", **FAST_TSNE)(x)
    assert runs == []  # fresh fits run their whole schedule
    # A stop that any gradient meets ends the warm start at the first check (50 iterations).
    Reducer("tsne", seed=0, backend="opentsne", warm_min_grad_norm=1e9, **FAST_TSNE)(x, first)
    assert runs == [50]
    runs.clear()
    Reducer("tsne", seed=0, backend="opentsne", warm_min_grad_norm=1e-12, **FAST_TSNE)(x, first)
    assert runs == [50, 100, 150, 200]  # never met: the whole warm schedule (250 - 50 iterations, checked every 50)


# -- run.json and info name the backend ---------------------------------------------------------
def watched_run(out, **settings):
    from layerwatch import LayerwatchCallback

    train, val = toy_dataset(40), toy_dataset(24, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, out / "lw", method="pca", progress=False, **settings)
    make_trainer(tiny_bert(), train, [watch], out / "t", epochs=2).train()
    return out / "lw"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run twice: default stores, and float16 vectors of the first and latest
    snapshots only."""
    plain = watched_run(tmp_path_factory.mktemp("plain"))
    lean = watched_run(tmp_path_factory.mktemp("lean"), store_dtype="float16", keep_vectors="drift")
    return plain, lean


def test_run_json_and_info_name_the_backend_of_each_split(runs, capsys):
    from layerwatch.cli import main
    from layerwatch.store import RunStore, SnapshotKey

    plain, _ = runs
    info = json.loads((plain / "run.json").read_text())
    assert info["methods"]["embeddings"]["layout"] == {
        "method": "pca", "aligned": True, "backend": {"train": "scikit-learn", "validation": "scikit-learn"},
    }
    assert str(load_layout(RunStore(plain), "train", SnapshotKey(1))["backend"]) == "scikit-learn"
    assert main(["info", str(plain)]) == 0
    assert "layouts: 'train' by scikit-learn, 'validation' by scikit-learn" in capsys.readouterr().out


def test_the_embeddings_measurement_names_opentsne_for_large_splits(monkeypatch):
    from layerwatch.config import LayerwatchConfig
    from layerwatch.measures.embeddings.measure import EmbeddingsMeasurement
    from layerwatch.model_info import ModelInfo

    monkeypatch.setattr(reduce_mod, "has_opentsne", lambda: True)
    m = EmbeddingsMeasurement(LayerwatchConfig(output_dir="unused"))
    m.prepare(None, ModelInfo(indices={"train": range(OPENTSNE_MIN_ROWS), "validation": range(300)}))
    assert m.describe()["layout"]["backend"] == {"train": "openTSNE (FFT)", "validation": "scikit-learn"}


# -- stores that keep less -------------------------------------------------------------------------
def read_metrics(run) -> list[tuple]:
    with open(run / "metrics.csv", newline="") as fh:
        return sorted(tuple(r.values()) for r in csv.DictReader(fh))


def test_float16_stores_and_thinned_vectors_leave_every_metric_unchanged(runs):
    plain, lean = runs
    # Metrics, drift included, are computed from the float32 vectors before storing.
    rows = read_metrics(plain)
    assert {r[4] for r in rows} >= {"knn_accuracy", "cka_first", "cka_prev"}
    assert read_metrics(lean) == rows


def test_float16_stores_read_back_as_float32_within_half_precision(runs):
    from layerwatch.store import RunStore, SnapshotKey

    plain, lean = runs
    with np.load(lean / "embeddings" / "validation" / "epoch_002.npz") as z:
        assert z["pooled"].dtype == np.float16
    a = load_snapshot(RunStore(plain), "validation", SnapshotKey(2)).pooled
    b = load_snapshot(RunStore(lean), "validation", SnapshotKey(2)).pooled
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=2e-3, atol=1e-3)
    assert (lean / "embeddings" / "validation" / "epoch_002.npz").stat().st_size < 0.7 * (
        plain / "embeddings" / "validation" / "epoch_002.npz").stat().st_size


def _knn2(x, k: int = 5) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def _recall(high: np.ndarray, layout: np.ndarray, k: int = 5) -> float:
    low = _knn2(np.asarray(layout, np.float64), k)
    return float((high[:, :, None] == low[:, None, :]).any(axis=2).mean())


def test_layouts_rendered_again_from_a_float16_store_meet_the_bars_of_a_float32_one(runs, tmp_path):
    """``layerwatch render --method tsne`` of the same run stored in float32 and in float16
    (its vectors written again through ``RunStore`` with ``dtype="float16"``, what
    ``store_dtype="float16"`` writes): the float16 films keep the float32 films' neighbours
    (recall of the float32 vectors' neighbours at least 90% of theirs), their classes' 2-D
    separation (silhouette within 0.1 on average: single panels of 24-40 points are noise)
    and their stillness (frame-to-frame movement at most 1.5 times theirs); the bars of
    docs/costs.md. The metrics computed again from float16 vectors differ by float16's
    rounding only."""
    import shutil

    from sklearn.metrics import silhouette_score

    from layerwatch.cli import main
    from layerwatch.reduce import normalize
    from layerwatch.store import RunStore, SnapshotKey

    plain, _ = runs
    full, half = tmp_path / "full", tmp_path / "half"
    shutil.copytree(plain, full)
    shutil.copytree(plain, half)
    store = RunStore(half)
    for split in ("train", "validation"):
        for key in store.keys(split):
            snap = load_snapshot(store, split, key)
            save_snapshot(store, snap, SnapshotKey(snap.epoch, snap.step), dtype="float16")
    with np.load(half / "embeddings" / "validation" / "epoch_001.npz") as z:
        assert z["pooled"].dtype == np.float16
    for run in (full, half):
        assert main(["render", str(run), "--method", "tsne"]) == 0
    a, b = RunStore(full), RunStore(half)
    gaps = []
    for split in ("train", "validation"):
        keys = a.keys(split)
        assert [k.name for k in b.keys(split)] == [k.name for k in keys]
        moves = {"float32": [], "float16": []}
        for t, key in enumerate(keys):
            vectors = load_snapshot(a, split, key)  # the float32 vectors: what both films must show
            la, lb = load_layout(a, split, key)["layout"], load_layout(b, split, key)["layout"]
            for j in range(la.shape[0]):
                high = _knn2(vectors.pooled[j])
                assert _recall(high, lb[j]) >= 0.9 * _recall(high, la[j]), (split, key.name, j)
                gaps.append(abs(silhouette_score(lb[j], vectors.labels) - silhouette_score(la[j], vectors.labels)))
                if t:
                    for name, s in (("float32", a), ("float16", b)):
                        prev = load_layout(s, split, keys[t - 1])["layout"][j]
                        now = load_layout(s, split, key)["layout"][j]
                        moves[name].append(float(np.linalg.norm(normalize(now) - normalize(prev), axis=1).mean()))
        assert np.mean(moves["float16"]) <= 1.5 * np.mean(moves["float32"]), moves
    assert np.mean(gaps) <= 0.1, gaps
    # Rendered again, the metrics are computed from the stored vectors: float16's rounding.
    _same_metrics(read_metrics(half), read_metrics(full), 0.02)


def _same_metrics(a: list, b: list, atol: float) -> None:
    assert [r[:5] for r in a] == [r[:5] for r in b]
    np.testing.assert_allclose([float(r[5]) for r in a], [float(r[5]) for r in b], rtol=0, atol=atol)


def test_keep_vectors_drift_keeps_the_first_and_latest_vectors_and_everything_else(runs, capsys):
    from layerwatch.cli import main
    from layerwatch.store import RunStore, SnapshotKey, VectorsNotKept

    _, lean = runs
    store = RunStore(lean)
    for split in ("train", "validation"):
        assert [k.name for k in store.keys(split)] == ["epoch_000", "epoch_001", "epoch_002"]
        assert [has_vectors(store, split, k) for k in store.keys(split)] == [True, False, True]
        with pytest.raises(VectorsNotKept, match="kept those of its first and latest snapshots only"):
            load_snapshot(store, split, SnapshotKey(1))
        middle = load_snapshot(store, split, SnapshotKey(1), pooled=False)  # rows, labels, predictions stay
        assert len(middle.indices) == (40 if split == "train" else 24) and middle.predictions is not None
        assert load_layout(store, split, SnapshotKey(1))["layout"].shape[1] == len(middle.indices)
        assert len(list((lean / "frames" / split).iterdir())) == 3
    assert main(["info", str(lean)]) == 0
    capsys.readouterr()
    # render would have to lay every snapshot out again: a clear refusal, nothing rewritten.
    before = (lean / "validation.gif").read_bytes()
    assert main(["render", str(lean), "--method", "pca"]) == 2
    assert "kept the pooled vectors of its first and latest snapshots only" in capsys.readouterr().err
    assert (lean / "validation.gif").read_bytes() == before


def test_info_of_a_thinned_run_whose_latest_snapshot_lost_its_vectors(runs, tmp_path, capsys):
    """keep_vectors='drift' and a resume to an earlier snapshot (the snapshots after it go to
    superseded/): the latest snapshot left holds no vectors; info still tells the run."""
    import shutil

    from layerwatch.cli import main, summarize

    _, lean = runs
    run = tmp_path / "lw"
    shutil.copytree(lean, run)
    for split in ("train", "validation"):
        (run / "embeddings" / split / "epoch_002.npz").unlink()
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "split 'train': 2 snapshots (epoch 0, epoch 1), 40 rows, layers [0, 1, 2], hidden 16" in out
    assert "split 'validation': 2 snapshots (epoch 0, epoch 1), 24 rows, layers [0, 1, 2], hidden 16" in out
    assert summarize(str(run))["damaged"] == []


@pytest.mark.parametrize("setting, value, allowed", [
    ("store_dtype", "float64", "'float32', 'float16'"),
    ("keep_vectors", "none", "'all', 'drift'"),
])
def test_store_settings_are_checked_at_construction(setting, value, allowed):
    from layerwatch.config import LayerwatchConfig

    with pytest.raises(ValueError, match=f"{setting}='{value}' is not one of {allowed}"):
        LayerwatchConfig(output_dir="unused", **{setting: value})


def test_vectors_beyond_float16_range_are_stored_in_float32(tmp_path, caplog):
    from layerwatch.snapshot import Snapshot
    from layerwatch.store import RunStore, SnapshotKey

    store = RunStore(tmp_path)
    pooled = np.ones((2, 3, 4), dtype=np.float32)
    pooled[1, 0, 0] = 1e6  # fp32 activations can exceed float16's 65504
    snap = Snapshot(pooled=pooled, labels=np.zeros(3, int), layers=[0, 1], indices=[0, 1, 2], epoch=0, step=0, split="train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_snapshot(store, snap, SnapshotKey(0), dtype="float16")
    assert "beyond float16's range" in caplog.text
    np.testing.assert_array_equal(load_snapshot(store, "train", SnapshotKey(0)).pooled, pooled)


# -- what the console says at this size ----------------------------------------------------------
class _Tty:
    """A stream that says it is a terminal and keeps what was written."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_names_the_layers_being_laid_out_and_the_time_left(monkeypatch):
    from layerwatch import progress as progress_mod
    from layerwatch.progress import Progress

    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: clock[0])
    first = Progress("epoch 0", 10, stream=_Tty())
    texts = []
    monkeypatch.setattr(first.bar, "set_description_str", lambda desc=None, refresh=True: texts.append(desc))
    # The first snapshot: nothing to go by until a layer is done, then the split's own pace.
    first.layouts("embeddings", "validation", [0, 1], 0, 7, 0.0)
    first.layouts("embeddings", "validation", [2, 3], 2, 7, 8.0)
    assert texts == [
        "layerwatch epoch 0: embeddings: laying out validation, layers 0, 1 (0 of 7 done)",
        "layerwatch epoch 0: embeddings: laying out validation, layers 2, 3 (2 of 7 done) (about 20 s left for validation's layouts)",
    ]
    # A later snapshot: by the time the previous one took.
    later = Progress("epoch 1", 10, stream=_Tty(), expected=150.0)
    monkeypatch.setattr(later.bar, "set_description_str", lambda desc=None, refresh=True: texts.append(desc))
    clock[0] += 40.0
    later.layouts("embeddings", "train", [5], 4, 7, 30.0)
    assert texts[-1] == "layerwatch epoch 1: embeddings: laying out train, layer 5 (4 of 7 done) (about 1 min 50 s left for the snapshot)"
    clock[0] += 200.0  # longer than the last one: no estimate rather than a false one
    later.working("embeddings")
    assert texts[-1] == "layerwatch epoch 1: embeddings"
    for p in (first, later):
        p.close()


def test_one_bar_per_snapshot_tells_every_layer_of_every_split_and_the_time_left(tmp_path, monkeypatch):
    import tqdm

    from layerwatch import LayerwatchCallback
    from layerwatch import progress as progress_mod

    bars = []

    class Recording(tqdm.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.texts = []
            bars.append(self)

        def set_description_str(self, desc=None, refresh=True):
            self.texts.append(desc)
            super().set_description_str(desc, refresh)

    monkeypatch.setattr(progress_mod, "_is_terminal", lambda stream: True)
    monkeypatch.setattr(tqdm, "tqdm", Recording)
    train, val = toy_dataset(16), toy_dataset(8, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=True, n_jobs=1)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    assert len(bars) == 2  # one per snapshot
    for bar, epoch in zip(bars, (0, 1)):
        said = [t.split(" (about")[0] for t in bar.texts]
        for split in ("train", "validation"):
            laid = [t for t in said if t.startswith(f"layerwatch epoch {epoch}: embeddings: laying out {split}, layer ")]
            assert laid == [f"layerwatch epoch {epoch}: embeddings: laying out {split}, layer {j} ({j} of 3 done)" for j in range(3)]
    # The second snapshot says from its start how long it will take (the first one's time);
    # the first has nothing to go by but its layers' pace.
    assert re.fullmatch(r"layerwatch epoch 1: capture train \(about \d+ s left for the snapshot\)", bars[1].texts[0])
    assert not any("left for the snapshot" in t for t in bars[0].texts)


def test_off_a_terminal_each_split_laid_out_is_one_line(tmp_path, capsys):
    from layerwatch import LayerwatchCallback

    train, val = toy_dataset(16), toy_dataset(8, seed=1)
    watch = LayerwatchCallback({"train": train, "validation": val}, tmp_path / "lw", method="pca", progress=True)
    make_trainer(tiny_bert(), train, [watch], tmp_path / "t", epochs=1).train()
    lines = [l.split(" [")[0] for l in capsys.readouterr().err.splitlines() if l.startswith("layerwatch epoch 1:")]
    assert sorted(l for l in lines if "laid out" in l) == [
        "layerwatch epoch 1: laid out train (3 layers, 16 rows)",
        "layerwatch epoch 1: laid out validation (3 layers, 8 rows)",
    ]


# -- layouts on the GPU where training has one --------------------------------------------------
@pytest.mark.parametrize("usable", [True, False])
def test_a_model_on_cuda_lays_out_there_when_it_can_else_on_the_cpu_with_one_note(monkeypatch, usable):
    monkeypatch.setattr(reduce_mod, "gpu_unavailable_reason", lambda: None if usable else "torchdr is not installed (pip install 'layerwatch[gpu]')")
    monkeypatch.setattr(reduce_mod, "has_opentsne", lambda: False)
    gpu = Reducer("tsne", device="cuda:0", **FAST_TSNE)
    assert gpu.backend_for(300) == ("torchdr" if usable else "sklearn")
    assert gpu.describe({"validation": 300})["backend"] == {"validation": "TorchDR (GPU)" if usable else "scikit-learn"}
    # The CPU never goes to the GPU path; a backend asked for by name is kept; PCA stays PCA.
    assert Reducer("tsne", device="cpu").backend_for(300) == "sklearn"
    assert Reducer("tsne", device="cuda", backend="sklearn").backend_for(300) == "sklearn"
    assert Reducer("pca", device="cuda").backend_for(300) == "sklearn"
    if not usable:
        x = blobs(n=60)
        with pytest.warns(UserWarning) as seen:
            first = gpu(x)
            gpu(x, first)
        notes = [str(w.message) for w in seen if "cuda" in str(w.message)]
        assert notes == [
            "layerwatch: the model is on cuda:0 but torchdr is not installed (pip install 'layerwatch[gpu]'), "
            "so t-SNE layouts run on the CPU (scikit-learn)"
        ]
        np.testing.assert_array_equal(first, Reducer("tsne", seed=0, backend="sklearn", **FAST_TSNE)(x))


def test_the_embeddings_measurement_lays_out_on_the_models_device():
    import torch

    from layerwatch.config import LayerwatchConfig
    from layerwatch.measures.embeddings.measure import EmbeddingsMeasurement
    from layerwatch.model_info import ModelInfo

    m = EmbeddingsMeasurement(LayerwatchConfig(output_dir="unused"))
    m.prepare(torch.nn.Linear(2, 2), ModelInfo(indices={"train": range(10)}))
    assert m.reducer.device == "cpu"
    m.prepare(torch.nn.Linear(2, 2, device="meta"), ModelInfo(indices={"train": range(10)}))
    assert m.reducer.device == "meta" and m.reducer.backend_for(10) == "sklearn"


def test_torchdr_lays_out_separated_clusters_apart_and_holds_a_warm_start_still():
    pytest.importorskip("torchdr")
    from sklearn.metrics import silhouette_score

    x = blobs(n=120)
    labels = np.arange(120) % 3
    r = Reducer("tsne", seed=0, backend="torchdr", device="cpu", **FAST_TSNE)
    first = r(x)
    assert first.shape == (120, 2) and np.isfinite(first).all()
    assert silhouette_score(first, labels) > 0.6  # known answer: well-separated clusters stay apart
    c, s = np.cos(2.0), np.sin(2.0)
    prev = first @ np.array([[c, -s], [s, c]], dtype=np.float32)
    assert mean_move(r(x, prev), prev) < 0.25  # the same vectors, warm-started: they barely move


def test_torchdr_asked_for_but_missing_gives_an_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchdr(name, *args, **kw):
        if name == "torchdr" or name.startswith("torchdr."):
            raise ImportError("No module named 'torchdr'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torchdr)
    with pytest.raises(ImportError, match=r"pip install 'layerwatch\[gpu\]'"):
        Reducer("tsne", backend="torchdr")
    assert reduce_mod.gpu_unavailable_reason() == "torchdr is not installed (pip install 'layerwatch[gpu]')"
