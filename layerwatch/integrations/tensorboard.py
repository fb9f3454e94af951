"""TensorBoard: the frames as images (the step slider plays the film), the metrics as
scalars, and the pooled vectors for the Embedding Projector.

What a run adds to a TensorBoard log directory (the embeddings' part; every other
measurement adds what its ``sends`` gives: scalars, images ``layerwatch/<name>``, projector
vectors):

- ``layerwatch/<split>``: one image per snapshot at the snapshot's global step, the frame
  PNG that layerwatch drew (a panel per layer);
- ``layerwatch/<split>/<metric>/layer_<i>``: the per-layer metrics as scalars at the same
  step (left out when they already reached this log directory through ``Trainer.log``);
- the Embedding Projector (``projector_config.pbtxt`` and ``<step>/<tag>/``): each
  snapshot's pooled vectors of the chosen layers (default: the last one), tagged
  ``layerwatch/<split>/layer_<i>``, with per-row metadata columns ``label``,
  ``prediction`` (when the model has a head), ``text`` (when known) and ``row``. TensorBoard
  colours points by a column of at most 50 values: label or prediction.

During training it writes with the Trainer's own ``TensorBoardCallback`` writer when there
is one (one log directory, one writer); otherwise with a ``SummaryWriter`` of its own,
the same class the Trainer uses, so that ``layerwatch export`` writes what live logging
would have written.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..measures.base import Image, Scalar, Vectors
from ..snapshot import Snapshot, SnapshotKey
from ..store import atomic_write_text
from .base import Integration, RunInfo, parse_projector_layers, projector_positions, read_image

__all__ = ["TensorBoardIntegration", "layerwatch_events", "require_tensorboard", "trainer_tensorboard_callback", "trainer_logging_dir"]

INSTALL_HINT = 'pip install "layerwatch[tensorboard]"'


def require_tensorboard() -> Any:
    """The ``SummaryWriter`` class the Trainer would use, or an ImportError with the install hint."""
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it, and says so less clearly)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            f"sending layerwatch to TensorBoard needs the tensorboard package, which is not installed; {INSTALL_HINT}"
        ) from None
    return SummaryWriter


def trainer_tensorboard_callback(trainer: Any) -> Any:
    """The Trainer's ``TensorBoardCallback`` (from ``report_to``), or None."""
    handler = getattr(trainer, "callback_handler", None)
    for cb in getattr(handler, "callbacks", ()) or ():
        # By name, so that asking never imports the integrations module of transformers.
        if type(cb).__name__ == "TensorBoardCallback" and hasattr(cb, "tb_writer"):
            return cb
    return None


def trainer_logging_dir(args: Any = None) -> str | None:
    """Where the Trainer's TensorBoard callback writes, as transformers decides it.

    ``TENSORBOARD_LOGGING_DIR`` when set; otherwise ``<output_dir>/runs/<date>_<host>``,
    whose time stamp is taken when training begins, so it is only a guess before then
    (None without ``args``).
    """
    env = os.getenv("TENSORBOARD_LOGGING_DIR")
    if env:
        return os.path.expanduser(env)
    if args is None or not getattr(args, "output_dir", None):
        return None
    from transformers.integrations.integration_utils import default_logdir

    return os.path.join(args.output_dir, default_logdir())


def layerwatch_events(log_dir: str | os.PathLike) -> str | None:
    """The first file of ``log_dir`` that already holds layerwatch's images, scalars or
    projector vectors (an earlier export, or live logging), or None.

    Event files are read with TensorBoard's own loader until a ``layerwatch/`` tag shows up;
    a file it cannot read is passed over.
    """
    folder = os.fspath(log_dir)
    if not os.path.isdir(folder):
        return None
    config = os.path.join(folder, "projector_config.pbtxt")
    if os.path.isfile(config):
        with open(config, encoding="utf-8", errors="replace") as fh:
            if 'tensor_name: "layerwatch/' in fh.read():
                return config
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if "tfevents" not in f:
                continue
            path = os.path.join(root, f)
            try:
                for event in EventFileLoader(path).Load():
                    summary = getattr(event, "summary", None)
                    if summary is not None and any(v.tag.startswith("layerwatch/") for v in summary.value):
                        return path
            except Exception:  # a damaged event file of someone else's: not ours to judge
                continue
    return None


def _read_projector(folder: str | None) -> list:
    """The embeddings listed in ``folder``'s ``projector_config.pbtxt`` (none when absent or unreadable)."""
    if folder is None:
        return []
    path = os.path.join(folder, "projector_config.pbtxt")
    if not os.path.isfile(path):
        return []
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    config = projector_config_pb2.ProjectorConfig()
    try:
        with open(path, encoding="utf-8") as fh:
            text_format.Parse(fh.read(), config)
    except (OSError, ValueError, text_format.ParseError):
        return []
    return list(config.embeddings)


def _write_projector(folder: str | None, before: list, after: list) -> None:
    """List in ``projector_config.pbtxt`` every embedding of ``before`` and ``after`` (once each, in order)."""
    names = {e.tensor_name for e in after}
    missing = [e for e in before if e.tensor_name not in names]
    if folder is None or not missing:
        return
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    config = projector_config_pb2.ProjectorConfig()
    config.embeddings.extend(missing + after)
    atomic_write_text(os.path.join(folder, "projector_config.pbtxt"), text_format.MessageToString(config))


def _same_dir(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


def _writer_dir(writer: Any) -> str | None:
    get = getattr(writer, "get_logdir", None)
    return get() if callable(get) else getattr(writer, "log_dir", getattr(writer, "logdir", None))


class TensorBoardIntegration(Integration):
    """Sends the run to a TensorBoard log directory.

    Args:
        log_dir: The log directory. None: that of the Trainer's TensorBoard callback
            (``trainer=``), else where the callback would write (``args=``).
        trainer: A Trainer whose ``TensorBoardCallback`` writer is used, when it writes to
            ``log_dir`` (or ``log_dir`` is None). Looked up at each call: the callback
            creates its writer when training begins.
        args: The TrainingArguments, to find the callback's folder without a trainer.
        writer: A writer to use as it is (``add_image``, ``add_scalar``, ``add_embedding``).
        scalars: Write the metrics as scalars. None: unless ``metrics_logged`` and the
            Trainer's own writer is used (then they already came through ``Trainer.log``).
        metrics_logged: The metrics are sent through ``Trainer.log`` as well.
        images: Write the frames.
        projector_layers: Layers whose pooled vectors go to the Embedding Projector at
            every snapshot: ``"last"`` (default), ``"all"``, hidden-state indices, or None
            for none. Each layer costs about rows x hidden x 10 bytes of text per split and
            snapshot (1000 rows of a 768-wide model: about 8 MB).

    Raises:
        ImportError: tensorboard is not installed (with the install hint).
        ValueError: a bad ``projector_layers``.
    """

    name = "tensorboard"

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        *,
        trainer: Any = None,
        args: Any = None,
        writer: Any = None,
        scalars: bool | None = None,
        metrics_logged: bool = False,
        images: bool = True,
        projector_layers: Any = "last",
    ):
        self._SummaryWriter = require_tensorboard() if writer is None else None
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self.trainer = trainer
        self.args = args if args is not None else getattr(trainer, "args", None)
        self.scalars = scalars
        self.metrics_logged = bool(metrics_logged)
        self.images = bool(images)
        self.projector_layers = parse_projector_layers(projector_layers)
        self._given = writer
        self._writer: Any = writer
        self._callback: Any = None  # the Trainer's TensorBoardCallback whose writer we use
        self._own = False  # we created the writer: we close it
        if self.trainer is None and self.log_dir is None and writer is None and trainer_logging_dir(self.args) is None:
            raise ValueError(
                "TensorBoardIntegration needs log_dir=, trainer=, args= (report_to='tensorboard') or writer=; "
                "pass the log directory to write to"
            )

    # -- the writer ---------------------------------------------------------------------
    @property
    def shares_trainer_writer(self) -> bool:
        """Whether it writes with the Trainer's TensorBoard callback's writer."""
        return self._callback is not None

    def writer(self) -> Any:
        """The writer to use now (the Trainer's when it writes to our log directory)."""
        if self._given is not None:
            return self._given
        cb = trainer_tensorboard_callback(self.trainer) if self.trainer is not None else None
        if cb is not None and cb.tb_writer is not None and (self.log_dir is None or _same_dir(self.log_dir, _writer_dir(cb.tb_writer))):
            if self._writer is not cb.tb_writer:
                if self._own and self._writer is not None:
                    self._writer.close()
                self._writer, self._callback, self._own = cb.tb_writer, cb, False
            return self._writer
        if self._writer is not None:
            # The Trainer's callback closes its writer when training ends, before the last
            # snapshots of a background worker arrive: the same writer object opens a new
            # event file in the same folder on its next write, and is ours to close.
            if self._callback is not None and getattr(self._callback, "tb_writer", None) is not self._writer:
                self._own = True
            return self._writer
        folder = self.log_dir
        if folder is None and cb is not None:
            folder = getattr(cb, "logging_dir", None)
        if folder is None:
            folder = trainer_logging_dir(self.args)
        self._writer = self._SummaryWriter(log_dir=folder)
        self._own = True
        return self._writer

    # -- the interface ------------------------------------------------------------------
    def snapshot(
        self, run: RunInfo, key: SnapshotKey, snaps: Mapping[str, Snapshot] | None, logs: Mapping[str, float] | None,
    ) -> None:
        writer = self.writer()
        kinds = (Scalar,) + ((Image,) if self.images else ()) + ((Vectors,) if self.projector_layers is not None else ())
        items = run.items(key, snaps, logs, kinds)
        for item in items:
            if isinstance(item, Image):
                image = read_image(run, item.path)
                if image is not None:
                    writer.add_image(f"layerwatch/{item.name}", image, key.step, dataformats="HWC")
        if self.scalars is not False:
            # Numbers that came through Trainer.log into this writer are not written twice.
            for tag, value in sorted(run.scalars(items, logs, with_logs=self._write_scalars()).items()):
                writer.add_scalar(tag, float(value), key.step)
        for item in items:
            if isinstance(item, Vectors):
                self._embeddings(writer, item, key)
        writer.flush()

    def finish(self, run: RunInfo) -> None:
        if self._writer is None:
            return
        if self._own:
            self._writer.close()
            self._writer, self._own = None, False
        else:
            self._writer.flush()  # the Trainer's callback closes its own writer

    def _write_scalars(self) -> bool:
        if self.scalars is not None:
            return self.scalars
        return not (self.metrics_logged and self.shares_trainer_writer)

    def _embeddings(self, writer: Any, item: Vectors, key: SnapshotKey) -> None:
        positions = projector_positions(self.projector_layers, np.asarray(item.layers), item.name)
        if not positions:
            return
        folder = _writer_dir(writer)
        listed = _read_projector(folder)
        for j in positions:
            writer.add_embedding(
                item.vectors[j], metadata=item.metadata, metadata_header=item.header,
                tag=f"layerwatch/{item.name}/layer_{int(item.layers[j])}", global_step=key.step,
            )
        # A writer lists in projector_config.pbtxt only what it added itself, rewriting the
        # whole file each time; a second writer into the same folder (the Trainer's closed
        # at the end of training while a background worker still draws, an earlier
        # session) would drop every earlier embedding. Merge with what was listed before.
        _write_projector(folder, listed, _read_projector(folder))

    def __repr__(self) -> str:
        where = self.log_dir or ("the Trainer's log directory" if self.trainer is not None else "?")
        return f"TensorBoardIntegration({where!r}, projector_layers={self.projector_layers!r})"
