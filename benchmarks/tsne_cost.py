"""What a t-SNE layout of 1,000 points costs, by schedule and library, and whether the
layouts gain from overlapping the next split's capture.

Vectors: every hidden state of 1,000 HatEval validation tweets (stratified, seed 0) from
the packaged all-MiniLM-L6-v2 with a fresh head, captured as the callback captures them
(``precision="auto"``) before and after ``--train-steps`` AdamW steps on other train
tweets: the second capture is laid out warm-started from the first one's layout, as a
later snapshot is.

1. Schedules (``layerwatch.reduce.Reducer``, one thread, each layer of the second capture;
   CPU seconds of this process, the fastest of ``--repeats``, so other work on the
   machine inflates them less than wall time):

   - fresh fits: 750 iterations (250 exaggerated; layerwatch's, unchanged), the same
     stopped once the KL gradient norm is at most 3e-3 (not chosen), sklearn's 1,000;
   - warm starts: the schedule before this change (400 iterations, 250 of them at
     momentum 0.5), today's (50 at momentum 0.5, then 0.8 until the KL gradient norm is
     at most 1e-3, checked every 50, 250 at most), and the same without the early stop
     (all 250) and with a higher threshold (3e-3, which let the films lag the vectors). Iterations run are printed with them.
   - openTSNE (BSD-3-Clause), when it is importable: the same fresh and warm schedules
     with its Barnes-Hut gradient (its FFT gradient pays off only on far more points),
     its affinities computed by its own exact and Annoy searches.

   How still the films hold and how faithful they are is ``benchmarks/alignment.py``'s.
2. Overlap: the layouts of the train split (a thread pool, ``n_jobs`` as the callback
   picks it) started before the capture of the validation split, against the two one
   after the other; wall seconds, interleaved, the fastest of ``--repeats``.

Nothing is asserted; figures and ratios are printed with the load average.

Usage::

    python benchmarks/tsne_cost.py                 # about 4 minutes on 2 idle cores
    python benchmarks/tsne_cost.py --only schedules --layers 2,6
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402

SECTIONS = ("schedules", "overlap")


def vectors(data_dir: str, rows: int, train_steps: int, seed: int = 0) -> dict:
    """Pooled vectors of the validation subset before and after a few training steps, and
    the train subset's after them (for the overlap section)."""
    import layerwatch
    from layerwatch.data import stratified_subset
    from snapshot_cost import _train_steps

    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path, seed)
    sets = {}
    for split in ("validation", "train"):
        texts, labels = common.read_split(data_dir, split)
        sets[split] = (common.tokenized_dataset(tok, texts, labels, padding=False), stratified_subset(labels, rows, seed))
    val, pick = sets["validation"]
    before = layerwatch.capture(model, val, indices=pick, precision="auto")
    _train_steps(model, tok, data_dir, train_steps, set(sets["train"][1].tolist()), seed)
    after = layerwatch.capture(model, val, indices=pick, precision="auto")
    return {"model": model, "sets": sets, "before": before, "after": after}


def _cpu(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        with common.CpuTimer() as t:
            out = fn()
        best = min(best, t.seconds)
    return best, out


# -- openTSNE (optional) ------------------------------------------------------------------
def _opentsne_fit(data: np.ndarray, warm: np.ndarray | None, search: str, seed: int = 0) -> np.ndarray:
    """layerwatch's schedules with openTSNE's optimiser (Barnes-Hut, one thread)."""
    from openTSNE import TSNEEmbedding, affinity, initialization

    from layerwatch.reduce import WARM_INIT_STD, normalize

    data = data.astype(np.float64)
    aff = affinity.PerplexityBasedNN(data, perplexity=30, method=search, n_jobs=1, random_state=seed, verbose=False)
    n = len(data)
    if warm is None:
        init = initialization.pca(data, random_state=seed)
        emb = TSNEEmbedding(init, aff, n_jobs=1, random_state=seed, negative_gradient_method="bh")
        emb = emb.optimize(n_iter=250, exaggeration=12, momentum=0.5, learning_rate=n / 12)
        return np.asarray(emb.optimize(n_iter=500, momentum=0.8, learning_rate=n))
    start = normalize(warm)
    init = (start * (WARM_INIT_STD / float(start.std(axis=0).max()))).astype(np.float64)
    emb = TSNEEmbedding(init, aff, n_jobs=1, random_state=seed, negative_gradient_method="bh")
    emb = emb.optimize(n_iter=50, momentum=0.5, learning_rate=n)
    return np.asarray(emb.optimize(n_iter=100, momentum=0.8, learning_rate=n))


def _fresh_early(x: np.ndarray, previous=None) -> np.ndarray:
    """A fresh fit as layerwatch's, stopped once the KL gradient norm is at most 3e-3."""
    from sklearn.manifold import TSNE

    from layerwatch.reduce import TSNE_PCA_DIMS, _pca, normalize

    data = _pca(x, TSNE_PCA_DIMS, 0) if x.shape[1] > TSNE_PCA_DIMS else x
    tsne = TSNE(2, perplexity=30.0, random_state=0, learning_rate="auto", init="pca", max_iter=750, min_grad_norm=3e-3)
    return normalize(tsne.fit_transform(data.astype(np.float32)))


def section_schedules(args, v: dict) -> None:
    from threadpoolctl import threadpool_limits

    from layerwatch.reduce import TSNE_PCA_DIMS, Reducer, _pca

    layers = [int(l) for l in args.layers.split(",")] if args.layers else list(range(v["after"].pooled.shape[0]))
    print(f"\n== 1. t-SNE schedules on {v['after'].num_rows} points, layers {layers}, one thread, CPU seconds "
          f"(fastest of {args.repeats}); load {common.load_average():.2f}")
    before, after = v["before"].pooled, v["after"].pooled
    old_warm = dict(warm_iter=400, warm_exaggeration_iter=250, warm_min_grad_norm=0.0)
    kinds = {
        "fresh, 750 iterations, 250 exaggerated (layerwatch, before and now)": (dict(), False),
        "fresh, 250 + until gradient <= 3e-3, at most 750 (not chosen)": ("early", False),
        "fresh, 1,000 (sklearn's default)": (dict(n_iter=1000), False),
        "warm, 400 iterations, 250 at momentum 0.5 (before)": (old_warm, True),
        "warm, 50 + until gradient <= 1e-3, at most 250 (now)": (dict(), True),
        "warm, 50 + 200, no early stop": (dict(warm_min_grad_norm=0.0), True),
        "warm, 50 + until gradient <= 3e-3, at most 250": (dict(warm_min_grad_norm=3e-3), True),
    }
    results: dict[str, list[float]] = {k: [] for k in kinds}
    iterations: dict[str, list[int]] = {k: [] for k in kinds}
    import sklearn.manifold

    real_fit = sklearn.manifold.TSNE.fit_transform

    def counting(self, *a, **k):
        out = real_fit(self, *a, **k)
        counting.n_iter = int(self.n_iter_) + 1
        return out

    sklearn.manifold.TSNE.fit_transform = counting
    with threadpool_limits(limits=1), common.quiet_warnings():
        for j in layers:
            for name, (kw, warm) in kinds.items():
                r = _fresh_early if kw == "early" else Reducer("tsne", seed=0, **kw)
                prev = Reducer("tsne", seed=0)(before[j]) if warm else None
                seconds, _ = _cpu(lambda: r(after[j], prev), args.repeats)
                results[name].append(seconds)
                iterations[name].append(counting.n_iter)
        if args.opentsne:
            try:
                import openTSNE
            except ImportError:
                print("openTSNE is not importable: its rows are left out (pip install openTSNE to measure it)")
            else:
                for search in ("exact", "annoy"):
                    for warm in (False, True):
                        name = f"openTSNE {'warm, 50 + 100' if warm else 'fresh, 250 + 500'} (Barnes-Hut, {search} neighbours)"
                        results[name], iterations[name] = [], []
                        for j in layers:
                            data = _pca(after[j], TSNE_PCA_DIMS, 0)
                            prev = Reducer("tsne", seed=0)(before[j]) if warm else None
                            seconds, _ = _cpu(lambda: _opentsne_fit(data, prev, search), args.repeats)
                            results[name].append(seconds)
                            iterations[name].append(150 if warm else 750)
                print(f"openTSNE {openTSNE.__version__}")
    sklearn.manifold.TSNE.fit_transform = real_fit
    base_fresh = np.mean(results["fresh, 750 iterations, 250 exaggerated (layerwatch, before and now)"])
    base_warm = np.mean(results["warm, 400 iterations, 250 at momentum 0.5 (before)"])
    rows = []
    for name, secs in results.items():
        ref = base_warm if "warm" in name else base_fresh
        per_it = np.sum(secs) / max(np.sum(iterations[name]), 1) * 1000
        rows.append([name, f"{np.mean(secs):.2f}", f"{np.mean(iterations[name]):.0f}", f"{per_it:.2f}", f"{ref / np.mean(secs):.2f}x"])
    common.print_table(rows, ["schedule", "CPU s per layout", "iterations", "ms per iteration (incl. set-up)", "speed-up"])
    print("speed-up: against the schedule before #18 of the same kind (warm or fresh)")
    n = 2 * after.shape[0]
    now_warm = np.mean(results["warm, 50 + until gradient <= 1e-3, at most 250 (now)"])
    print(f"a snapshot lays out 2 x {after.shape[0]} layers: later snapshots {n * now_warm:.1f} CPU s (before {n * base_warm:.1f}), "
          f"the first {n * base_fresh:.1f}")
    print("fresh fits stopped on the gradient keep the neighbourhoods but move the independent-fit reference of "
          "benchmarks/alignment.py (its silhouette bar then fails, for the old warm schedule too), so they keep 750")


def section_overlap(args, v: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from layerwatch import capture
    from layerwatch.config import LayerwatchConfig, resolve_jobs
    from layerwatch.reduce import Reducer, start_layouts

    jobs = max(1, resolve_jobs(LayerwatchConfig(output_dir=".")))
    train_ds, train_pick = v["sets"]["train"]
    val_ds, val_pick = v["sets"]["validation"]
    model = v["model"]
    train = capture(model, train_ds, indices=train_pick, precision="auto").pooled
    reducer = Reducer("tsne", seed=0)
    with common.quiet_warnings(), threadpool_limits(limits=1):
        previous = np.stack([reducer(p) for p in train])  # the frame before (fresh fits), not timed
    print(f"\n== 2. overlap: train's {train.shape[0]} warm layouts ({jobs} at once) and validation's capture "
          f"({len(val_pick)} rows, precision 'auto'), wall seconds, fastest of {args.repeats}")

    # As in a snapshot: the capture at torch's own thread count, each layout job holding
    # its own OpenMP threads to one (a per-thread setting, see layerwatch.reduce._job).
    def sequential() -> None:
        capture(model, val_ds, indices=val_pick, precision="auto")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            start_layouts(train, reducer, previous, pool=pool, threads=1)()

    def overlapped() -> None:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            collect = start_layouts(train, reducer, previous, pool=pool, threads=1)
            capture(model, val_ds, indices=val_pick, precision="auto")
            collect()

    times: dict[str, list[float]] = {"capture, then layouts": [], "layouts during the capture": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    with common.quiet_warnings():
        for _ in range(args.repeats):
            for name, fn in zip(times, (sequential, overlapped)):
                with common.Timer() as t, common.CpuTimer() as c:
                    fn()
                times[name].append(t.seconds)
                cpu[name].append(c.seconds)
                print(f"  {name}: {t.seconds:.1f} s (load {common.load_average():.2f})", flush=True)
    rows = [[k, f"{min(v):.1f}", " ".join(f"{x:.1f}" for x in v), f"{min(cpu[k]):.1f}"] for k, v in times.items()]
    common.print_table(rows, ["", "fastest s", "runs", "CPU s"])
    a, b = (min(v) for v in times.values())
    print(f"overlap gains {a / b:.2f}x (wall, fastest runs; load {common.load_average():.2f}); "
          f"{os.cpu_count()} CPUs: the capture's torch threads and the layouts' threads share them")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--train-steps", type=int, default=30, help="training steps between the two captures (default: %(default)s)")
    parser.add_argument("--layers", default="", help="comma-separated hidden-state positions for section 1 (default: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--no-opentsne", dest="opentsne", action="store_false", help="leave openTSNE out even where it is installed")
    args = parser.parse_args(argv)
    wanted = common.sections(parser, args.only, SECTIONS)
    common.require_data(args.data)
    common.model_path()
    import torch

    print(f"t-SNE layout cost; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    common.print_load()
    started = time.perf_counter()
    v = vectors(args.data, args.rows, args.train_steps)
    print(f"vectors captured ({time.perf_counter() - started:.0f} s)")
    for name in SECTIONS:
        if name in wanted:
            globals()[f"section_{name}"](args, v)
    common.print_load(" at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
