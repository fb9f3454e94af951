"""Would taking the validation vectors from the Trainer's own evaluation pass pay?

When training evaluates every epoch (``eval_strategy="epoch"``) and the monitored
validation rows are the ``eval_dataset``, the Trainer already runs the model over them.
Hooks during ``trainer.evaluate()`` could pool every hidden state there, and layerwatch
would skip its own pass over that split. This benchmark measures what that would save,
on the packaged all-MiniLM-L6-v2 with a fresh head and the 1,000 HatEval validation
tweets (the whole split: layerwatch's default ``max_samples`` takes all of it):

- ``evaluate``: ``trainer.evaluate()`` as it is (eval batch ``--eval-batch-size``);
- ``evaluate + hooks``: the same with a prototype of the hooks: a forward pre-hook on the
  model that keeps the attention mask, forward hooks on the embeddings and on every
  encoder layer that mean-pool their output (``layerwatch.pooling.mean_pool``), rows in
  the order of the Trainer's sequential evaluation sampler;
- ``capture``: layerwatch's own pass over the same rows, ``precision="auto"`` (its
  default) and ``"fp32"``.

Wall seconds, the three interleaved, the fastest of ``--repeats``; the saving per
snapshot is ``capture - (evaluate + hooks - evaluate)``, and it is set against the time
of one training epoch on the 9,000 HatEval train tweets (estimated from ``--steps`` timed
optimizer steps at batch 32). The hooked vectors are compared with a separate fp32
capture of the same rows (the Trainer's batches are padded differently, so the figures
agree to float rounding, not bit for bit). Nothing is asserted.

Usage::

    python benchmarks/eval_pass.py                # about 3 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402


class PoolingHooks:
    """Forward hooks that mean-pool the embeddings and every encoder layer of a BERT-style
    model during whatever forward passes run while they are installed (a prototype)."""

    def __init__(self, model):
        from layerwatch.capturing import unwrap

        base = unwrap(model)
        encoder = getattr(base, base.base_model_prefix)
        self.modules = [encoder.embeddings, *encoder.encoder.layer]
        self.model = model
        self.batches: list[list[np.ndarray]] = []
        self._mask = None
        self._current: list | None = None
        self._handles: list = []

    def _pre(self, module, args, kwargs):
        self._mask = kwargs.get("attention_mask")
        self._current = [None] * len(self.modules)
        self.batches.append(self._current)

    def _hook(self, index: int):
        from layerwatch.pooling import mean_pool

        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            mask = self._mask if self._mask is not None else hidden.new_ones(hidden.shape[:2])
            self._current[index] = mean_pool(hidden.detach(), mask).float().cpu().numpy()

        return hook

    def __enter__(self) -> "PoolingHooks":
        self.batches = []
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._pre, with_kwargs=True))
            for i, m in enumerate(self.modules):
                self._handles.append(m.register_forward_hook(self._hook(i)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def pooled(self) -> np.ndarray:
        """(hidden states, rows, dim) in the order the rows were evaluated."""
        return np.stack([np.concatenate([b[j] for b in self.batches]) for j in range(len(self.modules))])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="the Trainer's eval batch (its default is 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps timed to estimate an epoch (default: %(default)s)")
    args = parser.parse_args(argv)
    common.require_data(args.data)
    path = common.model_path()

    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    import layerwatch

    hf_logging.set_verbosity_error()
    print(f"evaluation pass against layerwatch's own pass; torch {torch.__version__}, {torch.get_num_threads()} threads")
    common.print_load()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path)
    vt, vl = common.read_split(args.data, "validation")
    val = common.tokenized_dataset(tok, vt, vl, padding=False)
    tt, tl = common.read_split(args.data, "train")
    train = common.tokenized_dataset(tok, tt, tl, padding=False)
    with tempfile.TemporaryDirectory(prefix="lw-eval-") as out:
        targs = TrainingArguments(
            output_dir=out, per_device_eval_batch_size=args.eval_batch_size, per_device_train_batch_size=32,
            report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, max_steps=args.steps,
            save_strategy="no", logging_strategy="no", learning_rate=5e-5,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=val, processing_class=tok,
                          data_collator=DataCollatorWithPadding(tok))
        trainer.remove_callback(PrinterCallback)  # it prints every evaluation's numbers
        hooks = PoolingHooks(model)
        rows = np.arange(len(val))

        def evaluate():
            trainer.evaluate()

        def evaluate_hooked():
            with hooks:
                trainer.evaluate()

        def capture_auto():
            layerwatch.capture(model, val, indices=rows, precision="auto")

        def capture_fp32():
            layerwatch.capture(model, val, indices=rows, precision="fp32")

        kinds = {"evaluate": evaluate, "evaluate + hooks": evaluate_hooked, "capture (precision='auto')": capture_auto,
                 "capture (precision='fp32')": capture_fp32}
        evaluate()  # warm-up, not counted
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.repeats):
            for name, fn in kinds.items():
                with common.Timer() as t:
                    fn()
                times[name].append(t.seconds)
            print(f"  round {r}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()) + f" (load {common.load_average():.2f})", flush=True)
        best = {k: min(v) for k, v in times.items()}
        common.print_table([[k, f"{best[k]:.2f}", " ".join(f"{x:.2f}" for x in v)] for k, v in times.items()], ["", "fastest s", "runs"])

        with hooks:
            trainer.evaluate()
        hooked = hooks.pooled()
        separate = layerwatch.capture(model, val, indices=rows, precision="fp32").pooled
        cos = (hooked * separate).sum(-1) / np.linalg.norm(hooked, axis=-1) / np.linalg.norm(separate, axis=-1)
        print(f"hooked vectors against a separate fp32 capture: max |difference| {np.abs(hooked - separate).max():.2e}, "
              f"min cosine {cos.min():.6f} ({hooked.shape[0]} hidden states x {hooked.shape[1]} rows)")

        model.train()
        with common.Timer() as t:
            trainer.train()
        step = t.seconds / args.steps
        epoch = step * int(np.ceil(9000 / 32))
        model.eval()

    hook_cost = best["evaluate + hooks"] - best["evaluate"]
    for kind in ("capture (precision='auto')", "capture (precision='fp32')"):
        saving = best[kind] - hook_cost
        print(f"saving per snapshot against {kind}: {best[kind]:.2f} - {hook_cost:.2f} = {saving:.2f} s; "
              f"{saving / epoch:.1%} of a 9,000-tweet epoch ({epoch:.0f} s estimated from {args.steps} steps at "
              f"{step:.2f} s; load {common.load_average():.2f})")
    common.print_load(" at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
