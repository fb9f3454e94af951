"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2` (CPU, gloo).

Trains a tiny BERT for one epoch with LayerwatchCallback and, on rank 0, saves the final
model so the test can compare the gathered vectors against a single-process capture.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from conftest import make_trainer, tiny_bert, toy_dataset  # noqa: E402

from layerwatch import LayerwatchCallback  # noqa: E402


def main(out: str) -> None:
    train, val = toy_dataset(40), toy_dataset(21, seed=1)
    model = tiny_bert(seed=0)
    watch = LayerwatchCallback({"train": train, "validation": val}, os.path.join(out, "lw"), method="pca",
                               max_samples=30, progress=False)
    trainer = make_trainer(model, train, [watch], os.path.join(out, "t"), epochs=1, ddp_backend="gloo")
    trainer.train()
    if trainer.is_world_process_zero():
        model.save_pretrained(os.path.join(out, "final"))
        with open(os.path.join(out, "world.txt"), "w") as fh:
            fh.write(str(trainer.args.world_size))


if __name__ == "__main__":
    main(sys.argv[1])
