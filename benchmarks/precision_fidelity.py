"""How far a half precision capture is from fp32, and how much faster it is.

On the real HatEval tweets (TweetEval layout) and the packaged all-MiniLM-L6-v2 with a
fresh 2-class head, the monitored subsets are taken as the callback takes them
(stratified, seed 0): 1,000 validation tweets and the 1,000 train tweets that are their
reference. Each is captured with ``layerwatch.capture(..., precision=p)`` for fp32 and each
half precision asked for, at two moments of a fine-tune: before training (pretrained
encoder, fresh head) and after one epoch on ``--finetune-rows`` other train tweets (so
that a model whose weights have moved is measured too).

Per split and hidden state, against the fp32 vectors of the same rows:

- ``min cos``: the smallest cosine similarity of a row's half precision vector to its
  fp32 vector; ``>= 0.999``: the share of rows at 0.999 or more (bar: 99.9%);
- ``recall``: the mean share of each row's 10 nearest neighbours (cosine, within the
  split) in fp32 that are among its 10 nearest in half precision (bar: 0.98);
- the change of every per-layer metric as the pipeline computes it
  (``layerwatch.metrics.layer_metrics``: kNN accuracy and linear probe cross-validated on
  train, validation scored against train; cosine silhouette): bar |change| <= 0.01.

Capture time: each precision's capture of both splits, interleaved, ``--repeats`` times;
the fastest run of each is compared, in wall and in CPU seconds (ratios within one run;
the load average is printed next to them, since other work on the machine inflates every
figure, CPU seconds less than wall time).

Nothing is asserted; PASS/FAIL is printed per bar, and the exit status is 0.

Usage::

    python benchmarks/precision_fidelity.py                     # bf16 (about 3 minutes on 2 idle cores)
    python benchmarks/precision_fidelity.py --precisions bf16,fp16 --finetune-rows 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402

COSINE = 0.999
COSINE_SHARE = 0.999
RECALL = 0.98
METRIC_CHANGE = 0.01
K = 10


# -- figures ------------------------------------------------------------------------------
def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` to the same row of ``b`` (rows, dim)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-300)


def cosine_neighbours(x: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's ``k`` nearest other rows by cosine (rows, k)."""
    x = x.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def neighbour_recall(a: np.ndarray, b: np.ndarray, k: int = K) -> float:
    """Mean share of each row's k cosine neighbours in ``a`` found among its k in ``b``."""
    na, nb = cosine_neighbours(a, k), cosine_neighbours(b, k)
    return float((na[:, :, None] == nb[:, None, :]).any(axis=2).mean())


def metrics_of(snaps: dict, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The pipeline's per-layer metrics: train cross-validated, validation against train."""
    from layerwatch.metrics import layer_metrics

    train, val = snaps["train"], snaps["validation"]
    return {
        "train": layer_metrics(train.pooled, train.labels, seed=seed),
        "validation": layer_metrics(val.pooled, val.labels, train.pooled, train.labels, seed=seed),
    }


# -- capture ---------------------------------------------------------------------------
def load(data_dir: str, val_rows: int, train_rows: int, seed: int):
    from layerwatch.data import stratified_subset

    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path, seed)
    splits, picks = {}, {}
    for split, n in (("train", train_rows), ("validation", val_rows)):
        texts, labels = common.read_split(data_dir, split)
        splits[split] = common.tokenized_dataset(tok, texts, labels, padding=False)
        picks[split] = stratified_subset(labels, n, seed)
    return tok, model, splits, picks


def capture_all(model, splits: dict, picks: dict, precision: str) -> tuple[dict, float, float]:
    """Both splits captured at ``precision``: the snapshots, wall seconds and CPU seconds."""
    from layerwatch import capture

    with common.Timer() as t, common.CpuTimer() as c:
        snaps = {s: capture(model, splits[s], indices=picks[s], precision=precision, split=s) for s in splits}
    return snaps, t.seconds, c.seconds


def finetune(model, tok, data_dir: str, rows: int, exclude: np.ndarray, seed: int, lr: float = 1e-4, batch_size: int = 32) -> float:
    """One epoch of plain AdamW on ``rows`` train tweets not in the monitored subset (fp32)."""
    import torch

    texts, labels = common.read_split(data_dir, "train")
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(len(texts)), exclude)
    pick = rng.choice(pool, size=min(rows, len(pool)), replace=False)
    enc = tok([texts[i] for i in pick], truncation=True, max_length=common.MAX_LENGTH)["input_ids"]
    y = labels[pick]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    started = time.perf_counter()
    model.train()
    for start in range(0, len(pick), batch_size):
        rows_ = np.arange(start, min(start + batch_size, len(pick)))
        ids, mask = common.padded_batch(enc, rows_)
        out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor(y[rows_]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return time.perf_counter() - started


# -- report -----------------------------------------------------------------------------
def compare(moment: str, ref: dict, half: dict, precision: str) -> list[list]:
    """Print the per-layer figures of ``half`` against ``ref`` (fp32); return the bars."""
    m_ref, m_half = metrics_of(ref), metrics_of(half)
    worst = {"share": 1.0, "min": 1.0, "recall": 1.0, "change": 0.0}
    where = {"change": ""}
    for split in ("train", "validation"):
        a, b = ref[split], half[split]
        rows = []
        for j, layer in enumerate(a.layers):
            cos = row_cosines(a.pooled[j], b.pooled[j])
            share = float((cos >= COSINE).mean())
            rec = neighbour_recall(a.pooled[j], b.pooled[j])
            cells = [("embeddings" if int(layer) == 0 else f"layer {int(layer)}"), f"{cos.min():.5f}", f"{share:.2%}", f"{rec:.3f}"]
            for metric in ("knn_accuracy", "probe_accuracy", "silhouette"):
                va, vb = float(m_ref[split][metric][j]), float(m_half[split][metric][j])
                change = abs(vb - va)
                cells.append(f"{va:.3f} -> {vb:.3f} ({vb - va:+.3f})")
                if change > worst["change"]:
                    worst["change"], where["change"] = change, f"{split} layer {int(layer)} {metric}"
            worst["share"] = min(worst["share"], share)
            worst["min"] = min(worst["min"], float(cos.min()))
            worst["recall"] = min(worst["recall"], rec)
            rows.append(cells)
        print(f"\n{moment}, {split} ({len(a.labels)} rows): {precision} against fp32")
        common.print_table(rows, ["hidden state", "min cos", f">= {COSINE}", f"kNN({K}) recall", "kNN acc", "probe acc", "silhouette"])
    tag = f"{moment}, {precision}"
    return [
        [f"{tag}: rows with cosine >= {COSINE} (worst layer; min cos {worst['min']:.5f})", f"{worst['share']:.2%}",
         f">= {COSINE_SHARE:.1%}", common.verdict(worst["share"] >= COSINE_SHARE)],
        [f"{tag}: kNN({K}) neighbour recall (worst layer)", f"{worst['recall']:.3f}", f">= {RECALL}", common.verdict(worst["recall"] >= RECALL)],
        [f"{tag}: largest metric change ({where['change']})", f"{worst['change']:.4f}", f"<= {METRIC_CHANGE}",
         common.verdict(worst["change"] <= METRIC_CHANGE)],
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--precisions", default="bf16", help="comma-separated half precisions to compare with fp32 (default: %(default)s)")
    parser.add_argument("--val-rows", type=int, default=1000)
    parser.add_argument("--train-rows", type=int, default=1000, help="the train reference split's rows (default: %(default)s)")
    parser.add_argument("--finetune-rows", type=int, default=600,
                        help="train tweets of the one-epoch fine-tune before the second measurement; 0 skips it (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="timed captures of each precision (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = sorted(set(precisions) - {"bf16", "fp16"})
    if bad:
        parser.error(f"--precisions: {bad} are not half precisions; choose from bf16, fp16")
    common.require_data(args.data)
    common.model_path()
    import torch

    from layerwatch.precision import cpu_has_bf16, resolve_precision

    torch.set_num_threads(torch.get_num_threads())
    print(f"layerwatch capture precision against fp32; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"CPU bf16 instructions: {cpu_has_bf16()}; precision='auto' here gives {resolve_precision('auto', torch.device('cpu'))!r}")
    common.print_load()
    tok, model, splits, picks = load(args.data, args.val_rows, args.train_rows, args.seed)
    summary = []
    moments = [("before training", 0)] + ([(f"after 1 epoch on {args.finetune_rows} tweets", args.finetune_rows)] if args.finetune_rows else [])
    for moment, rows in moments:
        if rows:
            seconds = finetune(model, tok, args.data, rows, picks["train"], args.seed)
            print(f"\nfine-tuned one epoch on {rows} other train tweets in {seconds:.0f} s")
        times = {p: [] for p in ["fp32", *precisions]}
        cpu = {p: [] for p in times}
        snaps = {}
        # Interleaved, so that load from other work falls on every precision alike; the
        # first round also pays one-time set-up (kernels, oneDNN primitives).
        for r in range(max(1, args.repeats)):
            for p in times:
                snaps[p], seconds, cpu_seconds = capture_all(model, splits, picks, p)
                times[p].append(seconds)
                cpu[p].append(cpu_seconds)
        n = sum(len(v) for v in picks.values())
        print(f"\n{moment}: capture of train + validation ({n} rows), seconds per run (load {common.load_average():.2f})")
        table = [[p, f"{min(v):.2f}", " ".join(f"{t:.2f}" for t in v), f"{min(times['fp32']) / min(v):.2f}x",
                  f"{min(cpu[p]):.2f}", f"{min(cpu['fp32']) / min(cpu[p]):.2f}x"] for p, v in times.items()]
        common.print_table(table, ["precision", "fastest s", "runs", "fp32 / this", "CPU s (fastest)", "fp32 / this, CPU"])
        for p in precisions:
            ratio = min(times["fp32"]) / min(times[p])
            ratio_cpu = min(cpu["fp32"]) / min(cpu[p])
            summary += compare(moment, snaps["fp32"], snaps[p], p)
            summary.append([f"{moment}, {p}: capture speed-up over fp32, wall (fastest runs; load {common.load_average():.2f})",
                            f"{ratio:.2f}x", "(information)", ""])
            summary.append([f"{moment}, {p}: the same in CPU seconds", f"{ratio_cpu:.2f}x", "(information)", ""])
    common.print_load(" at the end")
    print("\n== summary")
    common.print_table(summary, ["figure", "value", "bar", "verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
