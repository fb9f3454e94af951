"""Run by tests/test_dynamics.py under `torchrun --nproc_per_node=2` (CPU, gloo).

Trains a tiny BERT for two epochs with ``dynamics=True`` and, beside it, records on each
rank every training batch as the model saw it (token ids, mask, labels, logits) with a
plain hook of its own, so that the test can rebuild the one-process table of the same
batches and compare it with the table the ranks gathered.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from conftest import make_trainer, tiny_bert, toy_dataset  # noqa: E402

from layerwatch import LayerwatchCallback  # noqa: E402


def unique_rows(n: int = 40):
    """Toy rows whose token ids differ (the second token is the row's own), so that the
    test can tell every row by its ids without the duplicates' rule."""
    return toy_dataset(n).map(lambda r, i: {"input_ids": [r["input_ids"][0], 10 + i, *r["input_ids"][2:]]}, with_indices=True)


def main(out: str) -> None:
    import torch.distributed as dist

    train, val = unique_rows(), toy_dataset(16, seed=1)
    model = tiny_bert(seed=0)
    watch = LayerwatchCallback({"train": train, "validation": val}, os.path.join(out, "lw"), method="pca", max_samples=16,
                               progress=False, metrics=False, report=False, precision="fp32", dynamics=True)
    seen = []

    def record(module, args, kwargs, output):
        if module.training and torch.is_grad_enabled():
            seen.append({k: kwargs[k].detach().cpu() for k in ("input_ids", "attention_mask", "labels")}
                        | {"logits": output.logits.detach().float().cpu()})

    handle = model.register_forward_hook(record, with_kwargs=True)
    trainer = make_trainer(model, train, [watch], os.path.join(out, "t"), epochs=2, ddp_backend="gloo")
    trainer.train()
    handle.remove()
    rank = int(os.environ.get("RANK", "0"))
    torch.save(seen, os.path.join(out, f"batches-{rank}.pt"))
    if trainer.is_world_process_zero():
        with open(os.path.join(out, "world.txt"), "w") as fh:
            fh.write(str(trainer.args.world_size))
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
