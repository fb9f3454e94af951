"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2` (CPU, gloo).

Trains a tiny BERT for one epoch with LayerwatchCallback and, on rank 0, saves the final
model so the test can compare the gathered vectors against a single-process capture.

Modes (argv[2]): ``normal``; ``fail-open`` (rank 0 fails while preparing the run
directory); ``fail-capture`` (rank 1's capture fails at the end of the epoch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from conftest import make_trainer, tiny_bert, toy_dataset  # noqa: E402

from layerwatch import LayerwatchCallback  # noqa: E402

# Label names for the monitored column: "zebra" is rare, so one rank's share lacks it.
NAMES = ("ham", "spam", "zebra")


# Every measurement on: each rank reduces its own rows, rank 0 gathers (and attributes).
SETTINGS = dict(method="pca", max_samples=30, progress=False, precision="fp32", label_column="label_text", attention=True,
                attention_examples=3, attribution=True, attribution_examples=2, attribution_steps=4,
                attribution_target="prediction")


def with_names(ds):
    names = [NAMES[l] for l in ds["labels"]]
    names[3] = "zebra"
    return ds.add_column("label_text", names)


def main(out: str, mode: str) -> None:
    import torch.distributed as dist

    train, val = with_names(toy_dataset(40)), with_names(toy_dataset(21, seed=1))
    model = tiny_bert(seed=0)
    watch = LayerwatchCallback({"train": train, "validation": val}, os.path.join(out, "lw"), **SETTINGS)
    rank = int(os.environ.get("RANK", "0"))
    if mode == "fail-open" and rank == 0:
        def broken(*a, **k):
            raise OSError(28, "No space left on device")

        watch.monitor._open_main = broken
    if mode == "fail-capture" and rank == 1:
        real = watch.monitor.snapshotter.capture

        def capture(model, *args, **kwargs):
            if watch.monitor.last_step >= 0:
                raise RuntimeError("CUDA out of memory (injected on rank 1)")
            return real(model, *args, **kwargs)

        watch.monitor.snapshotter.capture = capture
    trainer = make_trainer(model, train.remove_columns("label_text"), [watch], os.path.join(out, "t"), epochs=1, ddp_backend="gloo")
    trainer.train()
    if trainer.is_world_process_zero():
        model.save_pretrained(os.path.join(out, "final"))
        with open(os.path.join(out, "world.txt"), "w") as fh:
            fh.write(str(trainer.args.world_size))
        with open(os.path.join(out, "failures.txt"), "w") as fh:
            fh.write("\n".join(watch.failures))
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "normal")
