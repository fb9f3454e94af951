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

Usage::

    python benchmarks/scale.py                  # 1k, 3k, 10k rows; MiniLM and BERT-base
    python benchmarks/scale.py --models minilm  # MiniLM only
    python benchmarks/scale.py --quick          # 300 and 1,000 rows, MiniLM only
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
    args = parser.parse_args(argv)
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
