"""Fine-tuning in bf16 on a CPU with bf16 instructions, against fp32: speed and accuracy.

What ``scripts/finetune_hateval.py --bf16`` would do: the packaged all-MiniLM-L6-v2 with a
fresh 2-class head fine-tuned by ``transformers.Trainer`` on a stratified subset of
``--train-rows`` HatEval train tweets for ``--epochs`` epoch(s), with the script's settings
(batch 32, lr 5e-5, max_length 128, length-grouped batches, dynamic padding, seed 42),
then evaluated on the 1,000 validation tweets (accuracy and macro-F1, as the script
reports them). No layerwatch callback: this measures training alone.

- ``fp32``: ``TrainingArguments(use_cpu=True, ...)``;
- ``bf16``: the same with ``bf16=True`` (the Trainer runs forward and loss under
  ``torch.autocast("cpu", dtype=torch.bfloat16)``; weights, gradients and the optimizer
  stay float32).

Each run is a fresh process, the two alternating ``--rounds`` times; the figures are
``trainer.train()``'s wall time (the fastest of each), its speed-up, and the validation
scores, with the load average next to each run. Scores of one seed differ by a few tenths
of a point from run to run of the same mode on a CPU (thread scheduling changes sums):
the difference between modes is to be read against that. Nothing is asserted.

Usage::

    python benchmarks/bf16_training.py                      # 2,000 tweets, 1 epoch, one round
    python benchmarks/bf16_training.py --rounds 2 --train-rows 9000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402

MODES = ("fp32", "bf16")


def _sampling() -> dict:
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def _run(mode: str, data_dir: str, train_rows: int, epochs: int, seed: int, max_length: int) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from layerwatch.data import stratified_subset

    hf_logging.set_verbosity_error()
    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path, seed=seed)
    texts, labels = common.read_split(data_dir, "train")
    keep = stratified_subset(labels, min(train_rows, len(labels)), seed)
    enc = tok([texts[i] for i in keep], truncation=True, max_length=max_length)
    from datasets import Dataset

    train = Dataset.from_dict({**{k: list(v) for k, v in enc.items()}, "label": [int(labels[i]) for i in keep]})
    vt, vl = common.read_split(data_dir, "validation")
    venc = tok(vt, truncation=True, max_length=max_length)
    val = Dataset.from_dict({**{k: list(v) for k, v in venc.items()}, "label": [int(v) for v in vl]})

    def compute_metrics(eval_pred):
        from sklearn.metrics import accuracy_score, f1_score

        logits, y = eval_pred
        pred = np.asarray(logits).argmax(-1)
        return {"accuracy": accuracy_score(y, pred), "macro_f1": f1_score(y, pred, average="macro")}

    with tempfile.TemporaryDirectory(prefix="lw-bf16-") as out:
        args = TrainingArguments(
            **_sampling(), output_dir=out, num_train_epochs=epochs, learning_rate=5e-5,
            per_device_train_batch_size=32, per_device_eval_batch_size=32, eval_strategy="no",
            logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, seed=seed,
            disable_tqdm=True, bf16=(mode == "bf16"),
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tok,
                          data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
        trainer.remove_callback(PrinterCallback)  # it prints every log line
        load = common.load_average()
        with common.Timer() as t:
            result = trainer.train()
        with common.Timer() as e:
            metrics = trainer.evaluate()
    return {
        "mode": mode, "seconds": t.seconds, "steps": int(result.global_step), "train_loss": float(result.training_loss),
        "accuracy": float(metrics["eval_accuracy"]), "macro_f1": float(metrics["eval_macro_f1"]),
        "eval_loss": float(metrics["eval_loss"]), "eval_seconds": e.seconds, "load": (load, common.load_average()),
        "threads": torch.get_num_threads(), "weights": str(next(model.parameters()).dtype),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="fp32 / bf16 pairs, each run in a fresh process (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=128, help="the script's default (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    common.require_data(args.data)
    common.model_path()
    import torch

    from layerwatch.precision import cpu_has_bf16

    if not cpu_has_bf16():
        print("NOTE: this CPU has no bf16 instructions (AVX512-BF16, AMX): bf16 is emulated here and the "
              "speed-up below is not what a CPU with them gets")
    print(f"fine-tuning MiniLM on {args.train_rows} HatEval tweets, {args.epochs} epoch(s), fp32 against bf16; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    common.print_load()
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            out = common.in_fresh_process(_run, mode, args.data, args.train_rows, args.epochs, args.seed, args.max_length)
            runs[mode].append(out)
            print(f"  round {r}, {mode}: train {out['seconds']:.1f} s ({out['steps']} steps), eval {out['eval_seconds']:.1f} s, "
                  f"val accuracy {out['accuracy']:.4f}, macro-F1 {out['macro_f1']:.4f}, train loss {out['train_loss']:.4f} "
                  f"(load {out['load'][0]:.1f} -> {out['load'][1]:.1f}; weights {out['weights']})", flush=True)
    best = {m: min(v, key=lambda x: x["seconds"]) for m, v in runs.items()}
    rows = [[m, f"{b['seconds']:.1f}", f"{b['seconds'] / b['steps']:.2f}", f"{b['eval_seconds']:.1f}",
             f"{np.mean([x['accuracy'] for x in runs[m]]):.4f}", f"{np.mean([x['macro_f1'] for x in runs[m]]):.4f}",
             f"{np.mean([x['train_loss'] for x in runs[m]]):.4f}"] for m, b in best.items()]
    print()
    common.print_table(rows, ["mode", "train s (fastest)", "s / step", "eval s", "val accuracy (mean)", "val macro-F1 (mean)", "train loss"])
    speed = best["fp32"]["seconds"] / best["bf16"]["seconds"]
    d_acc = np.mean([x["accuracy"] for x in runs["bf16"]]) - np.mean([x["accuracy"] for x in runs["fp32"]])
    d_f1 = np.mean([x["macro_f1"] for x in runs["bf16"]]) - np.mean([x["macro_f1"] for x in runs["fp32"]])
    print(f"\nbf16 training speed-up: {speed:.2f}x (fastest runs; load {best['bf16']['load'][0]:.1f} / {best['fp32']['load'][0]:.1f}); "
          f"validation accuracy {d_acc:+.4f}, macro-F1 {d_f1:+.4f} against fp32")
    common.print_load(" at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
