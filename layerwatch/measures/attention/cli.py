"""``layerwatch attention RUN``: which heads changed most, and a stored example's maps for bertviz.

Reads a stored run only (numpy; bertviz when asked for).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ...store import RunStore
from ...text import clean_text, shown_tokens, text_allowed
from .drift import heads_that_moved
from .head_view import show_bertviz

_NAME = "attention"  # the measurement's name: the folder of its arrays


def add_attention_command(subparsers: Any) -> None:
    p = subparsers.add_parser("attention", help="which attention heads changed most over training, and how")
    p.add_argument("run_dir", help="the output_dir of a run with attention=True")
    p.add_argument("--top", type=int, default=5, help="heads to list per split (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--bertviz", choices=("head", "model"), help="write bertviz's view of an example's stored maps to --output")
    p.add_argument("--example", type=int, default=0, help="which stored example, 0-based (default: %(default)s)")
    p.add_argument("--snapshot", type=int, default=-1, help="which snapshot, 0-based; -1 = the last (default)")
    p.add_argument("-o", "--output", default="bertviz.html", help="file for --bertviz (default: %(default)s)")
    p.set_defaults(func=_cmd_attention)


def stored_example(root: str, example: int = 0, snapshot: int = -1) -> dict[str, Any]:
    """One stored example's attention maps at one snapshot: ``{"maps": (layers, heads, T, T),
    "tokens": [...], "split", "row", "title"}`` (for bertviz, or your own plots)."""
    store = RunStore(root)
    splits = [s for s in store.splits(_NAME) if store.keys(s, _NAME)]
    for split in splits:
        keys = store.keys(split, _NAME)
        stored = [k for k in keys if "maps" in store.load_arrays(_NAME, split, k)]
        if not stored:
            continue
        try:
            key = stored[snapshot]
        except IndexError:
            raise ValueError(f"snapshot={snapshot} is out of range; the run holds {len(stored)} snapshots of examples") from None
        arrays = store.load_arrays(_NAME, split, key)
        if not 0 <= example < len(arrays["positions"]):
            raise ValueError(f"example={example} is out of range; the run keeps {len(arrays['positions'])} examples (0-based)")
        n = int(arrays["lengths"][example])
        snap = store.load_snapshot(split, key, pooled=False)
        return {
            "maps": arrays["maps"][example, :, :, :n, :n].astype(np.float32),
            "tokens": shown_tokens(arrays["tokens"][example, :n], text_allowed(store.read_run().get("config"))),
            "split": split, "row": int(snap.indices[int(arrays["positions"][example])]),
            "title": store.snapshot_key(split, key).title,
        }
    raise ValueError(f"{root!r} holds no attention examples; train with attention=True")


def show_stored_in_bertviz(root: str, example: int = 0, snapshot: int = -1, view: str = "head", **kwargs: Any) -> Any:
    """Hand a stored example's maps to bertviz's ``head_view`` / ``model_view`` (in Jupyter)."""
    found = stored_example(root, example, snapshot)
    return show_bertviz(found["maps"], found["tokens"], view=view, **kwargs)


def _cmd_attention(args) -> int:
    store = RunStore(args.run_dir)
    store.read_run()
    if args.bertviz:
        html = show_stored_in_bertviz(args.run_dir, args.example, args.snapshot, view=args.bertviz, html_action="return")
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(clean_text(getattr(html, "data", str(html))))
        print(f"bertviz {args.bertviz} view: {args.output}")
        return 0
    summary = heads_that_moved(store, top=args.top)
    if not summary:
        raise ValueError(f"{args.run_dir!r} holds no attention statistics; train with attention=True")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for split, s in summary.items():
        print(f"split {split!r}: {s['snapshots']} snapshots")
        print("  heads whose attention moved most since the first snapshot (Jensen-Shannon divergence, nats):")
        for h in s["moved_most"]:
            change = h["pattern_start"] if h["pattern_start"] == h["pattern_end"] else f"{h['pattern_start']} -> {h['pattern_end']}"
            print(f"    layer {h['layer']} head {h['head']}: {h['drift_first']:.4f} ({change})")
        means = ", ".join(f"{l}: {v:.4f}" for l, v in s["mean_drift_by_layer"].items())
        print(f"  mean drift by layer: {means}")
    return 0
