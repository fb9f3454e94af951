"""How capture and reduction grow with rows, layers and hidden size.

For each model and row count, in a fresh process: ``layerwatch.capture`` of N HatEval
tweets (train, then validation and test past 9,000), then every layer laid out with
``layerwatch.reduce.Reducer`` by PCA and by t-SNE (fresh fits, no warm start). Each step
reports wall time and peak RSS growth (sampled about every millisecond). Models:

- ``minilm``: the packaged all-MiniLM-L6-v2 (6 layers, hidden 384: 7 hidden states);
- ``bert-base``: ``BertConfig()`` with random weights (12 layers, hidden 768: 13 hidden
  states), built in code, no download; its pictures mean nothing, its costs are real.

t-SNE above ``--tsne-full-max`` rows is run on ONE layer and multiplied by the number of
layers; such cells are marked ``~`` (extrapolated). The seed's capture memory (every token
of every layer, padded to 64, and the copy ``torch.cat`` makes) is computed, not run:
it would not fit in memory at the larger sizes.

``--layouts``: the t-SNE backends instead. scikit-learn's Barnes-Hut against openTSNE's
FFT-accelerated gradients (``Reducer(backend=...)``, the same schedule for both) on
MiniLM's real vectors (``--vectors minilm``, the default: the first 10,000 HatEval tweets
captured before fine-tuning and after each of two short epochs on 600 other tweets, kept
in ``--cache-dir``), or on vectors built like ``benchmarks/alignment.py``'s synthetic run
(``--vectors synthetic``: classes that separate never, gradually or late while every
point drifts and the whole cloud turns; any number of layers and dimensions, such as
BERT-base's 13 x 768), at each of ``--layout-rows``.
For each backend and size: the seconds (wall and CPU) of the first snapshot's fresh maps
and of a later snapshot's warm-started maps (all layers, one at a time, one thread each),
and the alignment bars of docs/costs.md against the same backend's independent fits
(moves >= 3x less, neighbour recall >= 90% of independent, 2-D silhouette within 0.1).

Usage::

    python benchmarks/scale.py                  # 1k, 3k, 10k rows; MiniLM and BERT-base
    python benchmarks/scale.py --models minilm  # MiniLM only
    python benchmarks/scale.py --quick          # 300 and 1,000 rows, MiniLM only
    python benchmarks/scale.py --layouts        # t-SNE backends at 1,000 and 10,000 rows of MiniLM, 7 x 384 (long)
    python benchmarks/scale.py --layouts --vectors synthetic --layout-rows 10000 --layout-layers 13 \
        --layout-dim 768 --backends opentsne   # BERT-base's shapes
    python benchmarks/scale.py --layouts --layout-rows 1000 --layout-layers 1 --epochs 2   # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

MODELS = ("minilm", "bert-base")


def _measure(model_name: str, data_dir: str, n: int, methods: tuple, tsne_full_max: int, batch_size: int) -> dict:
    """Capture and reduce ``n`` rows (in a fresh process)."""
    import numpy as np

    from layerwatch import capture
    from layerwatch.reduce import Reducer, reduce_layers

    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path) if model_name == "minilm" else common.random_bert_base()
    texts, labels = common.read_rows(data_dir, n)
    ds = common.tokenized_dataset(tok, texts, labels, padding=False)
    with common.PeakRSS() as mem, common.Timer() as t:
        snap = capture(model, ds, batch_size=batch_size, progress=False)
    out = {"capture_s": t.seconds, "capture_mem": mem.growth, "pooled": snap.pooled.nbytes,
           "states": snap.num_layers, "hidden": int(snap.pooled.shape[2])}
    for method in methods:
        reducer = Reducer(method, seed=0)
        pooled = snap.pooled
        factor = 1
        if method == "tsne" and n > tsne_full_max:
            pooled, factor = snap.pooled[-1:], snap.num_layers
        with common.quiet_warnings(), common.PeakRSS() as mem, common.Timer() as t:
            layout, problems = reduce_layers(pooled, reducer)
        out[method] = {"s": t.seconds * factor, "mem": mem.growth, "extrapolated": factor > 1, "ok": not problems and bool(np.isfinite(layout).all())}
    return out


def _layer_vectors(n: int, layers: int, dim: int, epochs: int, seed: int = 0):
    """(epochs of (layers, n, dim) float32, labels): alignment.py's synthetic layers, as many as asked."""
    import numpy as np

    import alignment

    runs, got = [], 0
    while got < layers:
        run = alignment.synthetic_run(n=n, dim=dim, epochs=epochs, seed=seed + len(runs))
        runs.append(run)
        got += len(run.layer_names)
    pooled = [np.concatenate([r.pooled[t] for r in runs])[:layers] for t in range(epochs)]
    return pooled, runs[0].labels


def minilm_vectors(data_dir: str, cache_dir: str, n: int, epochs: int, train_rows: int = 600, seed: int = 0):
    """(epochs of (7, n, 384) float32, labels): real MiniLM vectors of ``n`` HatEval tweets.

    The first ``n`` tweets (train, then validation) captured by ``layerwatch.capture``
    (``precision="auto"``, as the callback does) with the packaged all-MiniLM-L6-v2 before
    fine-tuning and after each of ``epochs - 1`` epochs on ``train_rows`` other tweets
    (stratified from the test split; AdamW, lr 1e-4, batch 16): the vectors change between
    snapshots as a fine-tuning run's do. Stored in ``cache_dir`` through ``RunStore`` and
    read back when a previous run with the same settings left them there.
    """
    import numpy as np

    from layerwatch import RunStore, capture
    from layerwatch.data import stratified_subset
    from layerwatch.snapshot import SnapshotKey

    store = RunStore(cache_dir)
    keys = [SnapshotKey(e) for e in range(epochs)]
    settings = f"{n} tweets, {epochs} snapshots, {train_rows} training tweets, seed {seed}"
    stamp = os.path.join(cache_dir, "scale-benchmark.txt")
    stored = os.path.exists(stamp) and open(stamp, encoding="utf-8").read() == settings
    if not (stored and all(os.path.exists(store.embedding_path("rows", k)) for k in keys)):
        import torch

        path = common.model_path()
        tok = common.load_tokenizer(path)
        model = common.load_classifier(path, seed)
        texts, labels = common.read_rows(data_dir, n)
        ds = common.tokenized_dataset(tok, texts, labels, padding=False)
        test_text, test_y = common.read_split(data_dir, "test")
        pick = stratified_subset(test_y, train_rows, seed)
        train_ids = tok([test_text[i] for i in pick], truncation=True, max_length=common.MAX_LENGTH)["input_ids"]
        train_y = test_y[pick]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            if epoch:
                model.train()
                order = rng.permutation(len(train_ids))
                for start in range(0, len(order), 16):
                    rows = order[start : start + 16]
                    ids, mask = common.padded_batch(train_ids, rows)
                    model(input_ids=ids, attention_mask=mask, labels=torch.tensor(train_y[rows])).loss.backward()
                    opt.step()
                    opt.zero_grad()
                model.eval()
            snap = capture(model, ds, batch_size=64, split="rows", precision="auto")
            store.save_snapshot(snap, keys[epoch])
            print(f"  snapshot {epoch} of {n:,} tweets captured", flush=True)
        with open(stamp, "w", encoding="utf-8") as fh:
            fh.write(settings)
    snaps = [store.load_snapshot("rows", k) for k in keys]
    return [s.pooled for s in snaps], snaps[0].labels


def _backend_figures(pooled: list, labels, backend: str, align: bool, device: str = "cpu") -> dict:
    """Lay out every layer of every epoch; time the fresh first epoch and the later ones."""
    import numpy as np

    import alignment
    from layerwatch.reduce import Reducer

    reducer = Reducer("tsne", seed=0, align=align, backend=backend, device=device)
    n_layers, n_epochs = pooled[0].shape[0], len(pooled)
    layouts = [[None] * n_epochs for _ in range(n_layers)]
    wall, cpu = np.zeros(n_epochs), np.zeros(n_epochs)
    for t in range(n_epochs):
        for j in range(n_layers):
            prev = layouts[j][t - 1] if t else None
            w0, c0 = time.perf_counter(), time.process_time()
            layouts[j][t] = reducer(pooled[t][j], prev)
            wall[t] += time.perf_counter() - w0
            cpu[t] += time.process_time() - c0
    move = np.full((n_layers, n_epochs), np.nan)
    recall, sil = np.zeros((n_layers, n_epochs)), np.zeros((n_layers, n_epochs))
    for j in range(n_layers):
        for t in range(n_epochs):
            if t:
                move[j, t] = alignment.movement(layouts[j][t], layouts[j][t - 1])
            recall[j, t] = alignment.neighbour_recall(alignment.knn_indices(pooled[t][j]), layouts[j][t])
            sil[j, t] = alignment.silhouette_2d(layouts[j][t], labels)
    return {"wall": wall, "cpu": cpu, "figures": alignment.Figures(move, recall, sil, float(wall.sum()), float(cpu.sum()))}


def _measure_layouts(n: int, layers: int, dim: int, epochs: int, backends: tuple, vectors: str = "synthetic",
                     data_dir: str = "", cache_dir: str = "") -> dict:
    """Every backend, tied and independent, on the same vectors (in a fresh process)."""
    import alignment
    from layerwatch.reduce import thread_limit

    if vectors == "minilm":
        pooled, labels = minilm_vectors(data_dir, cache_dir, max(n, 10000), epochs)
        pooled = [p[:layers, :n] for p in pooled]
        labels = labels[:n]
    else:
        pooled, labels = _layer_vectors(n, layers, dim, epochs)
    out = {}
    with common.quiet_warnings(), thread_limit(1):
        for backend in backends:
            tied = _backend_figures(pooled, labels, backend, True)
            free = _backend_figures(pooled, labels, backend, False)
            out[backend] = {
                "fresh_wall": float(tied["wall"][0]), "fresh_cpu": float(tied["cpu"][0]),
                "warm_wall": float(tied["wall"][1:].mean()), "warm_cpu": float(tied["cpu"][1:].mean()),
                "bars": alignment.bars(tied["figures"], free["figures"]),
            }
    return out


def layouts_main(args) -> None:
    from layerwatch.reduce import has_opentsne

    if not has_opentsne():
        common.skip("openTSNE is not installed: pip install 'layerwatch[scale]'")
    rows = [int(r) for r in args.layout_rows.split(",") if r.strip()]
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if args.vectors == "minilm":
        common.require_data(args.data, ("train", "validation", "test"))
        common.model_path()
        if args.layout_layers > 7 or args.layout_dim != 384:
            sys.exit("--vectors minilm has 7 layers of 384 dimensions; use --vectors synthetic for other shapes")
    common.print_load()
    table = []
    for n in rows:
        started = time.perf_counter()
        r = common.in_fresh_process(_measure_layouts, n, args.layout_layers, args.layout_dim, args.epochs, backends,
                                    args.vectors, args.data, args.cache_dir)
        base = r.get("sklearn")
        for b in backends:
            cell = r[b]
            ratio = (lambda k: f"{base[k] / cell[k]:.2f}x") if base else (lambda k: "-")
            bars = "; ".join(f"{name}: {fig} {'ok' if ok else 'FAIL' if ok is False else ''}".strip() for name, fig, ok in cell["bars"])
            table.append([
                f"{n:,}", b, f"{cell['fresh_wall']:.1f} ({cell['fresh_cpu']:.1f})", f"{cell['warm_wall']:.1f} ({cell['warm_cpu']:.1f})",
                ratio("fresh_cpu"), ratio("warm_cpu"), bars,
            ])
        print(f"  {n:,} rows done in {time.perf_counter() - started:.0f} s (load {common.load_average():.1f})")
    print(f"\nt-SNE of {args.layout_layers} layers x {args.layout_dim} dims, one map at a time, one thread; "
          f"seconds wall (CPU); speed-up = scikit-learn's CPU seconds / the backend's; warm = mean over {args.epochs - 1} later snapshot(s)")
    common.print_table(table, ["rows", "backend", "fresh s, all layers", "warm s, all layers", "fresh speed-up", "warm speed-up", "alignment bars (tied vs independent)"])
    common.print_load(" at the end")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--rows", default="1000,3000,10000", help="comma-separated row counts (default: %(default)s)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    parser.add_argument("--methods", default="pca,tsne", help="comma-separated reducers (default: %(default)s)")
    parser.add_argument("--tsne-full-max", type=int, default=3000,
                        help="above this many rows t-SNE runs on one layer and is extrapolated (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=common.BATCH_SIZE)
    parser.add_argument("--quick", action="store_true", help="300 and 1,000 rows, MiniLM only")
    parser.add_argument("--layouts", action="store_true", help="compare the t-SNE backends instead (no model or data needed)")
    parser.add_argument("--layout-rows", default="1000,10000", help="--layouts: row counts (default: %(default)s)")
    parser.add_argument("--layout-layers", type=int, default=7, help="--layouts: layers (default: %(default)s, MiniLM's hidden states)")
    parser.add_argument("--layout-dim", type=int, default=384, help="--layouts: dimensions (default: %(default)s, MiniLM's)")
    parser.add_argument("--epochs", type=int, default=3, help="--layouts: snapshots, the first fresh (default: %(default)s)")
    parser.add_argument("--backends", default="sklearn,opentsne", help="--layouts: t-SNE backends (default: %(default)s)")
    parser.add_argument("--vectors", choices=("minilm", "synthetic"), default="minilm",
                        help="--layouts: MiniLM's vectors of HatEval tweets (captured once into --cache-dir) or alignment.py's synthetic ones")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "layerwatch-scale-benchmark"),
                        help="--layouts --vectors minilm: where the captured vectors are kept (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.layouts:
        if args.epochs < 2:
            parser.error("--epochs must be at least 2 (a fresh snapshot and a warm one)")
        return layouts_main(args)
    if args.quick:
        args.rows, args.models = "300,1000", "minilm"
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = sorted(set(models) - set(MODELS))
    if bad:
        parser.error(f"--models: unknown model(s) {bad}; choose from {list(MODELS)}")
    common.require_data(args.data, ("train", "validation", "test") if max(rows) > 10000 else ("train", "validation"))
    common.model_path()
    common.print_load()
    table = []
    for model_name in models:
        for n in rows:
            started = time.perf_counter()
            r = common.in_fresh_process(_measure, model_name, args.data, n, methods, args.tsne_full_max, args.batch_size)
            seed_mem = 2 * (r["states"] - 1) * n * common.MAX_LENGTH * r["hidden"] * 4
            row = [model_name, f"{r['states']}x{r['hidden']}", f"{n:,}", f"{r['capture_s']:.1f}", common.mib(r["capture_mem"]),
                   common.mib(r["pooled"]), common.mib(seed_mem)]
            for m in methods:
                cell = r[m]
                mark = "~" if cell["extrapolated"] else ""
                row += [f"{mark}{cell['s']:.1f}", common.mib(cell["mem"]) + ("" if cell["ok"] else " (!)")]
            table.append(row)
            print(f"  {model_name} {n:,} rows done in {time.perf_counter() - started:.0f} s (load {common.load_average():.1f})")
    header = ["model", "states x hidden", "rows", "capture s", "capture mem", "pooled", "seed capture mem (computed)"]
    for m in methods:
        header += [f"{m} s", f"{m} mem"]
    print("\ncapture and reduction of every hidden state (fresh fits); ~ = one layer measured, times the layers (extrapolated)")
    common.print_table(table, header)
    common.print_load(" at the end")


if __name__ == "__main__":
    main()
