"""The ``layerwatch`` command: review stored runs and run the built-in demo.

    layerwatch render RUN_DIR [--method pca|tsne|umap] [--splits ...] [--layers ...] [--no-align]
    layerwatch info RUN_DIR
    layerwatch report RUN_DIR [-o FILE] [--splits ...] [--layers ...] [--no-text]
    layerwatch attention RUN_DIR [--top N] [--bertviz head|model -o FILE]
    layerwatch export RUN_DIR --tensorboard LOGDIR | --wandb DIR | --mlflow [--mlflow-uri URI]
    layerwatch demo [--output-dir DIR] [--epochs N] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from .config import METHODS
from .integrations.export import add_export_command
from .report import _layers_arg as layers_argument, add_report_command

logger = logging.getLogger("layerwatch")


def cmd_render(args: argparse.Namespace) -> int:
    from .rerender import rebuild

    gifs = rebuild(
        args.run_dir, method=args.method, splits=args.splits, layers=args.layers,
        align=None if args.align is None else args.align, progress=True,
    )
    for split, path in gifs.items():
        print(f"{split}: {path}")
    return 0


def summarize(run_dir: str) -> dict:
    """What a run directory holds, as a dict (``layerwatch info --json`` prints it).

    Damaged files are listed under ``"damaged"`` (and named in a warning), never fatal.
    """
    return _summary(run_dir)[0]


def _summary(run_dir: str) -> tuple[dict, list]:
    """The summary of :func:`summarize` and the run's measurements that gave their parts of it."""
    from .config import LayerwatchConfig
    from .measures import for_config
    from .measures.embeddings.files import has_vectors, load_snapshot
    from .store import DamagedFileError, RunStore

    store = RunStore(run_dir)
    info = store.read_run()
    store.directory.clean_temporary()
    labels = info.get("labels") or {}
    out = {
        "run_dir": os.path.abspath(run_dir),
        "model": info.get("model_name"),
        "label_names": labels.get("names") or info.get("label_names"),
        "method": info.get("config", {}).get("method"),
        "pooling": info.get("config", {}).get("pooling"),
        "precision": info.get("precision", info.get("config", {}).get("precision", "fp32")),
        "versions": info.get("versions"),
        "splits": {},
        "damaged": [],
    }
    for split in store.splits():
        keys = store.keys(split)
        entry = {"snapshots": [], "frames": len(store.keys(split, "frames")), "gif": os.path.exists(store.gif_path(split))}
        last = None
        for key in keys:
            try:
                true_key = store.snapshot_key(split, key)
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s", exc)
                out["damaged"].append(exc.path)
                continue
            entry["snapshots"].append(true_key.title)
            last = key
        if last is not None:
            try:
                snap = load_snapshot(store, split, last, pooled=False)
                entry.update(rows=snap.num_rows, layers=[int(l) for l in snap.layers])
            except DamagedFileError as exc:
                logger.warning("layerwatch: %s", exc)
                out["damaged"].append(exc.path)
            # The hidden size from the latest snapshot that holds vectors: with
            # keep_vectors="drift", a resume to an earlier snapshot leaves the latest without.
            for key in reversed(keys):
                if has_vectors(store, split, key):
                    try:
                        entry["hidden"] = int(load_snapshot(store, split, key).pooled.shape[2])
                        break
                    except DamagedFileError:
                        continue
        out["splits"][split] = entry
    try:
        config = LayerwatchConfig.from_dict(dict(info.get("config", {})), output_dir=run_dir, background=False)
        measurements = for_config(config, names=info.get("measurements"))
    except (ValueError, TypeError, ImportError):
        measurements = []
    for m in measurements:
        try:
            out.update(m.summarize(store))
        except DamagedFileError as exc:
            logger.warning("layerwatch: %s", exc)
            out["damaged"].append(exc.path)
    return out, measurements


def cmd_info(args: argparse.Namespace) -> int:
    out, measurements = _summary(args.run_dir)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"run:     {out['run_dir']}")
    print(f"model:   {out['model']}")
    print(f"labels:  {out['label_names']}")
    print(f"method:  {out['method']}   pooling: {out['pooling']}   capture precision: {out['precision']}")
    for split, e in out["splits"].items():
        print(f"split {split!r}: {len(e['snapshots'])} snapshots ({', '.join(e['snapshots'])}), "
              f"{e.get('rows', '?')} rows, layers {e.get('layers', '?')}, hidden {e.get('hidden', '?')}, "
              f"{e['frames']} frames, gif {'yes' if e['gif'] else 'no'}")
    for m in measurements:
        try:
            lines = m.info_lines(out)
        except (KeyError, TypeError, ValueError) as exc:  # a summary it cannot read costs only its lines
            logger.warning("layerwatch: the %s lines of info failed (%s: %s)", m.name, type(exc).__name__, exc)
            continue
        for line in lines:
            print(line)
    for path in out.get("damaged", []):
        print(f"damaged (skipped): {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        output_dir=args.output_dir, epochs=args.epochs, method=args.method, rows=args.rows,
        monitor_samples=args.monitor_samples, seed=args.seed, model=args.model, overwrite=True,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="layerwatch", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"layerwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="rebuild frames and GIFs of a run from its stored embeddings (no model needed)")
    p.add_argument("run_dir", help="the output_dir of a LayerwatchCallback run")
    p.add_argument("--method", choices=METHODS, help="2-D reducer (default: the run's own)")
    p.add_argument("--splits", nargs="+", help="splits to render (default: all stored)")
    p.add_argument("--layers", type=layers_argument, help="hidden-state indices to draw, e.g. 0,3,6 (default: all stored)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--align", dest="align", action="store_true", default=None, help="tie each frame to the previous one")
    g.add_argument("--no-align", dest="align", action="store_false", help="fit every frame independently")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("info", help="summarise what a run directory holds")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    add_report_command(sub)
    add_export_command(sub)
    from .measures import registered

    for cls in registered().values():
        cls.add_commands(sub)

    p = sub.add_parser("demo", help="fine-tune a small packaged model on a generated corpus, offline, and film it")
    p.add_argument("--output-dir", default="layerwatch_demo", help="where the run goes (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default: %(default)s)")
    p.add_argument("--rows", type=int, default=600, help="generated training sentences (default: %(default)s)")
    p.add_argument("--monitor-samples", type=int, default=300, help="rows drawn per split (default: %(default)s)")
    p.add_argument("--method", choices=METHODS, default="tsne", help="2-D reducer (default: %(default)s)")
    p.add_argument("--model", default=None, help="model folder or hub name (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


class _Warnings(logging.Handler):
    """The library logs through "layerwatch"; a command shows its warnings on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _Warnings()
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"layerwatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
