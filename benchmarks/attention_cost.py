#!/usr/bin/env python
"""What attention statistics add to a snapshot's capture (issue: attention over training).

On the packaged all-MiniLM-L6-v2 and 1,000 HatEval validation tweets, the capture of one
split is timed three ways, interleaved and repeated (the fastest of each is reported):

- ``sdpa``: the pooled hidden states only, with transformers' default attention (SDPA);
- ``eager``: the same with eager attention (the only implementation that returns weights);
- ``eager + statistics``: eager attention, and the per-head statistics of every layer
  reduced batch by batch, with the full maps of 6 examples (``attention=True``).

Peak memory (RSS growth) of each is measured in a fresh process. The target: the
statistics add at most 15% to the capture time and a few MiB of memory; the figures say
whether eager attention itself costs more than that against SDPA on this machine, which
decides the default of ``attention``. The back half's cost (the table, 12 films with a
panel per split, the summary and the head view) is printed too.

    python benchmarks/attention_cost.py [--data FOLDER] [--rows 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

VARIANTS = ("sdpa", "eager", "eager + statistics")


def _setup(data_dir: str, rows: int):
    from layerwatch.config import LayerwatchConfig
    from layerwatch.measures import Attention, AttentionMeasurement, EmbeddingsMeasurement
    from layerwatch.measures.base import SplitPlan
    import numpy as np

    path = common.model_path()
    tokenizer = common.load_tokenizer(path)
    texts, labels = common.read_split(data_dir, "validation")
    texts, labels = texts[:rows], labels[:rows]
    dataset = common.tokenized_dataset(tokenizer, texts, labels, padding=False)
    model = common.load_classifier(path)
    config = LayerwatchConfig(output_dir=tempfile.mkdtemp(), measures=[Attention()], progress=False)
    indices = np.arange(len(texts))
    plan = SplitPlan("validation", indices, indices, len(indices), labels, tuple(range(7)), config)
    return model, tokenizer, dataset, plan, config, EmbeddingsMeasurement, AttentionMeasurement


def _capture(variant: str, model, tokenizer, dataset, plan, config, EmbeddingsMeasurement, AttentionMeasurement):
    from layerwatch.capturing import capture_split, eager_attention
    from layerwatch.model_info import ModelInfo

    measurements = [EmbeddingsMeasurement(config)]
    if variant == "eager + statistics":
        attention = AttentionMeasurement(config)
        plan.model_info = ModelInfo(tokenizer=tokenizer, labels={"validation": plan.labels}, indices={"validation": plan.indices})
        attention.prepare(model, plan.model_info)
        measurements.append(attention)
    with eager_attention(model, variant == "eager"):
        with common.Timer() as t:
            parts = capture_split(model, dataset, plan, measurements, batch_size=32)
    return t.seconds, parts


def _timed(data_dir: str, rows: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    setup = _setup(data_dir, rows)
    times = {v: [] for v in VARIANTS}
    _capture("sdpa", *setup)  # warm up
    for _ in range(repeats):
        for v in VARIANTS:
            times[v].append(_capture(v, *setup)[0])
    return {v: min(t) for v, t in times.items()}


def _memory(variant: str, data_dir: str, rows: int) -> int:
    setup = _setup(data_dir, rows)
    model = setup[0]
    for p in model.parameters():  # make the weights resident before measuring
        p.data.add_(0)
    _capture("sdpa", *setup)
    with common.PeakRSS() as peak:
        _capture(variant, *setup)
    return peak.growth


def _back_half(data_dir: str, rows: int) -> tuple[float, float]:
    """Seconds of the attention measurement's back half for one later snapshot (two splits)."""
    import numpy as np

    from layerwatch.measures.base import Context
    from layerwatch.measures.embeddings.files import save_snapshot
    from layerwatch.snapshot import Snapshot, SnapshotKey
    from layerwatch.store import RunStore

    model, tokenizer, dataset, plan, config, EmbeddingsMeasurement, AttentionMeasurement = _setup(data_dir, rows)
    _, parts = _capture("eager + statistics", model, tokenizer, dataset, plan, config, EmbeddingsMeasurement, AttentionMeasurement)
    store = RunStore(config.output_dir)
    ctx = Context(store, config, ["not-hate", "hate"], reference_split="train")
    attention = AttentionMeasurement(config)
    seconds = []
    for epoch in range(3):
        key = SnapshotKey(epoch, epoch * 100)
        snaps = {}
        for split in ("train", "validation"):
            snap = Snapshot(labels=plan.labels, indices=plan.indices, epoch=epoch, step=epoch * 100, split=split)
            snap.results["embeddings"] = {"pooled": np.zeros((7, len(plan.indices), 2), np.float32), "layers": np.arange(7)}
            AttentionMeasurement(config).assemble(parts["attention"], snap)
            if split == "train":
                for k in ("maps", "positions", "lengths", "tokens", "neuron_q", "neuron_k"):
                    snap.results["attention"].pop(k, None)
            save_snapshot(store, snap, key)
            attention.save(store, snap, key)
            snaps[split] = snap
        with common.Timer() as t:
            attention.process(ctx, key, snaps)
        seconds.append(t.seconds)
    return seconds[0], min(seconds[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    common.require_data(args.data, ("validation",))
    common.print_load()
    times = common.in_fresh_process(_timed, args.data, args.rows, args.repeats)
    memory = {v: common.in_fresh_process(_memory, v, args.data, args.rows) for v in VARIANTS}
    base, eager, stats = times["sdpa"], times["eager"], times["eager + statistics"]
    print(f"\ncapture of {args.rows} validation tweets (MiniLM, batch 32), fastest of {args.repeats}:")
    common.print_table(
        [[v, f"{times[v]:.2f} s", f"{times[v] / base:.2f}x", common.mib(memory[v])] for v in VARIANTS],
        ["variant", "time", "vs sdpa", "peak RSS growth"],
    )
    added = stats / eager - 1
    print(f"\nstatistics on top of eager attention: +{added * 100:.1f}% time, "
          f"{common.mib(memory['eager + statistics'] - memory['eager'])} memory  (target: <= 15%, a few MiB): "
          f"{common.verdict(added <= 0.15)}")
    print(f"eager attention itself against sdpa: +{(eager / base - 1) * 100:.1f}%")
    print(f"attention=True against the default capture: +{(stats / base - 1) * 100:.1f}%")
    first, later = common.in_fresh_process(_back_half, args.data, args.rows)
    print(f"back half of one snapshot (table, 12 films of two splits, summary, head view): first {first:.1f} s, later {later:.1f} s")
    common.print_load(" (after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
