"""Run by tests/test_sharded.py under `torchrun --nproc_per_node=2` (CPU, gloo).

Shards a tiny BERT with FSDP2 (``fully_shard`` on every layer and on the root) and drives
the monitor's capture directly (the Trainer falls back to DDP on a CPU). The splits do not
divide evenly: one rank has fewer rows and fewer batches than the other (validation: 11
and 10 rows in 3 and 2 batches), so it runs a padding batch.

Modes (argv[2]):
``normal``: one snapshot with embeddings and attention; attribution=True refused before
any step; the attention norms' hooks (output projection gathered) run in lockstep; a
sharded weight read whole outside a forward pass.
``fsdp1``: the same model under FSDP1, through the callback's on_train_begin as the Trainer
calls it: captured through the wrapper the Trainer holds, refused without it.
``fail``: rank 1 fails in the first snapshot (a measurement's per-batch step) and in the
second (reading its rows of the second split); every rank skips both, the third is stored.
"""

import datetime
import importlib
import json
import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import tiny_bert, toy_dataset  # noqa: E402

# Every rank's batches: validation 21 rows -> 11 and 10 rows -> 3 and 2 batches of 5.
SETTINGS = dict(method="pca", max_samples=30, progress=False, precision="fp32", batch_size=5, attention=True,
                attention_examples=3, on_error="warn")


def splits():
    return {"train": toy_dataset(40), "validation": toy_dataset(21, seed=1), "small": toy_dataset(5, seed=2)}


def shard(model):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    for layer in model.bert.encoder.layer:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def normal(out: str, rank: int) -> None:
    from layerwatch import LayerwatchCallback
    from layerwatch import distributed as dist
    from layerwatch.sharding import engine, full_weight
    from layerwatch.snapshot import SnapshotKey

    model = shard(tiny_bert(seed=0))
    watch = LayerwatchCallback(splits(), os.path.join(out, "lw"), **SETTINGS)
    watch.setup(model)
    assert watch.monitor.engine == "fsdp2", watch.monitor.engine
    watch.monitor.snapshot(model, SnapshotKey(0), fatal=True)
    result = {"engine": engine(model), "world": torch.distributed.get_world_size()}

    # A weight read outside a forward pass: gathered whole on every rank, then released.
    dense = model.bert.encoder.layer[1].attention.output.dense
    whole = full_weight(dense).numpy()
    reference = tiny_bert(seed=0).bert.encoder.layer[1].attention.output.dense.weight.detach().numpy()
    result["full_weight_error"] = float(np.abs(whole - reference).max())
    result["shard_rows"] = int(dense.weight.to_local().shape[0])

    # attribution=True is refused before any step, naming why.
    refused = LayerwatchCallback(splits(), os.path.join(out, "refused"), **{**SETTINGS, "attribution": True,
                                                                            "attribution_examples": 2})
    try:
        refused.check_model(model)
        result["refusal"] = None
    except NotImplementedError as exc:
        result["refusal"] = str(exc)
    # The attention norms' hooks read the output projection whole in the lockstep pass.
    monitor = refused.monitor
    for m in monitor.measurements:
        m.prepare(model, monitor.model_info)
    monitor.engine, monitor.runner, monitor._checked = "fsdp2", model, True
    gathered = dist.gather_splits(monitor.snapshotter.capture(model), {n: len(s.indices) for n, s in monitor.splits.items()})
    if rank == 0:
        shares = {split: parts["attribution"].sums["shares_sum"] / int(parts["attribution"].sums["rows"])
                  for split, parts in gathered.items() if parts is not None}
        np.savez(os.path.join(out, "shares.npz"), **shares)
        with open(os.path.join(out, "result.json"), "w") as fh:
            json.dump(result, fh)


def fsdp1(out: str, rank: int) -> None:
    """FSDP1 hides its wrapper from callbacks: given the wrapper (the Trainer's
    ``model_wrapped``), the capture runs through it; without it, refused before any step."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    from layerwatch import LayerwatchCallback

    model = tiny_bert(seed=0)
    wrapped = FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True)
    # What the Trainer hands callbacks under FSDP1: its arguments and the unwrapped model.
    args = SimpleNamespace(fsdp=True, output_dir=os.path.join(out, "t"), report_to=[])
    state = SimpleNamespace(is_world_process_zero=rank == 0, global_step=0, epoch=0.0, log_history=[])
    blind = LayerwatchCallback(splits(), os.path.join(out, "blind"), **SETTINGS)
    try:
        blind.on_train_begin(args, state, None, model=model)
        refusal = None
    except ValueError as exc:
        refusal = str(exc)
    watch = LayerwatchCallback(splits(), os.path.join(out, "lw"), **SETTINGS)
    watch.attach(SimpleNamespace(model_wrapped=wrapped, args=args))  # the Trainer's attribute
    watch.on_train_begin(args, state, None, model=model)  # checks, opens the run, first snapshot
    if rank == 0:
        with open(os.path.join(out, "result.json"), "w") as fh:
            json.dump({"engine": watch.monitor.engine, "runner_is_wrapper": watch.monitor.runner is wrapped,
                       "refusal": refusal, "flat_shard": list(model.bert.encoder.layer[0].attention.output.dense.weight.shape)}, fh)


def fail(out: str, rank: int) -> None:
    from layerwatch import LayerwatchCallback
    from layerwatch.measures.embeddings.measure import EmbeddingsMeasurement
    from layerwatch.snapshot import SnapshotKey

    capture_module = importlib.import_module("layerwatch.capturing")
    model = shard(tiny_bert(seed=0))
    watch = LayerwatchCallback(splits(), os.path.join(out, "lw"), **SETTINGS)
    watch.setup(model)
    if rank == 1:
        real_start, real_read = EmbeddingsMeasurement.start, capture_module.read_inputs
        state = {"snapshot": 0}

        def start(self, plan):
            acc = real_start(self, plan)
            if state["snapshot"] == 0:
                def update(batch):
                    raise RuntimeError("injected failure in rank 1's first batch")
                acc.update = update
            return acc

        def read(dataset, indices, pad):
            if state["snapshot"] == 1 and len(dataset) == 21:
                raise OSError("injected read failure on rank 1")
            return real_read(dataset, indices, pad)

        EmbeddingsMeasurement.start = start
        capture_module.read_inputs = read
    for step in range(3):
        if rank == 1:
            state["snapshot"] = step
        watch.monitor.snapshot(model, SnapshotKey(step, step, True))
    if rank == 0:
        with open(os.path.join(out, "failures.json"), "w") as fh:
            json.dump(watch.failures, fh)


def main(out: str, mode: str) -> None:
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = torch.distributed.get_rank()
    {"normal": normal, "fsdp1": fsdp1, "fail": fail}[mode](out, rank)
    torch.distributed.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "normal")
