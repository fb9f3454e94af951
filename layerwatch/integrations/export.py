"""``layerwatch export``: send a finished run to TensorBoard, W&B or MLflow from its stored files.

No model is needed: every snapshot is read back from the run directory (embeddings,
frames, layouts, ``metrics.csv``, texts) and handed, in training order, to the same
integrations that live logging uses, so that an exported run shows what live logging
would have shown (the frames as they are on disk now).

    layerwatch export RUN --tensorboard LOGDIR [--projector-layers last|all|none|0,6,12]
    layerwatch export RUN --wandb DIR [--wandb-project NAME]      (an offline run; `wandb sync` uploads it)
    layerwatch export RUN --mlflow [--mlflow-uri URI] [--mlflow-experiment NAME]
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

from ..snapshot import SnapshotKey
from ..store import DamagedFileError
from .base import Integration, RunInfo, parse_projector_layers, stored_keys

__all__ = ["add_export_command", "export_run", "send_run"]

DEFAULT_MLFLOW_URI = "./mlruns"


def send_run(run: RunInfo, integrations: Sequence[Integration]) -> list[SnapshotKey]:
    """Hand every stored snapshot of ``run`` to ``integrations`` in training order, then finish them.

    Args:
        run: The run (its ``splits=`` say which splits go).
        integrations: Where it goes.

    Returns:
        The snapshots sent.

    Raises:
        ValueError: the run holds no snapshot of the splits chosen.
    """
    keys = stored_keys(run)
    if not keys:
        raise ValueError(f"run {run.store.root!r} holds no snapshots yet; nothing to export")
    for key in keys:
        for integration in integrations:
            # None, None: each asks every measurement what it sends, read from the run
            # directory (its numbers from the stored tables), so a damaged file of one kind
            # (a split's vectors) never keeps back a sound one (its frame).
            integration.snapshot(run, key, None, None)
    for integration in integrations:
        integration.finish(run)
    return keys


def export_run(
    run_dir: str | os.PathLike,
    *,
    tensorboard: str | os.PathLike | None = None,
    wandb_dir: str | os.PathLike | None = None,
    wandb_project: str = "layerwatch",
    mlflow: bool = False,
    mlflow_uri: str | None = None,
    mlflow_experiment: str | None = None,
    projector_layers: Any = "last",
    splits: Sequence[str] | None = None,
) -> dict[str, str]:
    """Send a finished run to the tools named (at least one).

    Args:
        run_dir: The run directory (``output_dir`` of the callback).
        tensorboard: A TensorBoard log directory to write to.
        wandb_dir: A folder for an offline W&B run (``<wandb_dir>/wandb/offline-run-*``;
            ``wandb sync`` uploads it).
        wandb_project: The W&B project of that run.
        mlflow: Send the run to MLflow (a new run, named after the run directory).
        mlflow_uri: The MLflow tracking URI (implies ``mlflow``). Default:
            ``MLFLOW_TRACKING_URI``, else a file store in ``./mlruns``.
        mlflow_experiment: The MLflow experiment (created when missing; default: MLflow's
            default experiment).
        projector_layers: Layers for TensorBoard's Embedding Projector.
        splits: The splits to send (default: all stored).

    Returns:
        Where the run went: ``{"tensorboard": log dir, "wandb": offline run folder,
        "mlflow": "<tracking uri> run <run id>"}`` for the tools used.

    Raises:
        FileNotFoundError: ``run_dir`` holds no layerwatch run.
        ImportError: a tool's package is missing (with the install hint).
        ValueError: no tool named, a run without snapshots, an unknown split.
    """
    mlflow = mlflow or mlflow_uri is not None
    if tensorboard is None and wandb_dir is None and not mlflow:
        raise ValueError("name at least one place to export to: --tensorboard LOGDIR, --wandb DIR or --mlflow")
    projector_layers = parse_projector_layers(projector_layers)
    try:
        run = RunInfo.from_store(run_dir)
    except DamagedFileError as exc:
        # The one file a run cannot be sent without (labels, settings): not skipped, refused.
        raise ValueError(
            f"{exc.path} is damaged ({exc.reason}); without it the run cannot be exported (restore it from a backup, "
            "or rerun)"
        ) from None
    run.store.clean_temporary()
    available = run.store.splits()
    missing = [s for s in splits or () if s not in available]
    if missing:
        raise ValueError(f"run {os.fspath(run_dir)!r} has no stored split {missing[0]!r}; it has {available}")
    run.only = list(splits) if splits else None
    if not stored_keys(run):
        raise ValueError(f"run {os.fspath(run_dir)!r} holds no snapshots yet; nothing to export")
    # Every package is checked before anything is written, so a missing one costs nothing.
    integrations: list[Integration] = []
    where: dict[str, str] = {}
    if tensorboard is not None:
        from .tensorboard import TensorBoardIntegration, layerwatch_events, require_tensorboard

        require_tensorboard()
        earlier = layerwatch_events(tensorboard)
        if earlier is not None:
            # TensorBoard shows every event of a folder: a second export would double each image and scalar.
            raise ValueError(
                f"--tensorboard {os.fspath(tensorboard)!r} already holds layerwatch's images and scalars ({earlier}: an "
                "earlier export or live logging); exporting again would show each of them twice. Pass another (new) "
                "log directory, or delete that one first"
            )
        integrations.append(TensorBoardIntegration(tensorboard, scalars=True, projector_layers=projector_layers))
        where["tensorboard"] = os.fspath(tensorboard)
    if wandb_dir is not None:
        from .wandb import require_wandb

        require_wandb()
    if mlflow:
        from .mlflow import require_mlflow

        require_mlflow()
    if wandb_dir is not None:
        integration, folder = _wandb_run(run, wandb_dir, wandb_project)
        integrations.append(integration)
        where["wandb"] = folder
    if mlflow:
        integration, label = _mlflow_run(run, mlflow_uri, mlflow_experiment)
        integrations.append(integration)
        where["mlflow"] = label
    send_run(run, integrations)
    return where


def _wandb_run(run: RunInfo, folder: str | os.PathLike, project: str) -> tuple[Integration, str]:
    from .wandb import STEP_METRIC, WandbIntegration, require_wandb

    wandb = require_wandb()
    os.makedirs(folder, exist_ok=True)
    # Offline: nothing leaves the machine; `wandb sync` uploads the folder when wanted.
    target = wandb.init(
        project=project, name=run.name, dir=os.fspath(folder), mode="offline",
        config={"layerwatch": run.config}, job_type="layerwatch-export",
    )
    # The Trainer's WandbCallback declares the same x-axis, so an exported run reads like a live one.
    target.define_metric(STEP_METRIC)
    target.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
    return WandbIntegration(target, scalars=True, finish_run=True), os.path.dirname(target.dir)


def _mlflow_run(run: RunInfo, uri: str | None, experiment: str | None) -> tuple[Integration, str]:
    from .mlflow import MLflowIntegration, require_mlflow

    require_mlflow()
    from mlflow.tracking import MlflowClient

    uri = uri or os.getenv("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    if _is_file_store(uri):
        # MLflow 3 refuses file stores unless told otherwise; the user asked for one by name.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = "0"
    if experiment:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    created = client.create_run(experiment_id, run_name=run.name, tags={"layerwatch.run_dir": os.path.abspath(run.store.root)})
    run_id = created.info.run_id
    params = {k: run.config.get(k) for k in ("method", "pooling", "layers", "max_samples", "seed")}
    for k, v in params.items():
        if v is not None:
            client.log_param(run_id, f"layerwatch.{k}", str(v))
    return MLflowIntegration(run_id, uri, scalars=True, end_run=True), f"{uri} run {run_id}"


def _is_file_store(uri: str) -> bool:
    # A file: URI, or a plain path (no scheme); "databricks" is the one scheme written without "://".
    return uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks"))


# -- the command --------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> int:
    where = export_run(
        args.run_dir, tensorboard=args.tensorboard, wandb_dir=args.wandb, wandb_project=args.wandb_project,
        mlflow=args.mlflow, mlflow_uri=args.mlflow_uri, mlflow_experiment=args.mlflow_experiment,
        projector_layers=args.projector_layers, splits=args.splits,
    )
    if "tensorboard" in where:
        print(f"tensorboard: {where['tensorboard']}   (open: tensorboard --logdir {where['tensorboard']} --samples_per_plugin images=1000)")
    if "wandb" in where:
        print(f"wandb: {where['wandb']}   (upload: wandb sync {where['wandb']})")
    if "mlflow" in where:
        print(f"mlflow: {where['mlflow']}")
    return 0


def add_export_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``layerwatch export RUN --tensorboard LOGDIR | --wandb DIR | --mlflow ...``.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
    """
    p = subparsers.add_parser(
        "export", help="send a finished run to TensorBoard, W&B (offline) or MLflow from its stored files (no model needed)",
    )
    p.add_argument("run_dir", help="the output_dir of a LayerwatchCallback run")
    p.add_argument("--tensorboard", metavar="LOGDIR", help="write frames, metrics and the projector's vectors to this TensorBoard log directory")
    p.add_argument("--projector-layers", default="last", metavar="LAYERS",
                   help="layers for TensorBoard's Embedding Projector: last, all, none, or indices such as 0,6,12 (default: %(default)s)")
    p.add_argument("--wandb", metavar="DIR", help="write an offline W&B run under DIR/wandb/ (upload it with `wandb sync`)")
    p.add_argument("--wandb-project", default="layerwatch", help="the W&B project (default: %(default)s)")
    p.add_argument("--mlflow", action="store_true", help="send the run to MLflow as a new run")
    p.add_argument("--mlflow-uri", metavar="URI",
                   help=f"MLflow tracking URI, e.g. file:///path/mlruns (implies --mlflow; default: $MLFLOW_TRACKING_URI, else {DEFAULT_MLFLOW_URI})")
    p.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment (created when missing; default: MLflow's default)")
    p.add_argument("--splits", nargs="+", help="splits to send (default: all stored)")
    p.set_defaults(func=_cmd_export)
    return p
