"""t-SNE layouts on a CUDA GPU (TorchDR) against the CPU path, at 10,000 rows.

For each of ``--rows``: every layer of ``--layers`` x ``--dim`` vectors over ``--epochs``
snapshots (MiniLM's real vectors with ``--vectors minilm``, as ``benchmarks/scale.py
--layouts``; BERT-shaped synthetic ones otherwise) laid out by ``Reducer(backend="torchdr",
device=--device)`` and by the CPU path (``--cpu-backend``, openTSNE by default), tied and
independent, with the seconds of the fresh first snapshot and of the later warm-started
ones, and the alignment bars of docs/costs.md (moves >= 3x less than independent fits,
neighbour recall >= 90% of theirs, 2-D silhouette within 0.1) for each.

Needs ``pip install torch==<your CUDA torch> "layerwatch[gpu]"`` and a CUDA device; on a
machine without one it says so and exits (status 0). ``--device cpu`` runs TorchDR on the
CPU, to check the script itself (slow; not a figure to report).

Usage::

    python benchmarks/gpu_layouts.py                                # 10,000 rows, 13 x 768 (BERT-base), 3 snapshots
    python benchmarks/gpu_layouts.py --vectors minilm --layers 7 --dim 384
    python benchmarks/gpu_layouts.py --device cpu --rows 300 --layers 1 --epochs 2   # a check of the script
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import scale  # noqa: E402


def _measure(n: int, layers: int, dim: int, epochs: int, device: str, cpu_backend: str, vectors: str, data: str, cache: str) -> dict:
    import alignment
    from layerwatch.reduce import thread_limit

    if vectors == "minilm":
        pooled, labels = scale.minilm_vectors(data, cache, max(n, 10000), epochs)
        pooled, labels = [p[:layers, :n] for p in pooled], labels[:n]
    else:
        pooled, labels = scale._layer_vectors(n, layers, dim, epochs)
    out = {}
    with common.quiet_warnings(), thread_limit(1):
        for name, backend, dev in (("torchdr", "torchdr", device), (cpu_backend, cpu_backend, "cpu")):
            if device.startswith("cuda") and backend == "torchdr":
                import torch

                torch.cuda.synchronize()
            tied = scale._backend_figures(pooled, labels, backend, True, dev)
            free = scale._backend_figures(pooled, labels, backend, False, dev)
            out[name] = {
                "fresh": float(tied["wall"][0]), "warm": float(tied["wall"][1:].mean()),
                "bars": alignment.bars(tied["figures"], free["figures"]),
            }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000", help="comma-separated row counts (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=13, help="layers (default: %(default)s, BERT-base's hidden states)")
    parser.add_argument("--dim", type=int, default=768, help="dimensions (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="snapshots, the first fresh (default: %(default)s)")
    parser.add_argument("--device", default="cuda", help="TorchDR's device (default: %(default)s)")
    parser.add_argument("--cpu-backend", default="opentsne", choices=("opentsne", "sklearn"))
    parser.add_argument("--vectors", choices=("synthetic", "minilm"), default="synthetic")
    parser.add_argument("--data", default=common.DEFAULT_DATA)
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "layerwatch-scale-benchmark"))
    args = parser.parse_args(argv)
    from layerwatch.config import require
    from layerwatch.reduce import TORCHDR_HINT, gpu_unavailable_reason

    try:
        require("torchdr", TORCHDR_HINT)
    except ImportError as exc:
        common.skip(str(exc))
    if args.device.startswith("cuda") and gpu_unavailable_reason():
        common.skip(f"no GPU layouts here: {gpu_unavailable_reason()} (pass --device cpu to check the script on the CPU)")
    common.print_load()
    table = []
    for n in [int(r) for r in args.rows.split(",") if r.strip()]:
        started = time.perf_counter()
        r = _measure(n, args.layers, args.dim, args.epochs, args.device, args.cpu_backend, args.vectors, args.data, args.cache_dir)
        base = r[args.cpu_backend]
        for name, cell in r.items():
            bars = "; ".join(f"{b}: {fig} {'ok' if ok else 'FAIL'}" for b, fig, ok in cell["bars"])
            table.append([f"{n:,}", name, f"{cell['fresh']:.1f}", f"{cell['warm']:.1f}",
                          f"{base['fresh'] / cell['fresh']:.2f}x", f"{base['warm'] / cell['warm']:.2f}x", bars])
        print(f"  {n:,} rows done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nt-SNE of {args.layers} layers x {args.dim} dims ({args.vectors}); wall seconds of all layers; "
          f"TorchDR on {args.device}, the CPU path one map at a time on one thread")
    common.print_table(table, ["rows", "backend", "fresh s", "warm s (mean)", "fresh speed-up", "warm speed-up", "alignment bars"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
