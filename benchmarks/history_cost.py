"""What the report and the head view cost per snapshot at snapshot 2 and at snapshot 20.

After every snapshot the back half rewrites ``report.html`` and the attention head view.
They are drawn from the history the pipeline holds (``layerwatch/history.py``): appended
per snapshot, never re-read from the run directory. The baseline is the path that reads
the run back from its files at every snapshot (what the back half did before: every
stored layout, every snapshot's rows, ``metrics.csv``, every attention array), timed in
the same run on the same files.

A synthetic run shaped like the HatEval defaults with attention (2 splits x 7 hidden
states x 1,000 rows; 6 layers x 12 heads; 6 attention examples of 40 tokens, 2 of them
with query and key vectors of 32 dimensions) grows to ``--snapshots`` snapshots, stored
through ``layerwatch.RunStore`` as a training run stores them. At snapshots 2 and
``--snapshots`` (and every ``--every``), each path writes the report and the head view
``--repeats`` times; the median is printed, with the part of it spent building the page
from what is held (the page's own encoding of what it shows: coding every snapshot's
positions and the sections' films, the head view's maps, JSON, base64, writing the bytes;
it grows with the snapshots shown, by design), the rest (reading the run back and taking
it up: what the goal is about, no more at snapshot 20 than at snapshot 2) and the number
of files the store read.

Nothing is asserted: figures are printed with the machine's load.

Usage::

    python benchmarks/history_cost.py                  # 20 snapshots (about 2 min)
    python benchmarks/history_cost.py --rows 200 --snapshots 6 --repeats 1   # a quick look
    python benchmarks/history_cost.py --section-size   # what the sections add to the big run's report
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SPLITS = ("train", "validation")
LAYERS, HEADS, EXAMPLES, TOKENS, D_HEAD, NEURON = 7, 12, 6, 40, 32, 2


class _Clock:
    """Seconds spent inside the wrapped functions (building the page), summed; and the files
    the store read (every array file goes through ``RunStore.load_arrays``, every table
    through ``RunStore.read_table``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.reads = 0
        self._depth = 0

    def wrap(self, module, name: str) -> None:
        original = getattr(module, name)

        def timed(*a, **kw):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self._depth -= 1
                if not self._depth:  # nested calls are counted once
                    self.seconds += time.perf_counter() - t0

        setattr(module, name, timed)

    def count(self, cls, name: str) -> None:
        original = getattr(cls, name)

        def counted(*a, **kw):
            self.reads += 1
            return original(*a, **kw)

        setattr(cls, name, counted)


def _store_snapshot(store, rng, k: int, rows: int, state: dict) -> tuple:
    """Write snapshot ``k`` of every split as a training run does; return (key, snaps)."""
    from layerwatch.measures.attention.stats import STATS
    from layerwatch.snapshot import Snapshot, SnapshotKey

    key = SnapshotKey(k, 63 * k)
    snaps = {}
    metrics = []
    for s_no, split in enumerate(SPLITS):
        st = state.setdefault(split, {
            "indices": np.sort(rng.choice(9000, size=rows, replace=False)).astype(np.int64),
            "labels": (rng.random(rows) < 0.42).astype(np.int64), "walk": rng.normal(size=(LAYERS, rows, 2)) * 5,
        })
        st["walk"] = st["walk"] + rng.normal(size=st["walk"].shape) * 0.5
        snap = Snapshot(pooled=np.zeros((LAYERS, rows, 1), np.float32), labels=st["labels"], layers=np.arange(LAYERS),
                        indices=st["indices"], predictions=(rng.random(rows) < 0.5).astype(np.int64), split=split)
        store.save_snapshot(snap, key)
        store.save_layout(split, key, st["walk"].astype(np.float32), np.arange(LAYERS), "tsne", True)
        for j in range(LAYERS):
            for metric in ("knn_accuracy", "probe_accuracy", "silhouette", "cka_first", "cka_prev"):
                metrics.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": j, "metric": metric,
                                "value": float(rng.random())})
        arrays = {"stats": rng.random((LAYERS - 1, HEADS, len(STATS))), "rows": np.array(rows)}
        if split == "validation":
            maps = rng.random((EXAMPLES, LAYERS - 1, HEADS, TOKENS, TOKENS)).astype(np.float32)
            maps /= maps.sum(-1, keepdims=True)
            arrays.update(positions=np.arange(EXAMPLES, dtype=np.int64) * 3, lengths=np.full(EXAMPLES, TOKENS),
                          maps=maps.astype(np.float16), tokens=np.array([[f"w{t}" for t in range(TOKENS)]] * EXAMPLES),
                          neuron_q=rng.normal(size=(NEURON, LAYERS - 1, HEADS, TOKENS, D_HEAD)).astype(np.float32),
                          neuron_k=rng.normal(size=(NEURON, LAYERS - 1, HEADS, TOKENS, D_HEAD)).astype(np.float32))
        store.save_arrays("attention", split, key, arrays)
        snap.results["attention"] = arrays
        snaps[split] = snap
        del s_no
    for split in SPLITS:
        store.replace_metrics(split, key, [m for m in metrics if m["split"] == split])
    return key, snaps


def _time(fn, repeats: int, clock: _Clock) -> tuple[float, float, int]:
    """Median seconds of ``fn()``, the median part of it spent building the page, and the files read."""
    total, encoding = [], []
    for _ in range(repeats):
        clock.seconds, clock.reads = 0.0, 0
        t0 = time.perf_counter()
        fn()
        total.append(time.perf_counter() - t0)
        encoding.append(clock.seconds)
    return common.median(total), common.median(encoding), clock.reads


def section_sizes(layers: int = 25, heads: int = 16, examples: int = 8, tokens: int = 64, snapshots: int = 10) -> int:
    """``--section-size``: the bytes the attention and attribution sections add to the report of the
    big run of costs.md (2 splits x 25 layers x 10 snapshots), with 16 heads, 8 attribution
    examples of 64 tokens (random values: they code no smaller than real ones)."""
    from layerwatch.measures.attention import page as attention_page
    from layerwatch.measures.attention.stats import STATS
    from layerwatch.measures.attribution import page as attribution_page
    from layerwatch.measures.attribution.compute import TOKEN_CLASSES
    from layerwatch.measures.base import Context
    from layerwatch.pages import json_block
    from layerwatch.snapshot import SnapshotKey
    from layerwatch.store import RunStore

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(RunStore(tmp), None)
        for k in range(snapshots):
            key = SnapshotKey(k, 100 * k)
            for split in SPLITS:
                grids = {s: rng.random((layers, heads)) for s in STATS}
                if split == "validation":
                    grids.update(drift_first=rng.random((layers, heads)), drift_prev=rng.random((layers, heads)))
                ctx.history.put("attention", split, key, {"grids": grids})
                record = {"shares": rng.random((layers, len(TOKEN_CLASSES), 2))}
                if split == "validation":
                    record["examples"] = [
                        {"row": 7 * r, "label": "hate", "tokens": [f"tok{t}" for t in range(tokens)],
                         "conductance": rng.normal(size=(layers + 1, tokens)), "attributions": rng.normal(size=tokens)}
                        for r in range(examples)
                    ]
                ctx.history.put("attribution", split, key, record)
        sections = attention_page.report_sections(ctx, "attention", "x.html") + attribution_page.report_sections(ctx, "attribution")
        size = len(json_block(sections).encode("utf-8"))
    print(f"the attention and attribution sections of a run of 2 splits x {layers} layers x {snapshots} snapshots, "
          f"{heads} heads, {examples} attribution examples of {tokens} tokens: {size / 1e6:.2f} MB of page data")
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows per split (default: %(default)s)")
    parser.add_argument("--snapshots", type=int, default=20, help="snapshots the run grows to (default: %(default)s)")
    parser.add_argument("--every", type=int, default=0, help="also time every N snapshots (default: only 2 and the last)")
    parser.add_argument("--repeats", type=int, default=3, help="timed writes per point (default: %(default)s)")
    parser.add_argument("--section-size", action="store_true",
                        help="only print the bytes the attention and attribution sections add to the big run's report")
    args = parser.parse_args()
    if args.section_size:
        section_sizes()
        return 0
    common.print_load()

    import layerwatch.measures.attention.page as attention_page
    import layerwatch.report as report_module
    from layerwatch.history import History
    from layerwatch.measures.attention.page import record
    from layerwatch.reading import remember_stored, run_context
    from layerwatch.report import write_report
    from layerwatch.store import RunStore

    clock = _Clock()
    # Building the page from what is held: the report's data (coding every snapshot's
    # positions, the sections' films), the HTML, the head view from its records, and
    # writing the bytes. Whatever else a path does is reading the run back.
    for module, name in ((report_module, "collect_report"), (report_module, "run_sections"), (report_module, "report_html"),
                         (attention_page, "head_view"), (RunStore, "write_text")):
        clock.wrap(module, name)
    clock.count(RunStore, "load_arrays")
    clock.count(RunStore, "read_table")

    points = {2, args.snapshots} | (set(range(args.every, args.snapshots + 1, args.every)) if args.every else set())
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "run")
        store = RunStore(root)
        store.write_run({
            "label_names": list(common.LABEL_NAMES), "label_kind": "class", "reference_split": "train",
            "model_name": "synthetic", "measurements": ["embeddings", "attention"],
            "config": {"method": "tsne", "pooling": "mean", "attention": True},
        })
        rng = np.random.default_rng(0)
        ctx, measurements = run_context(store)
        attention = [m for m in measurements if m.name == "attention"][0]
        state: dict = {}
        print(f"a synthetic run: {len(SPLITS)} splits x {LAYERS} layers x {args.rows} rows; attention {LAYERS - 1} "
              f"layers x {HEADS} heads, {EXAMPLES} examples of {TOKENS} tokens ({NEURON} with q and k); "
              f"growing to {args.snapshots} snapshots")
        for k in range(1, args.snapshots + 1):
            key, snaps = _store_snapshot(store, rng, k - 1, args.rows, state)
            # What the pipeline files per snapshot (here from the new snapshot's own files).
            remember_stored(ctx.history, store, [(key, snaps)])
            attention.restore(ctx, [(key, snaps)])
            if k not in points:
                continue

            def held_report():
                write_report(root, context=ctx, measurements=measurements)

            def held_head_view():
                attention.write_head_view(ctx)

            def disk_report():
                write_report(root)

            def disk_head_view():
                # The previous path: every snapshot's attention arrays read back, then the same page.
                read = History()
                keys = store.keys("validation", "attention")
                last = store.load_snapshot("validation", keys[-1], pooled=False)
                for key in keys:
                    arrays = store.load_arrays("attention", "validation", key)
                    read.put("attention", "validation", store.snapshot_key("validation", key), record({}, arrays, last))
                html = attention_page.head_view(read, "attention", "validation", ctx.label_names, True, "attention_head_view.html")
                store.write_text(store.file_path("attention_head_view.html"), html)

            for what, fn in (("report.html, from the history", held_report), ("report.html, read back from the files", disk_report),
                             ("head view, from the history", held_head_view), ("head view, read back from the files", disk_head_view)):
                total, encoding, reads = _time(fn, args.repeats, clock)
                table.append((f"snapshot {k}: {what}", f"{total:.3f} s", f"{encoding:.3f} s", f"{total - encoding:.3f} s", reads))
            print(f"  timed at snapshot {k}", flush=True)
    common.print_table(table, ("per snapshot", "total", "building the page", "the rest", "files read"))
    common.print_load(" (after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
