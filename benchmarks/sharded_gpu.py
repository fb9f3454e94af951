"""Sharded training on a GPU: the Trainer with FSDP2 and with DeepSpeed ZeRO-3, every
measurement layerwatch supports under sharding on, checked against a DDP run.

NOT RUN YET: no GPU was available when this script was written; docs/costs.md has no
figures from it. It ran on a CPU only with ``--dry-run`` (argument parsing and the
configurations it would train with).

For each engine (``ddp``, ``fsdp2``, ``zero3``) the script launches itself under
``torchrun --nproc_per_node=--gpus`` (world size 1 is enough to run each engine's code
path) and trains a BERT-shaped classifier with random weights, built in code, on token
rows generated in code, twice: without layerwatch and with ``layerwatch.watch`` (embeddings,
attention with its head view, and under DDP attribution; under sharding attribution=True
is refused at ``on_train_begin``, which the script checks after training). It prints:

- the training time without and with layerwatch, and the overhead;
- how far the sharded runs' stored vectors and attention statistics are from the DDP run's
  at the first snapshot (same weights: they must agree to float32 rounding, 1e-4) and at
  the last (after training; the engines' optimisers round differently, shown, not judged).

Usage::

    python benchmarks/sharded_gpu.py                       # all three engines, 1 GPU
    python benchmarks/sharded_gpu.py --engines fsdp2 --gpus 2 --layers 12 --hidden 768
    python benchmarks/sharded_gpu.py --dry-run             # print the plan (works on a CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ENGINES = ("ddp", "fsdp2", "zero3")
HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    p.add_argument("--gpus", type=int, default=1, help="processes per engine (world size); 1 runs each code path")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--rows", type=int, default=512, help="training rows")
    p.add_argument("--monitored", type=int, default=256, help="rows per monitored split (max_samples)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="sharded_gpu_runs")
    p.add_argument("--dry-run", action="store_true", help="print what would run, train nothing")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--watched", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        p.error(f"--engines={args.engines!r}: {bad or 'none'} not among {', '.join(ENGINES)}")
    for name in ("gpus", "layers", "hidden", "rows", "monitored", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)} must be at least 1")
    if args.hidden % 64:
        p.error(f"--hidden={args.hidden} must be a multiple of 64 (heads of 64)")
    args.engine_list = engines
    return args


def training_settings(engine: str, out: str, epochs: int) -> dict:
    """The TrainingArguments an engine trains with (as users set them)."""
    settings = dict(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=2e-4,
                    report_to=[], save_strategy="no", logging_strategy="epoch", disable_tqdm=True, seed=0,
                    ddp_backend="nccl")
    if engine == "fsdp2":
        settings.update(fsdp="full_shard", fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"],
                                                        "reshard_after_forward": True})
    elif engine == "zero3":
        settings.update(deepspeed={
            "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False},
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
            "optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
        })
    return settings


def watch_settings(engine: str, monitored: int) -> dict:
    return dict(method="pca", max_samples=monitored, progress=False, precision="fp32", attention=True,
                attention_examples=4, attribution=engine == "ddp", attribution_examples=2, attribution_steps=8,
                overwrite=True)


def rows(n: int, seed: int, vocab: int = 1000):
    from datasets import Dataset
    import numpy as np

    rng = np.random.default_rng(seed)
    ids, masks, labels = [], [], []
    for i in range(n):
        label = i % 2
        length = int(rng.integers(8, 48))
        body = rng.integers(10, vocab, size=length - 2)
        body[: length // 3] = 3 + label
        ids.append([1, *body.tolist(), 2])
        masks.append([1] * length)
        labels.append(label)
    return Dataset.from_dict({"input_ids": ids, "attention_mask": masks, "labels": labels})


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    import layerwatch

    engine = args.worker
    tag = f"{engine}-{'watched' if args.watched else 'bare'}"
    out = os.path.join(args.out, tag)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden, pad_token_id=0,
                        num_labels=2, attn_implementation="sdpa")
    model = BertForSequenceClassification(config)
    train, val = rows(args.rows, 0), rows(max(args.monitored, 8), 1)

    class Pad:
        def __call__(self, feats):
            width = max(len(f["input_ids"]) for f in feats)
            ids = torch.zeros((len(feats), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, f in enumerate(feats):
                ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                mask[i, : len(f["input_ids"])] = 1
            return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in feats])}

    targs = TrainingArguments(**training_settings(engine, os.path.join(out, "trainer"), args.epochs))
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=Pad())
    result: dict = {"engine": engine, "watched": args.watched, "world": targs.world_size}
    if args.watched:
        watch = layerwatch.watch(trainer, {"train": train, "validation": val}, output_dir=os.path.join(out, "lw"),
                                 **watch_settings(engine, args.monitored))
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    torch.cuda.synchronize()
    result["seconds"] = time.perf_counter() - started
    if args.watched:
        result["failures"] = watch.failures
    if args.watched and engine != "ddp":
        # attribution=True is refused at on_train_begin, before any step, naming why.
        refused = layerwatch.LayerwatchCallback({"train": train, "validation": val}, os.path.join(out, "refused"),
                                                **watch_settings("ddp", args.monitored)).attach(trainer)
        trainer.remove_callback(refused)
        try:
            refused.on_train_begin(trainer.args, trainer.state, trainer.control, model=trainer.model)
            result["refused"] = None
        except NotImplementedError as exc:
            result["refused"] = str(exc).split(":")[0]
    result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if trainer.is_world_process_zero():
        with open(os.path.join(args.out, f"{tag}.json"), "w") as fh:
            json.dump(result, fh)


def launch(args: argparse.Namespace, engine: str, watched: bool) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.gpus}",
           os.path.abspath(__file__), "--worker", engine, "--out", args.out, "--layers", str(args.layers),
           "--hidden", str(args.hidden), "--rows", str(args.rows), "--monitored", str(args.monitored),
           "--epochs", str(args.epochs)] + (["--watched"] if watched else [])
    if args.dry_run:
        print(" ".join(cmd))
        print("   TrainingArguments:", json.dumps({k: v for k, v in training_settings(engine, "<out>", args.epochs).items()
                                                    if k in ("fsdp", "fsdp_config", "deepspeed")}))
        if watched:
            print("   layerwatch:", json.dumps(watch_settings(engine, args.monitored)))
        return {}
    proc = subprocess.run(cmd, text=True, capture_output=True, timeout=3600)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        raise SystemExit(f"{engine} ({'watched' if watched else 'bare'}) failed with exit code {proc.returncode}")
    with open(os.path.join(args.out, f"{engine}-{'watched' if watched else 'bare'}.json")) as fh:
        return json.load(fh)


def compare(args: argparse.Namespace, engine: str) -> tuple[float, float, float]:
    """Largest differences to the DDP run: vectors at the first and the last snapshot, attention statistics."""
    import numpy as np

    from layerwatch import RunStore
    from layerwatch.measures.embeddings.files import load_snapshot

    mine, ddp = RunStore(os.path.join(args.out, f"{engine}-watched", "lw")), RunStore(os.path.join(args.out, "ddp-watched", "lw"))
    first = last = stats = 0.0
    for split in ("train", "validation"):
        keys = mine.keys(split)
        a, b = load_snapshot(mine, split, keys[0]), load_snapshot(ddp, split, keys[0])
        first = max(first, float(np.abs(a.pooled - b.pooled).max()))
        a, b = load_snapshot(mine, split, keys[-1]), load_snapshot(ddp, split, keys[-1])
        last = max(last, float(np.abs(a.pooled - b.pooled).max()))
        sa, sb = mine.load_arrays("attention", split, keys[0]), ddp.load_arrays("attention", split, keys[0])
        stats = max(stats, float(np.nanmax(np.abs(sa["stats"] - sb["stats"]))))
    return first, last, stats


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        worker(args)
        return
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU: this script times sharded training on a GPU (--dry-run prints the plan)")
        if "zero3" in args.engine_list:
            try:
                import deepspeed  # noqa: F401
            except ImportError:
                raise SystemExit("--engines includes zero3, which needs DeepSpeed: pip install deepspeed") from None
        os.makedirs(args.out, exist_ok=True)
    engines = ["ddp", *[e for e in args.engine_list if e != "ddp"]]  # DDP is the reference
    results = {}
    for engine in engines:
        results[engine] = (launch(args, engine, False), launch(args, engine, True))
    if args.dry_run:
        return
    print(f"\n{args.gpus} GPU(s), BERT {args.layers} layers x {args.hidden}, {args.rows} training rows, "
          f"{args.monitored} monitored rows per split, {args.epochs} epochs")
    print(f"{'engine':8} {'bare s':>8} {'watched s':>10} {'overhead':>9} {'peak GiB':>9} {'first snap':>11} "
          f"{'last snap':>10} {'attn stats':>11}  attribution")
    for engine, (bare, watched) in results.items():
        overhead = watched["seconds"] / bare["seconds"] - 1
        first = last = stats = 0.0
        if engine != "ddp":
            first, last, stats = compare(args, engine)
        refusal = "on" if engine == "ddp" else ("refused" if watched.get("refused") else "NOT refused (a bug)")
        print(f"{engine:8} {bare['seconds']:8.1f} {watched['seconds']:10.1f} {overhead:9.1%} {watched['peak_gib']:9.2f} "
              f"{first:11.2e} {last:10.2e} {stats:11.2e}  {refusal}")
        if watched.get("failures"):
            print(f"   {engine}: failures: {watched['failures']}")
        if engine != "ddp" and first > 1e-4:
            print(f"   {engine}: the first snapshot differs from DDP's by {first:.2e} (> 1e-4): a bug")


if __name__ == "__main__":
    main()
