"""Re-running the back half on a stored run (``layerwatch render``).

No model is needed and torch is not imported: the stored snapshots are read back
(:mod:`layerwatch.reading`) and go through the same :class:`~layerwatch.pipeline.Pipeline`
as during training, so a re-rendered run looks like one drawn live.
"""

from __future__ import annotations

from typing import Sequence

from .config import LayerwatchConfig
from .measures import for_config
from .pipeline import Pipeline
from .reading import run_context, stored_snapshots, take_up
from .store import RunStore


def rebuild(
    run_dir: str,
    method: str | None = None,
    splits: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    align: bool | None = None,
    progress: bool = False,
) -> dict[str, str]:
    """Redraw a stored run from its stored arrays alone (no model needed).

    Layouts are recomputed with ``method`` / ``align`` (default: the run's own), axis
    limits are fitted to the whole film, frames and GIFs are rewritten. The metrics of the
    splits and layers rendered are recomputed with the same definitions as during training
    (other splits are measured against the reference split, which is read even when it is
    not rendered); rows of splits and layers not rendered are left as they are.
    Returns ``{split: gif path}``.
    """
    store = RunStore(run_dir)
    info = store.read_run()
    store.directory.clean_temporary()
    changes = {k: v for k, v in {"method": method, "align": align}.items() if v is not None}
    config = LayerwatchConfig.from_dict(dict(info.get("config", {})), output_dir=run_dir, background=False, **changes)
    available = store.splits()
    chosen = list(splits) if splits else available
    missing = [s for s in chosen if s not in available]
    if missing:
        raise ValueError(f"run {run_dir!r} has no stored split {missing[0]!r}; it has {available}")
    if not chosen:
        raise ValueError(f"run {run_dir!r} holds no embeddings yet; nothing to render")
    reference = info.get("reference_split") if info.get("reference_split") in available else chosen[0]
    label_names = (info.get("labels") or {}).get("names") or info.get("label_names")
    measurements = for_config(config, names=info.get("measurements"))
    pipe = Pipeline(
        store, config, label_names, regression=info.get("label_kind") == "regression",
        reference_split=reference, measurements=measurements,
    )
    read = sorted(set(chosen) | ({reference} if reference else set()))
    snapshots = stored_snapshots(store, measurements, read, label_names)
    thinned = [k.title for k, by_split in snapshots if any(s.pooled.shape[-1] == 0 for s in by_split.values())]
    if thinned:
        raise ValueError(
            f"run {run_dir!r} kept the pooled vectors of its first and latest snapshots only "
            f"(keep_vectors='drift'; not those of {', '.join(thinned)}), so its layouts cannot be computed again; "
            "its frames, films, metrics and report.html are complete: use layerwatch info, report or export, "
            "or keep_vectors='all' in runs to re-render"
        )
    if layers is not None:
        wanted = {int(l) for l in layers}
        for _, by_split in snapshots:
            for snap in by_split.values():
                stored = [int(l) for l in snap.layers]
                absent = sorted(wanted - set(stored))
                if absent:
                    raise ValueError(f"layer {absent[0]} was not stored in this run; stored layers are {stored}")
                pick = [i for i, l in enumerate(stored) if l in wanted]
                snap.pooled, snap.layers = snap.pooled[pick], snap.layers[pick]
    iterator = snapshots
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(snapshots, desc="layerwatch render", unit="snapshot")
    drawn: set[str] = set()
    for key, by_split in iterator:
        # The reference split is measured against but drawn only when asked for.
        # Failed steps are named in warnings as they happen; the others go on.
        pipe.process(by_split, key, render=False, draw_splits=set(chosen))
        drawn.update(s for s in by_split if s in chosen)
    others = [s for s in available if s not in chosen]
    if others:
        # Splits not rendered keep their stored layouts; the report shows them from the disk.
        ctx, stored = run_context(store, history=pipe.history)
        take_up(ctx, stored, splits=others, vectors=False)
    pipe.render_all()
    return {split: store.gif_path(split) for split in chosen if split in drawn}
