"""Settings of a layerwatch run, checked once when they are built.

Every check of a bad value lives here so that a mistake fails when the callback is
constructed, long before the first training step.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .settings import Settings, Unresolved, resolve, settings_class

METHODS = ("tsne", "pca", "umap")
POOLINGS = ("mean", "cls", "last")
ON_ERROR = ("warn", "raise")
TRAINER_LOG = ("auto", "report", "history")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STORE_DTYPES = ("float32", "float16")
KEEP_VECTORS = ("all", "drift")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Split names become folder and file names (``<split>.gif`` and longer ones built from it);
# file systems allow 255 bytes a name.
MAX_SPLIT_NAME = 100

# Settings that decide what a run stores: a resumed run must keep them, or its films would
# mix row sets, layers or layouts of two kinds.
RESUME_FIXED = (
    "max_samples", "seed", "layers", "pooling", "method", "align", "perplexity", "label_column", "label_names",
    "every_n_steps",
)


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise a ValueError naming the parameter, the value and what is allowed."""
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not one of {options}")


def check_split_name(name: Any) -> str:
    """Return ``name`` if it is safe as a file and folder name inside a run directory.

    Split names become folder names (``embeddings/<split>/``), so anything that could
    steer a path elsewhere (``..``, slashes, leading dots) is refused.
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(
            f"split name {name!r} cannot be used as a folder name; use letters, digits, "
            "'_', '-' and '.', starting with a letter or digit (for example 'train', 'validation')"
        )
    if len(name) > MAX_SPLIT_NAME:
        raise ValueError(
            f"split name {name[:20]!r}... has {len(name)} characters; split names become file names, so use at "
            f"most {MAX_SPLIT_NAME} (for example 'train', 'validation')"
        )
    return name


def is_split_name(name: Any) -> bool:
    """Whether ``name`` would pass :func:`check_split_name` (for listing folders)."""
    try:
        check_split_name(name)
    except ValueError:
        return False
    return True


def parse_projector_layers(value: Any) -> str | tuple[int, ...] | None:
    """Normalise ``projector_layers=``: ``"last"``, ``"all"``, a tuple of hidden-state indices, or None.

    ``None``, ``"none"`` or an empty sequence turn the Embedding Projector off; ``"0,6,12"``
    is accepted so that the command line can pass it through.

    Raises:
        ValueError: anything else, naming what is allowed.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("last", "all"):
            return text
        if text in ("none", ""):
            return None
        try:
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(
                f"projector_layers={value!r} is not one of 'last', 'all', 'none' or hidden-state indices such as '0,6,12'"
            ) from None
    try:
        layers = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"projector_layers={value!r} is not one of 'last', 'all', None or a list of hidden-state indices"
        ) from None
    if any(l < 0 for l in layers):
        raise ValueError(f"projector_layers={value!r} holds a negative index; hidden-state indices start at 0 (embeddings)")
    return layers or None


def parse_layers(value: Any) -> str | tuple[int, ...]:
    """Normalise ``layers=``: ``"all"`` or a tuple of hidden-state indices.

    Strings such as ``"0,3,6"`` are accepted so that the command line can pass them through.
    """
    if isinstance(value, str):
        if value == "all":
            return "all"
        try:
            value = [int(v) for v in value.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ValueError(
                f"layers={value!r} is neither 'all' nor a comma-separated list of integers"
            ) from None
    if isinstance(value, int):
        value = [value]
    try:
        layers = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"layers={value!r} must be 'all' or a list of hidden-state indices") from None
    if not layers:
        raise ValueError("layers=[] selects no layer; pass 'all' or at least one hidden-state index")
    if any(isinstance(v, bool) for v in value):
        raise ValueError(f"layers={value!r} must hold integers, not booleans")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers={list(layers)} names a layer twice")
    if any(v < 0 for v in layers):
        raise ValueError(
            f"layers={list(layers)} holds a negative index; use 0 for the embedding output "
            "and 1..L for the transformer layers"
        )
    return layers


def resolve_layers(layers: str | Sequence[int], num_hidden_states: int) -> tuple[int, ...]:
    """Turn ``layers`` into concrete indices for a model with ``num_hidden_states`` outputs."""
    layers = parse_layers(layers)
    if layers == "all":
        return tuple(range(num_hidden_states))
    bad = [v for v in layers if v >= num_hidden_states]
    if bad:
        raise ValueError(
            f"layers={list(layers)}: index {bad[0]} is out of range; this model has "
            f"{num_hidden_states} hidden states, so valid indices are 0..{num_hidden_states - 1} "
            "(0 is the embedding output)"
        )
    return tuple(sorted(layers))


@dataclass(frozen=True)
class LayerwatchConfig:
    """Everything that decides what a run captures, stores and draws.

    Attributes:
        output_dir: Run directory; created if needed and checked for writability.
        max_samples: Rows kept per split (stratified by label, drawn with ``seed``).
        seed: Seed of the subset choice and of every reducer.
        layers: ``"all"`` or hidden-state indices (0 = embeddings, 1..L = layers).
        pooling: ``"mean"`` over unmasked tokens, ``"cls"`` (the first token; encoders only)
            or ``"last"`` (the last real token: what decoder-only classifiers read).
        method: 2-D reducer, ``"tsne"``, ``"pca"`` or ``"umap"`` (needs ``umap-learn``).
        batch_size: Rows per forward pass of the capture.
        label_column: Column holding labels; ``None`` looks for ``labels`` then ``label``.
        label_names: Names of the classes; ``None`` takes the model's ``id2label``.
        every_n_steps: Snapshot every N optimizer steps instead of every epoch.
        align: Tie each frame's layout to the previous one so that the film holds still.
        metrics: Compute per-layer kNN, probe, silhouette and model accuracy.
        highlight_errors: Mark misclassified rows. ``None``: when the model has a
            classification head whose outputs can be matched to the labels; ``True``:
            always, and a model whose outputs cannot be matched is refused before training;
            ``False``: never.
        perplexity: t-SNE perplexity (lowered for small splits, with a warning).
        frame_duration: Seconds each GIF frame is shown.
        on_error: ``"warn"`` logs a failed snapshot and training goes on; ``"raise"`` stops.
        overwrite: Replace a run directory that holds another run.
        dpi: Resolution of the frames.
        progress: Show progress bars during capture and reduction.
        background: Lay out, measure and draw in a worker process while training goes on;
            the training loop then waits only for the capture.
        threads: BLAS/OpenMP threads for layouts, metrics and frames, in the training
            process or in the worker (0 = the libraries' own defaults). 1 by default: on a
            few cores more threads spin against each other and against training.
        n_jobs: t-SNE layouts computed at once, each on ``threads`` threads (the layers
            and splits of a snapshot are independent, so the layouts come out the same).
            ``"auto"``: every CPU this process may use when the snapshot runs in the
            training process (training waits for it anyway), and 1 in the background
            worker, which shares the machine with training.
        trainer_log: How the per-layer metrics reach the Trainer. ``"report"``: through
            ``Trainer.log``, so TensorBoard, W&B or MLflow get them (and the console
            prints them all); ``"history"``: into ``trainer.state.log_history`` only, with
            no console line; ``"auto"``: ``"report"`` when the Trainer reports to an
            integration (``report_to``), else ``"history"``.
        text_column: Column holding each row's text, stored once per split for the
            report page; ``None`` takes ``"text"`` when the split has it, else decodes
            ``input_ids`` with the Trainer's tokenizer (``processing_class``).
        report_text: Store the rows' texts at all; ``False`` for data that must not leave
            the machine.
        precision: Numeric precision of the capture's forward pass (training is untouched):
            ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast), or ``"auto"`` (the default: a
            half precision where the hardware runs it fast, else fp32; see
            :mod:`layerwatch.precision`). Stored vectors are float32 either way; pass
            ``"fp32"`` for vectors that equal a plain forward pass bit for bit.
        report: Rewrite ``report.html`` (one offline page of the whole run: hover a point
            to read its row) after every snapshot.
        tensorboard: A TensorBoard log directory for the frames, metrics and projector
            embeddings, besides the integrations that ``report_to`` names (TensorBoard,
            W&B, MLflow; see docs/integrations.md).
        projector_layers: Layers whose pooled vectors go to TensorBoard's projector:
            ``"last"``, ``"all"``, hidden-state indices, or None (``"none"``) for none;
            read as ``layerwatch export --projector-layers`` reads it.
        store_dtype: Precision of the pooled vectors on disk, ``"float32"`` or
            ``"float16"`` (half the disk). Metrics, drift and layouts are computed from the
            float32 vectors before storing; a split whose vectors exceed float16's range is
            stored in float32.
        keep_vectors: Whose pooled vectors stay on disk: ``"all"`` snapshots, or
            ``"drift"``: the first and the latest only (all drift needs); the other
            snapshots keep rows, labels, predictions, layouts, metrics and frames.
        measures: The measurements besides the embeddings, each as its own settings
            (``[Attention(examples=6), Attribution(steps=32), Dynamics()]``; see
            ``layerwatch/measures/<name>/settings.py``); ``config.measure(name)`` gives one.
    """

    output_dir: str = "layerwatch_run"
    max_samples: int = 1000
    seed: int = 0
    layers: Any = "all"
    pooling: str = "mean"
    method: str = "tsne"
    batch_size: int = 32
    label_column: str | None = None
    label_names: tuple[str, ...] | None = None
    every_n_steps: int | None = None
    align: bool = True
    metrics: bool = True
    highlight_errors: bool | None = None
    perplexity: float = 30.0
    frame_duration: float = 1.0
    on_error: str = "warn"
    overwrite: bool = False
    dpi: int = 80
    progress: bool = True
    background: bool = False
    threads: int = 1
    n_jobs: Any = "auto"
    trainer_log: str = "auto"
    text_column: str | None = None
    report_text: bool = True
    precision: str = "auto"
    report: bool = True
    tensorboard: str | None = None
    projector_layers: Any = "last"
    store_dtype: str = "float32"
    keep_vectors: str = "all"
    measures: Any = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        check_positive_int("max_samples", self.max_samples)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("dpi", self.dpi)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r} must be an integer")
        if self.every_n_steps is not None:
            check_positive_int("every_n_steps", self.every_n_steps, hint="or None for one snapshot per epoch")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads={self.threads!r} must be 0 (the libraries' defaults) or a positive integer")
        if self.n_jobs != "auto":
            check_positive_int("n_jobs", self.n_jobs, hint='or "auto"')
        if self.highlight_errors not in (None, True, False):
            raise ValueError(f"highlight_errors={self.highlight_errors!r} must be True, False or None")
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("method", self.method, METHODS)
        check_choice("on_error", self.on_error, ON_ERROR)
        check_choice("trainer_log", self.trainer_log, TRAINER_LOG)
        check_choice("precision", self.precision, PRECISIONS)
        for name in ("report", "report_text"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.tensorboard is not None:
            object.__setattr__(self, "tensorboard", os.fspath(self.tensorboard))
        # The same reading as `layerwatch export --projector-layers` (None or "none": no projector).
        object.__setattr__(self, "projector_layers", parse_projector_layers(self.projector_layers))
        object.__setattr__(self, "measures", normalize_measures(self.measures))
        check_perplexity(self.perplexity)
        if not (isinstance(self.frame_duration, (int, float)) and self.frame_duration > 0):
            raise ValueError(f"frame_duration={self.frame_duration!r} must be a positive number of seconds")
        for name in ("label_column", "text_column"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}={value!r} must be a column name or None")
        if self.method == "umap":
            require("umap", UMAP_HINT, "UMAP")
        check_choice("store_dtype", self.store_dtype, STORE_DTYPES)
        check_choice("keep_vectors", self.keep_vectors, KEEP_VECTORS)

    def to_dict(self) -> dict:
        """A JSON-ready view of the settings."""
        out = dataclasses.asdict(self)
        out["layers"] = self.layers if self.layers == "all" else list(self.layers)
        out["label_names"] = list(self.label_names) if self.label_names is not None else None
        if isinstance(self.projector_layers, tuple):
            out["projector_layers"] = list(self.projector_layers)
        out["measures"] = {m.name: m.to_dict() for m in self.measures}
        return out

    def measure(self, name: str) -> Any:
        """The settings of the measurement ``name`` (None: it is off)."""
        for settings in self.measures:
            if settings.name == name:
                return resolve(settings)
        return None

    def replace(self, **changes: Any) -> "LayerwatchConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict, **changes: Any) -> "LayerwatchConfig":
        """Settings read back from ``run.json`` (fields it does not know are ignored)."""
        fields = set(cls.__dataclass_fields__)
        known = {k: v for k, v in data.items() if k in fields}
        if "measures" not in known:  # a run written before measurements had settings of their own
            known["measures"] = _flat_measures(data, fields)
        if isinstance(known.get("label_names"), list):
            known["label_names"] = tuple(known["label_names"])
        known.update(changes)
        return cls(**known)

    def resume_differences(self, stored: dict) -> list[str]:
        """The settings of :data:`RESUME_FIXED` that differ from a stored run's, as text."""
        mine = self.to_dict()
        out = []
        for name in RESUME_FIXED:
            if name in stored and _comparable(stored[name]) != _comparable(mine[name]):
                out.append(f"{name}={stored[name]!r} (now {mine[name]!r})")
        return out


def normalize_measures(value: Any) -> tuple:
    """``measures=`` as a tuple of settings objects, one per measurement.

    Accepts a list or tuple of settings (``[Attention(examples=6)]``), or a dict by name
    (``{"attention": {"examples": 6}}``, as ``run.json`` stores them; ``True`` for the
    defaults). Settings whose class is not imported yet are kept as :class:`Unresolved`.

    Raises:
        ValueError: an item that is not a measurement's settings, or a measurement named twice.
    """
    if value is None:
        return ()
    out: list = []
    if isinstance(value, dict):
        for name, items in value.items():
            if items is False or items is None:
                continue
            if isinstance(items, Settings):
                out.append(items)
                continue
            if items is True:
                items = {}
            if not isinstance(items, dict):
                raise ValueError(f"measures[{name!r}]={items!r} must be True or a dict of that measurement's settings")
            cls = settings_class(name)
            out.append(cls.from_dict(items) if cls is not None else Unresolved(name, tuple(sorted(items.items()))))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, (Settings, Unresolved)):
                raise ValueError(
                    f"measures[{i}]={item!r} is not a measurement's settings; pass objects such as "
                    "layerwatch.Attention(examples=6) or layerwatch.Dynamics()"
                )
            out.append(item)
    else:
        raise ValueError(f"measures={value!r} must be a list of measurement settings, e.g. [layerwatch.Attention()]")
    names = [m.name for m in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"measures names {twice[0]!r} twice; give each measurement's settings once")
    return tuple(out)


def _flat_measures(data: dict, fields: set) -> dict:
    # Older run.json files kept a measurement's settings as flat keys: ``attention: true``
    # with ``attention_examples``; ``dynamics`` as True or its settings' dict.
    out = {}
    for name, value in data.items():
        if name in fields or not (value is True or isinstance(value, dict)):
            continue
        items = dict(value) if isinstance(value, dict) else {}
        prefix = name + "_"
        for key, v in data.items():
            if key.startswith(prefix) and key not in fields:
                items.setdefault(key[len(prefix):], v)
        cls = settings_class(name)
        if cls is not None:
            items = {k: v for k, v in items.items() if k in cls.field_names()}
        out[name] = items
    return out


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


UMAP_HINT = (
    "method='umap' needs the umap-learn package: pip install 'layerwatch[umap]' (or choose method='tsne' or 'pca')"
)


def require(module: str, hint: str, attribute: str | None = None) -> Any:
    """The optional dependency ``module`` (a top-level module), imported; else an ImportError
    saying ``hint`` (what needs it and how to install it). ``attribute``: a name the module
    must have, since a leftover folder of an uninstalled package imports as an empty
    namespace package."""
    try:
        found = __import__(module)
        if attribute is not None:
            getattr(found, attribute)
    except (ImportError, AttributeError):
        raise ImportError(hint) from None
    return found


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_jobs(config: "LayerwatchConfig") -> int:
    """How many t-SNE layouts run at once under ``config`` (see ``n_jobs``)."""
    if config.n_jobs != "auto":
        return int(config.n_jobs)
    return 1 if config.background else usable_cpus()


def check_perplexity(value: Any) -> None:
    """Raise a ValueError unless ``value`` is a usable t-SNE perplexity."""
    if not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"perplexity={value!r} must be a positive number (30 is usual)")


def check_int(name: str, value: Any, low: int = 1, high: int | None = None, allowed: str = "") -> int:
    """Return ``value`` as an int if it is an integer from ``low`` to ``high`` (no upper
    bound when None), else raise a ValueError naming it and ``allowed`` (what is allowed)."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
            or (high is not None and value > high)):
        allowed = allowed or (f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}")
        raise ValueError(f"{name}={value!r} must be {allowed}")
    return int(value)


def check_positive_int(name: str, value: Any, hint: str = "") -> int:
    """Return ``value`` if it is a positive integer, else raise a ValueError naming it."""
    return check_int(name, value, 1, allowed="a positive integer" + (f" {hint}" if hint else ""))


def check_rows(name: str, value: Any) -> int | tuple[int, ...]:
    """A setting that picks rows (``attention_examples``, ``attribution_examples``): a
    positive count, or dataset row indices (a list, tuple, range, set, or a 1-d integer
    array or tensor) as a tuple of ints.

    Raises:
        ValueError: naming the setting, the value and what is allowed; a string (whose
            characters would otherwise be read as rows: ``"12"`` as rows 1 and 2) included.
    """
    allowed = f"pass a count ({name}=3) or a list of dataset rows ({name}=[3, 12])"
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name}={value!r} is a string; {allowed}")
    if isinstance(value, bool) or value is None or isinstance(value, (float, dict)):
        raise ValueError(f"{name}={value!r} is not a count or a list of rows; {allowed}")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"{name}={value!r} must be a positive count or a list of dataset rows; {allowed}")
        return int(value)
    if getattr(value, "ndim", 1) == 0:  # a 0-d array or tensor: a count
        return check_rows(name, value.item())
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=lambda v: (not isinstance(v, (int, np.integer)), str(v)))
    try:
        rows = list(value.tolist() if hasattr(value, "tolist") and hasattr(value, "ndim") else value)
    except TypeError:
        raise ValueError(f"{name}={value!r} is not a count or a list of rows; {allowed}") from None
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise ValueError(f"{name}={value!r} holds {r!r}, which is not a row index (an integer); {allowed}")
        if r < 0:
            raise ValueError(f"{name}={value!r} holds the negative row {r}; dataset rows count from 0")
    if not rows:
        raise ValueError(f"{name}={value!r} names no row; {allowed}")
    return tuple(int(r) for r in rows)


def check_output_dir(path: str) -> None:
    """Create ``path`` and prove that files can be written there, or say why not."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"output_dir={path!r} cannot be created ({exc.strerror}); pass a folder you can write to"
        ) from None
    probe = os.path.join(path, f".layerwatch-write-test-{os.getpid()}")
    try:
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ValueError(
            f"output_dir={path!r} is not writable ({exc.strerror}); pass a folder you can write to"
        ) from None
