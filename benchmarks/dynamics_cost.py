"""What ``dynamics=True`` costs training: the same fine-tuning with and without it.

Fine-tunes the packaged all-MiniLM-L6-v2 on HatEval (TweetEval layout; max_length 64,
batch 32, lr 5e-5, dynamic padding, no evaluation or checkpoints) twice, each in a fresh
process and in alternating order over ``--repeats`` rounds, with a ``LayerwatchCallback``
that differs only by ``dynamics`` (a small monitored subset and PCA, so that the
snapshots cost little and alike in both). Figures: the median wall time of
``trainer.train()`` per mode, the ratio with/without, and the seconds spent in the
dynamics' own epoch-end and checkpoint work (gathering, writing the tables, the data
map) and of its per-batch forward hook; their sum as a share of the training is a figure
free of the run-to-run noise of the wall times. Target (issue 22): at most 1% more on a full HatEval epoch.

``--tiny`` trains a random 2-layer BERT on generated token rows instead (no data, no
packaged model): a check that the script runs, not a figure for docs/costs.md.

Usage::

    python benchmarks/dynamics_cost.py                      # full HatEval epoch (long on 2 cores)
    python benchmarks/dynamics_cost.py --train-rows 2000    # a subset
    python benchmarks/dynamics_cost.py --tiny               # seconds; shows the script works
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

TARGET = 0.01


def _tiny_data(rows: int):
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(0)
    ids, labels = [], []
    for i in range(rows):
        y = i % 2
        body = rng.integers(10, 100, size=int(rng.integers(6, 30))).tolist()
        body[: len(body) // 3] = [3 + y] * (len(body) // 3)
        ids.append([1, *body, 2])
        labels.append(y)
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "label": labels})


def _tiny_model():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0, num_labels=2)
    return BertForSequenceClassification(cfg), None


def run_once(dynamics: bool, tiny: bool, rows: int, data_dir: str) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from layerwatch import LayerwatchCallback

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if tiny:
        train = _tiny_data(rows)
        model, tokenizer = _tiny_model()
        from transformers import default_data_collator  # noqa: F401

        class _Pad:
            def __call__(self, feats):
                width = max(len(f["input_ids"]) for f in feats)
                ids = torch.zeros((len(feats), width), dtype=torch.long)
                mask = torch.zeros((len(feats), width), dtype=torch.long)
                for i, f in enumerate(feats):
                    ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                    mask[i, : len(f["input_ids"])] = 1
                return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["label"] for f in feats])}

        collator = _Pad()
    else:
        path = common.model_path()
        tokenizer = common.load_tokenizer(path)
        model = common.load_classifier(path).train()
        texts, labels = common.read_split(data_dir, "train")
        train = common.tokenized_dataset(tokenizer, texts[:rows], labels[:rows], padding=False)
        collator = DataCollatorWithPadding(tokenizer)
    out = tempfile.mkdtemp(prefix="lw-dyn-bench-")
    watch = LayerwatchCallback({"train": train}, os.path.join(out, "lw"), method="pca", max_samples=200, metrics=False,
                               report=False, progress=False, dynamics=dynamics)
    spent = {"s": 0.0, "hook": 0.0}
    if dynamics:
        # The per-batch part: the forward hook on every training pass, timed where it runs.
        from layerwatch.measures.dynamics.recorder import Recorder

        real_hook = Recorder._hook

        def timed_hook(self, *a, **k):
            t = time.perf_counter()
            try:
                return real_hook(self, *a, **k)
            finally:
                spent["hook"] += time.perf_counter() - t

        Recorder._hook = timed_hook
        m = next(m for m in watch.monitor.measurements if m.name == "dynamics")
        for name in ("train_begin", "train_epoch_end", "train_save", "train_end"):
            real = getattr(m, name)

            def timed(*a, _real=real, **k):
                t = time.perf_counter()
                try:
                    return _real(*a, **k)
                finally:
                    spent["s"] += time.perf_counter() - t

            setattr(m, name, timed)
    args = TrainingArguments(
        output_dir=os.path.join(out, "t"), num_train_epochs=1, per_device_train_batch_size=32, learning_rate=5e-5,
        use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[watch])
    started = time.perf_counter()
    with common.quiet_warnings():
        trainer.train()
    return {"seconds": time.perf_counter() - started, "dynamics_seconds": spent["s"], "hook_seconds": spent["hook"],
            "rows": len(train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data/tweeteval-hate", help="TweetEval 'hate' folder")
    parser.add_argument("--train-rows", type=int, default=9000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a random tiny BERT on generated rows (a smoke run)")
    args = parser.parse_args()
    if not args.tiny:
        common.require_data(args.data)
    rows = min(args.train_rows, 512) if args.tiny else args.train_rows
    common.print_load("before")
    times: dict[bool, list[float]] = {False: [], True: []}
    own: list[float] = []
    hook: list[float] = []
    for r in range(args.repeats):
        for dyn in ((False, True) if r % 2 == 0 else (True, False)):
            res = common.in_fresh_process(run_once, dyn, args.tiny, rows, args.data)
            times[dyn].append(res["seconds"])
            if dyn:
                own.append(res["dynamics_seconds"])
                hook.append(res["hook_seconds"])
            print(f"round {r + 1}: dynamics={dyn}: {res['seconds']:.2f}s ({res['rows']} rows)", flush=True)
    off, on = common.median(times[False]), common.median(times[True])
    ratio = on / off
    common.print_table(
        [["without", f"{off:.2f}", "", "", ""],
         ["with", f"{on:.2f}", f"{ratio:.4f}", f"{common.median(own):.2f}", f"{common.median(hook):.2f}"]],
        ["dynamics", "train() s (median)", "ratio", "own epoch-end work s", "per-batch hook s"],
    )
    share = (common.median(own) + common.median(hook)) / on
    print(f"the dynamics' own work (epoch-end + per-batch hook): {share:.2%} of the training with it "
          "(free of the run-to-run noise of the wall times)")
    print(f"ratio with/without: {ratio:.4f} (target <= {1 + TARGET:.2f}): {common.verdict(ratio <= 1 + TARGET)}"
          + ("  [--tiny: a smoke run, not a figure]" if args.tiny else ""))
    common.print_load("after")


if __name__ == "__main__":
    main()
