"""``layerwatch suspects RUN``: the rows most likely mislabelled, from the stored table (numpy only)."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any

from . import compute

COLUMNS = ("rank", "row", "aum", "confidence", "variability", "correctness", "label", "predicted", "text")


def ranking(run_dir: str, split: str = "train", top: int | None = 20) -> list[dict]:
    """The rows of ``split`` from the lowest area under the margin up, with their label
    names and texts (where the run stored them)."""
    from ...rundir import holds_run
    from ...store import RunStore
    from .files import TABLE, read_meta, read_texts

    store = RunStore(run_dir)
    if not holds_run(store):
        raise FileNotFoundError(f"{run_dir} holds no layerwatch run")
    lines = store.read_table(TABLE)
    if not lines:
        raise ValueError(f"{run_dir} has no {TABLE}; train with dynamics=True to record it")
    splits = sorted({r["split"] for r in lines})
    if split not in splits:
        raise ValueError(f"split {split!r} has no lines in {TABLE}; pass --split one of {splits}")
    measures = compute.from_table(lines, split, after_step=-1 if split == "train" else 0)
    if measures is None:
        raise ValueError(f"split {split!r} has no line after training started")
    names = read_meta(store).get("label_names")
    texts = read_texts(store, split)
    out = []
    for r in compute.suspects(measures, top):
        r["label"] = compute.name_of(names, r["label"])
        r["predicted"] = compute.name_of(names, r["predicted"])
        r["text"] = texts.get(r["row"], "")
        out.append(r)
    return out


def cmd_suspects(args: argparse.Namespace) -> int:
    rows = ranking(args.run_dir, args.split, args.top)
    if args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        with open(args.csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
    out = sys.stdout
    print(f"{'rank':>4} {'row':>6} {'AUM':>8} {'conf':>6} {'var':>6} {'corr':>5}  label -> predicted  text", file=out)
    for r in rows:
        text = r["text"].replace("\n", " ")
        text = text if len(text) <= 80 else text[:77] + "..."
        print(f"{r['rank']:>4} {r['row']:>6} {r['aum']:>8.3f} {r['confidence']:>6.3f} {r['variability']:>6.3f} "
              f"{r['correctness']:>5.2f}  {r['label']} -> {r['predicted']}  {text}", file=out)
    return 0


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"--top {value} must be a positive integer")
    return n


def add_suspects_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "suspects", help="the training rows most likely mislabelled (lowest area under the margin), from a stored run",
    )
    p.add_argument("run_dir", help="the output_dir of a run trained with dynamics=True")
    p.add_argument("--top", type=_positive, default=20, help="rows to list (default: %(default)s)")
    p.add_argument("--split", default="train", help="the split to rank (default: %(default)s)")
    p.add_argument("--csv", help="also write the ranking to this CSV file")
    p.set_defaults(func=cmd_suspects)
