"""Run by tests/test_run_dir.py: one of two trainings started together into one run directory.

``python race_worker.py RUN_DIR TRAINER_DIR ROWS BARRIER_DIR NAME``: builds a tiny BERT and a
LayerwatchCallback on ``ROWS`` rows, says it is ready (``BARRIER_DIR/ready-NAME``), waits
until every runner is ready, then trains. At its first step it waits for
``BARRIER_DIR/release`` (the test writes it once the other runner ended), so a run that got
the folder still holds it when the other one asks. Exits 3 with the error's text on stdout
when the folder was refused; every wait is bounded.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from conftest import make_trainer, tiny_bert, toy_dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from layerwatch import LayerwatchCallback  # noqa: E402

WAIT = 120.0


def wait_for(path, *others):
    deadline = time.monotonic() + WAIT
    while not all(os.path.exists(p) for p in (path, *others)):
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.02)


class HoldAtFirstStep(TrainerCallback):
    def __init__(self, release):
        self.release = release

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            wait_for(self.release)


def main():
    run_dir, trainer_dir, rows, barrier, name = sys.argv[1:6]
    train = toy_dataset(int(rows))
    watch = LayerwatchCallback({"train": train}, run_dir, method="pca", progress=False, overwrite=True)
    trainer = make_trainer(tiny_bert(), train, [watch, HoldAtFirstStep(os.path.join(barrier, "release"))], trainer_dir, epochs=1)
    open(os.path.join(barrier, f"ready-{name}"), "w").close()
    wait_for(*(os.path.join(barrier, f"ready-{n}") for n in ("a", "b")))
    try:
        trainer.train()
    except ValueError as exc:
        print(f"REFUSED {exc}", flush=True)
        sys.exit(3)
    print("TRAINED", flush=True)


if __name__ == "__main__":
    main()
