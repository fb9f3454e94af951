"""What one layerwatch snapshot costs, against the original notebook's pipeline.

Three measurements on the real HatEval tweets (TweetEval layout) and the packaged
all-MiniLM-L6-v2 (6 layers, hidden 384) with a fresh 2-class head:

1. Capture memory, 2,000 training tweets: peak RSS growth during ``layerwatch.capture``
   against its budget, (pooled result) + (one batch's activations), where the pooled
   result is hidden states x rows x hidden x 4 bytes and one batch's activations are what
   the model's forward pass holds for one batch, measured as the peak RSS growth of a bare
   no-grad forward pass over the same batches (the hidden states alone, batch x widest
   batch x hidden x hidden states x 4 bytes, are printed too); and against the seed's capture
   (every token of every layer kept by ``torch.cat``, then pooled). RSS is sampled about
   every millisecond from /proc/self/statm; each capture runs in a fresh process, after
   the model's weights were made resident (they page in lazily from the weights file).
   Targets: growth <= 1.5x the budget, and >= 20x below the seed's.
2. Capture time, same rows: ``layerwatch.capture`` against a bare ``torch.no_grad()``
   forward pass over the same batches (rows sorted by length, each batch padded to its
   own longest row, as layerwatch forms them; batches built before the clock starts), and
   against the seed's capture (fixed padding to 64, torch.cat, pooling). Medians of
   ``--repeats`` interleaved runs. Targets: <= 1.1x bare, and >= 1.5x faster than the seed.
3. Whole snapshot, train + validation, 1,000 rows each, t-SNE, every layer: the callback's
   ``snapshot()`` (capture, store, layouts, metrics, frames, GIF, heatmaps) at layerwatch's
   defaults (``precision="auto"``: a bf16 capture on a CPU with bf16 instructions),
   against the seed's pipeline on the same rows. The first snapshot (fresh t-SNE) and the
   second (warm-started t-SNE, after ``--train-steps`` untimed training steps, so that it
   lays out changed vectors as in training) are timed; the seed costs the same every
   epoch. ``--rounds`` rounds, layerwatch and the seed alternating, each in a fresh
   process; the fastest run of each is compared (the one least slowed by other work), and
   every run is printed with the load average and its CPU seconds. Target: >= 5x faster
   than the seed. Printed with it: the ceiling (the seed's time over layerwatch's capture
   alone, which no choice of layouts, metrics or drawing removes) and, for reference, the
   same snapshots with ``method="pca"``.

Nothing is asserted: figures, ratios, targets and PASS/FAIL are printed. The load average
is printed too; timings taken while other work runs on the machine are inflated.

Usage::

    python benchmarks/snapshot_cost.py            # full (about 20 minutes on 2 idle cores)
    python benchmarks/snapshot_cost.py --only snapshot --rounds 3 --no-pca-reference
    python benchmarks/snapshot_cost.py --quick    # 500 / 300 rows, one repeat
    python benchmarks/snapshot_cost.py --only memory,time
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

MEMORY_BUDGET_FACTOR = 1.5
MEMORY_VS_SEED = 20.0
TIME_VS_BARE = 1.1
TIME_VS_SEED = 1.5
SNAPSHOT_VS_SEED = 5.0
SECTIONS = ("memory", "time", "snapshot")


# -- shared pieces (run inside child processes) ---------------------------------------
def _setup(data_dir: str, n: int):
    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path)
    texts, labels = common.read_split(data_dir, "train")
    return tok, model, texts[:n], labels[:n]


def _warm_up(model) -> None:
    """Make the weights resident and run one tiny forward pass before measuring.

    The weights are mapped lazily from the safetensors file: most of the 45 MiB word
    embedding table would otherwise page in during the first capture and be counted as
    its memory (training touches every weight, so they are resident by then anyway).
    The forward pass takes one-time library set-up out of the measurement.
    """
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()
        model(input_ids=torch.tensor([[101, 2023, 102]]), attention_mask=torch.ones(1, 3, dtype=torch.long), output_hidden_states=True)


def _capture_memory(kind: str, data_dir: str, n: int, batch_size: int) -> dict:
    """Peak RSS growth of one capture of ``n`` rows (run in a fresh process)."""
    from layerwatch import capture
    from seed_pipeline import seed_capture, seed_pool, seed_tokenize

    tok, model, texts, labels = _setup(data_dir, n)
    _warm_up(model)
    hidden = model.config.hidden_size
    states = model.config.num_hidden_layers + 1
    if kind == "layerwatch":
        ds = common.tokenized_dataset(tok, texts, labels)
        widths = [int(sum(m)) for m in ds["attention_mask"]]
        with common.PeakRSS() as mem, common.Timer() as t:
            snap = capture(model, ds, batch_size=batch_size, progress=False)
        batch_bytes = min(batch_size, n) * max(widths) * hidden * states * 4
        pooled_bytes = snap.pooled.nbytes
    elif kind == "bare":
        import torch

        ds = common.tokenized_dataset(tok, texts, labels)
        batches = common.length_sorted_batches(ds["input_ids"], ds["attention_mask"], batch_size)
        with common.PeakRSS() as mem, common.Timer() as t:
            with torch.no_grad():
                for b in batches:
                    out = model(**b)
                del out
        batch_bytes = min(batch_size, n) * batches[0]["input_ids"].shape[1] * hidden * states * 4
        pooled_bytes = 0
    else:
        with common.PeakRSS() as mem, common.Timer() as t:
            ids, mask = seed_tokenize(tok, texts)
            pooled = seed_pool(seed_capture(model, ids, mask, batch_size), mask)
        batch_bytes = min(batch_size, n) * ids.shape[1] * hidden * states * 4
        pooled_bytes = sum(p.nbytes for p in pooled)
    return {"growth": mem.growth, "baseline": mem.baseline, "peak": mem.peak, "seconds": t.seconds,
            "batch_bytes": batch_bytes, "pooled_bytes": pooled_bytes}


def _capture_times(data_dir: str, n: int, batch_size: int, repeats: int) -> dict:
    """Medians of interleaved bare / layerwatch / seed capture times (one fresh process)."""
    import torch

    from layerwatch import capture
    from seed_pipeline import seed_capture, seed_pool, seed_tokenize

    tok, model, texts, labels = _setup(data_dir, n)
    ds = common.tokenized_dataset(tok, texts, labels)
    batches = common.length_sorted_batches(ds["input_ids"], ds["attention_mask"], batch_size)

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                model(**b)

    def lw() -> None:
        capture(model, ds, batch_size=batch_size, progress=False)

    def lw_auto() -> None:
        capture(model, ds, batch_size=batch_size, progress=False, precision="auto")

    def seed() -> None:
        ids, mask = seed_tokenize(tok, texts)
        seed_pool(seed_capture(model, ids, mask, batch_size), mask)

    bare()  # warm-up, not counted
    runs: dict[str, list[float]] = {"bare": [], "layerwatch": [], "layerwatch auto": [], "seed": []}
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("layerwatch", lw), ("layerwatch auto", lw_auto), ("seed", seed)):
            with common.Timer() as t:
                fn()
            runs[name].append(t.seconds)
    tokens = {"sorted": int(sum(b["attention_mask"].numel() for b in batches)), "real": int(sum(sum(m) for m in ds["attention_mask"])),
              "fixed": n * common.MAX_LENGTH}
    from layerwatch.precision import resolve_precision
    return {"runs": runs, "tokens": tokens, "auto": resolve_precision("auto", torch.device("cpu"))}


class _StageClock:
    """Adds up the wall time spent in named functions, by wrapping them in place."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def timed(self, fn, stage: str):
        """``fn``, with the time spent in it added to ``stage``."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

        return timed

    def wrap(self, owner, attr: str, stage: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is not None:
            setattr(owner, attr, self.timed(fn, stage))

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


LW_STAGES = ("capture", "store", "layouts", "metrics", "frames", "gif", "heatmaps")


def _train_steps(model, tok, data_dir: str, steps: int, exclude: set, seed: int, batch_size: int = 32, lr: float = 5e-5) -> None:
    """A few AdamW steps on train tweets outside the monitored rows, so that the next
    snapshot's vectors differ from the last one's as they do during training (not timed)."""
    import numpy as np
    import torch

    texts, labels = common.read_split(data_dir, "train")
    rng = np.random.default_rng(seed)
    pool = np.array([i for i in range(len(texts)) if i not in exclude])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        rows = rng.choice(pool, size=batch_size, replace=False)
        enc = tok([texts[i] for i in rows], truncation=True, max_length=common.MAX_LENGTH, padding=True, return_tensors="pt")
        out = model(**enc, labels=torch.tensor(labels[rows]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _layerwatch_snapshots(
    data_dir: str, rows: int, snapshots: int = 2, method: str = "tsne", precision: str | None = None, train_steps: int = 0,
) -> dict:
    """The callback's ``snapshot()`` at its defaults (or another ``method`` / ``precision``),
    timed per stage (one fresh process); ``train_steps`` training steps between snapshots."""
    import layerwatch.snapshotter as lw_snapshotter
    import layerwatch.film as lw_film
    import layerwatch.measures.embeddings.measure as lw_emb
    import layerwatch.measures.embeddings.files as lw_emb_files
    from layerwatch import LayerwatchCallback
    from layerwatch.snapshot import SnapshotKey

    clock = _StageClock()
    # The snapshotter calls capture_split through its own module's name.
    clock.wrap(lw_snapshotter, "capture_split", "capture")
    for attr in ("save_snapshot", "save_layout", "replace_metrics"):
        clock.wrap(lw_emb_files, attr, "store")
    # The t-SNE layouts run in a thread pool while the metrics are computed: "layouts" is
    # the time spent starting them plus waiting for them once the metrics are done.
    start_layouts = clock.timed(lw_emb.start_layouts, "layouts")
    lw_emb.start_layouts = lambda *args, **kwargs: clock.timed(start_layouts(*args, **kwargs), "layouts")
    clock.wrap(lw_emb, "layer_metrics", "metrics")
    clock.wrap(lw_emb.EmbeddingsMeasurement, "_draw", "frames")
    clock.wrap(lw_film.Film, "write_gif", "gif")
    clock.wrap(lw_emb.EmbeddingsMeasurement, "write_heatmaps", "heatmaps")

    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path)
    splits = {}
    for split in ("train", "validation"):
        texts, labels = common.read_split(data_dir, split)
        splits[split] = common.tokenized_dataset(tok, texts, labels, padding=False)
    out = []
    settings = {"precision": precision} if precision else {}
    with tempfile.TemporaryDirectory(prefix="lw-snapshot-") as run_dir:
        cb = LayerwatchCallback(splits, output_dir=run_dir, max_samples=rows, progress=False, overwrite=True, method=method, **settings)
        from layerwatch.config import resolve_jobs

        jobs = resolve_jobs(cb.config)
        indices = {name: s.indices.tolist() for name, s in cb.splits.items()}
        for i in range(snapshots):
            if i and train_steps:
                _train_steps(model, tok, data_dir, train_steps, set(indices["train"]), seed=i)
            load = common.load_average()
            with common.quiet_warnings(), common.PeakRSS() as mem, common.Timer() as t, common.CpuTimer() as cpu:
                cb.snapshot(model, SnapshotKey(epoch=i, step=i * 100))
            stages = clock.take()
            out.append({"seconds": t.seconds, "cpu": cpu.seconds, "stages": stages, "rss_growth": mem.growth, "load": load})
        files = sorted(os.path.relpath(os.path.join(d, f), run_dir) for d, _, fs in os.walk(run_dir) for f in fs)
    return {"snapshots": out, "indices": indices, "files": len(files), "failures": list(cb.failures), "jobs": jobs,
            "precision": cb.monitor.precision}


def _seed_snapshots(data_dir: str, indices: dict, epochs: int = 2) -> dict:
    """The seed's pipeline on the same rows, timed per stage (one fresh process)."""
    from seed_pipeline import seed_epoch

    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path)
    splits = {}
    for split, idx in indices.items():
        texts, labels = common.read_split(data_dir, split)
        splits[split] = ([texts[i] for i in idx], labels[idx])
    out = []
    with tempfile.TemporaryDirectory(prefix="lw-seed-") as run_dir:
        for epoch in range(epochs):
            load = common.load_average()
            with common.quiet_warnings(), common.PeakRSS() as mem, common.Timer() as t, common.CpuTimer() as cpu:
                stages = seed_epoch(model, tok, splits, run_dir, epoch)
            out.append({"seconds": t.seconds, "cpu": cpu.seconds, "stages": stages, "rss_growth": mem.growth, "load": load})
    return {"snapshots": out}


# -- the three sections (parent process) ----------------------------------------------
def section_memory(args) -> dict:
    n = args.memory_rows
    print(f"\n== 1. capture memory: {n} training tweets, batch {args.batch_size}, each capture in a fresh process")
    runs = {kind: [] for kind in ("layerwatch", "bare", "seed")}
    for _ in range(args.memory_repeats):
        for kind in runs:
            runs[kind].append(common.in_fresh_process(_capture_memory, kind, args.data, n, args.batch_size))
    # The median run (by growth) of each kind.
    lw, bare, seed = (sorted(r, key=lambda x: x["growth"])[len(r) // 2] for r in runs.values())
    # One batch's activations: everything the model's forward pass holds for one batch.
    # The bare forward over the same batches measures it (it never holds two batches).
    budget = lw["pooled_bytes"] + bare["growth"]
    names = {"layerwatch": "layerwatch.capture", "bare": "bare no-grad forward, no hidden states (same batches)", "seed": "seed capture + pool (padded to 64)"}
    rows = [[names[k], common.mib(m["growth"]), " ".join(f"{x['growth'] / 2**20:.0f}" for x in runs[k]), common.mib(m["pooled_bytes"]),
             common.mib(m["batch_bytes"]), f"{m['seconds']:.1f}"] for k, m in zip(runs, (lw, bare, seed))]
    common.print_table(rows, ["", "peak RSS growth (median)", "runs (MiB)", "pooled result", "one batch's hidden states", "seconds"])
    r_budget = lw["growth"] / budget
    r_seed = seed["growth"] / max(lw["growth"], 1)
    strict = lw["pooled_bytes"] + lw["batch_bytes"]
    print(f"budget = pooled result + one batch's activations (the bare forward's growth) = {common.mib(budget)}; "
          f"1.5x = {common.mib(1.5 * budget)}")
    print(f"  for reference: growth / (pooled result + one batch's hidden states alone, {common.mib(strict)}) = "
          f"{lw['growth'] / strict:.2f}x; the model's own forward pass already takes {common.mib(bare['growth'])}")
    print(f"  ceiling: seed growth / bare forward growth = {seed['growth'] / max(bare['growth'], 1):.1f}x "
          "(the ratio a capture that kept nothing at all would reach)")
    print(f"  beyond the bare forward: seed adds {common.mib(seed['growth'] - bare['growth'])}, layerwatch "
          f"{common.mib(lw['growth'] - bare['growth'])} ({(seed['growth'] - bare['growth']) / max(lw['growth'] - bare['growth'], 1):.0f}x less)")
    results = [
        ["capture memory / budget", f"{r_budget:.2f}x", f"<= {MEMORY_BUDGET_FACTOR}x", common.verdict(r_budget <= MEMORY_BUDGET_FACTOR)],
        ["seed memory / layerwatch memory", f"{r_seed:.1f}x", f">= {MEMORY_VS_SEED:.0f}x", common.verdict(r_seed >= MEMORY_VS_SEED)],
    ]
    common.print_table(results, ["figure", "ratio", "target", "verdict"])
    return {"results": results}


def section_time(args) -> dict:
    n = args.time_rows
    print(f"\n== 2. capture time: {n} training tweets, batch {args.batch_size}, median of {args.repeats} interleaved runs")
    out = common.in_fresh_process(_capture_times, args.data, n, args.batch_size, args.repeats)
    med = {k: common.median(v) for k, v in out["runs"].items()}
    tok = out["tokens"]
    rows = [
        ["bare no-grad forward (same batches)", f"{med['bare']:.2f}", " ".join(f"{v:.2f}" for v in out["runs"]["bare"]), f"{tok['sorted']:,}"],
        ["layerwatch.capture (fp32, its default)", f"{med['layerwatch']:.2f}", " ".join(f"{v:.2f}" for v in out["runs"]["layerwatch"]), f"{tok['sorted']:,}"],
        [f"layerwatch.capture(precision='auto'): {out['auto']}", f"{med['layerwatch auto']:.2f}",
         " ".join(f"{v:.2f}" for v in out["runs"]["layerwatch auto"]), f"{tok['sorted']:,}"],
        ["seed capture + pool (padded to 64)", f"{med['seed']:.2f}", " ".join(f"{v:.2f}" for v in out["runs"]["seed"]), f"{tok['fixed']:,}"],
    ]
    common.print_table(rows, ["", "median s", "runs", "tokens fed"])
    print(f"real tokens: {tok['real']:,}; rows/s: layerwatch {n / med['layerwatch']:.0f}, seed {n / med['seed']:.0f}; "
          f"load {common.load_average():.2f}")
    print(f"precision='auto' ({out['auto']}) / fp32 capture: {med['layerwatch'] / med['layerwatch auto']:.2f}x faster "
          "(information; the callback captures at 'auto' by default)")
    r_bare = med["layerwatch"] / med["bare"]
    r_seed = med["seed"] / med["layerwatch"]
    results = [
        ["layerwatch / bare forward", f"{r_bare:.3f}x", f"<= {TIME_VS_BARE}x", common.verdict(r_bare <= TIME_VS_BARE)],
        ["seed / layerwatch", f"{r_seed:.2f}x", f">= {TIME_VS_SEED}x", common.verdict(r_seed >= TIME_VS_SEED)],
    ]
    common.print_table(results, ["figure", "ratio", "target", "verdict"])
    return {"results": results}


def section_snapshot(args) -> dict:
    n = args.snapshot_rows
    print(f"\n== 3. whole snapshot: train + validation, {n} rows each, t-SNE, every layer; {args.rounds} round(s), each "
          f"side in a fresh process per round, the two sides alternating; {args.train_steps} training steps between "
          "layerwatch's snapshots (not timed) so that the later one lays out changed vectors")
    lw_runs, seed_runs = [], []
    for r in range(args.rounds):
        lw = common.in_fresh_process(_layerwatch_snapshots, args.data, n, 2, "tsne", args.precision, args.train_steps)
        seed = common.in_fresh_process(_seed_snapshots, args.data, lw["indices"], 2)
        lw_runs.append(lw)
        seed_runs.append(seed)
        print(f"  round {r}: layerwatch " + ", ".join(f"{s['seconds']:.1f} s (load {s['load']:.1f})" for s in lw["snapshots"])
              + "; seed " + ", ".join(f"{s['seconds']:.1f} s (load {s['load']:.1f})" for s in seed["snapshots"]), flush=True)
        if lw["failures"]:
            print("  layerwatch reported failures:", *lw["failures"], sep="\n    ")
    rows = []
    for r, lw in enumerate(lw_runs):
        for i, s in enumerate(lw["snapshots"]):
            st = s["stages"]
            other = s["seconds"] - sum(st.values())
            rows.append([f"round {r}, snapshot {i} ({'fresh' if i == 0 else 'warm'} t-SNE)", f"{s['seconds']:.1f}", f"{s['cpu']:.1f}"]
                        + [f"{st.get(k, 0.0):.1f}" for k in LW_STAGES] + [f"{other:.1f}", common.mib(s["rss_growth"]), f"{s['load']:.2f}"])
    print(f"layerwatch (seconds; capture precision {lw_runs[0]['precision']!r}; 7 hidden states incl. embeddings, metrics on; "
          f"t-SNE layouts {lw_runs[0]['jobs']} at once (n_jobs='auto'), while the metrics are computed: 'layouts' is the "
          "time spent waiting for them; cpu = this process's CPU seconds)")
    common.print_table(rows, ["", "total", "cpu", *LW_STAGES, "other", "peak RSS growth", "load"])
    rows = []
    from seed_pipeline import STAGES

    for r, seed in enumerate(seed_runs):
        for i, s in enumerate(seed["snapshots"]):
            st = s["stages"]
            rows.append([f"round {r}, seed epoch {i}", f"{s['seconds']:.1f}", f"{s['cpu']:.1f}"] + [f"{st[k]:.1f}" for k in STAGES]
                        + [common.mib(s["rss_growth"]), f"{s['load']:.2f}"])
    print("seed (seconds; 6 transformer layers, no metrics)")
    common.print_table(rows, ["", "total", "cpu", *STAGES, "peak RSS growth", "load"])
    # The fastest run of each kind: the one least slowed by other work on the machine.
    seed_all = [s for run in seed_runs for s in run["snapshots"]]
    seed_t = min(s["seconds"] for s in seed_all)
    results = []
    for i, kind in enumerate(("first (fresh t-SNE)", "later (warm t-SNE)")):
        best = min((run["snapshots"][i] for run in lw_runs), key=lambda s: s["seconds"])
        r = seed_t / best["seconds"]
        results.append([f"seed / layerwatch, {kind}: {seed_t:.1f} / {best['seconds']:.1f} s (fastest runs; load {best['load']:.1f})",
                        f"{r:.2f}x", f">= {SNAPSHOT_VS_SEED:.0f}x", common.verdict(r >= SNAPSHOT_VS_SEED)])
        cpu_seed = min(s["cpu"] for s in seed_all)
        results.append([f"  the same in CPU seconds (information): {cpu_seed:.1f} / {best['cpu']:.1f}", f"{cpu_seed / best['cpu']:.2f}x", "", ""])
    common.print_table(results, ["figure", "ratio", "target", "verdict"])
    # What no back half could beat: the capture of both splits is a forward pass of the
    # model over 2 x rows tweets, which no choice of layouts, metrics or drawing removes.
    capture_t = min(s["stages"].get("capture", float("nan")) for run in lw_runs for s in run["snapshots"])
    print(f"ceiling: seed / layerwatch's capture alone = {seed_t:.1f} / {capture_t:.1f} s = {seed_t / capture_t:.1f}x "
          "(a snapshot whose layouts, metrics, frames and GIFs cost nothing); 5x leaves "
          f"{seed_t / SNAPSHOT_VS_SEED - capture_t:.1f} s for the layouts, metrics and frames of "
          f"{2 * 7} layer maps")
    if args.pca_reference:
        pca = common.in_fresh_process(_layerwatch_snapshots, args.data, n, 2, "pca", args.precision, args.train_steps)
        rows = [[f"layerwatch snapshot {i}, method='pca'", f"{s['seconds']:.1f}"] + [f"{s['stages'].get(k, 0.0):.1f}" for k in LW_STAGES]
                + [f"{seed_t / s['seconds']:.2f}x", f"{s['load']:.2f}"] for i, s in enumerate(pca["snapshots"])]
        print("for reference (not the target, which is at t-SNE): the same snapshots with method='pca'")
        common.print_table(rows, ["", "total", *LW_STAGES, "seed / this", "load"])
    return {"results": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smaller smoke version: 500 / 300 rows, one repeat")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS} (default: all)")
    parser.add_argument("--memory-rows", type=int, default=2000)
    parser.add_argument("--time-rows", type=int, default=2000)
    parser.add_argument("--snapshot-rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="capture-time runs of each kind (default: %(default)s)")
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh-process memory runs of each kind (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=common.BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=2, help="whole-snapshot rounds, layerwatch and seed alternating (default: %(default)s)")
    parser.add_argument("--train-steps", type=int, default=20,
                        help="training steps between layerwatch's two snapshots (not timed; default: %(default)s)")
    parser.add_argument("--precision", default=None, help="layerwatch's capture precision (default: its default, 'auto')")
    parser.add_argument("--no-pca-reference", dest="pca_reference", action="store_false",
                        help="skip the whole snapshot with method='pca' printed for reference")
    args = parser.parse_args(argv)
    if args.quick:
        args.memory_rows, args.time_rows, args.snapshot_rows, args.repeats, args.memory_repeats, args.rounds = 500, 500, 300, 1, 1, 1
    wanted = common.sections(parser, args.only, SECTIONS)
    common.require_data(args.data)
    common.model_path()
    import torch

    print(f"layerwatch snapshot cost; torch {torch.__version__}, {torch.get_num_threads()} threads")
    common.print_load()
    summary = []
    for name in SECTIONS:
        if name in wanted:
            started = time.perf_counter()
            summary += globals()[f"section_{name}"](args)["results"]
            print(f"({time.perf_counter() - started:.0f} s)")
    common.print_load(" at the end")
    print("\n== summary")
    common.print_table(summary, ["figure", "ratio", "target", "verdict"])


if __name__ == "__main__":
    main()
