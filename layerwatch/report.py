"""One self-contained offline page per run: ``RUN/report.html``.

The report answers what a GIF cannot: which example is this point, what is its text,
what did the model predict? It holds the whole run in one file that opens from a file
path in any current browser, asks the network for nothing (see :mod:`layerwatch.pages`)
and shows text only as text.

The page (``pages/report.js``, ``pages/report.css``) draws with Canvas2D: a panel per
layer with the same layouts as the frames and fixed per-panel axis limits over the whole
film, a snapshot slider with play/pause, split and layer pickers, colour by label,
prediction or right/wrong, hover/tap details, a pinned row's path through the
snapshots, search by text, per-layer metric heatmaps, links to the GIFs and any extra
sections a caller adds.

Page data (the JSON block ``layerwatch-data``; keys sorted, no timestamps, so the same
run directory always gives the same bytes)::

    {
      "format": "layerwatch-report/2",
      "title": str,
      "run": {"model": str | null, "method": str | null, "pooling": str | null,
              "label_kind": "class" | "regression", "texts": bool},
      "label_names": [str, ...] | null,        # class id -> name
      "splits": [{
        "name": str,
        "gif": str | null,                     # href of <split>.gif, relative to the page
        "rows": int,
        "indices": [int, ...],                 # dataset row index of each monitored row
        "labels": [int | float | null, ...],   # class ids, or targets for a regression
        "texts": [str | null, ...] | null,     # null: no texts stored, or texts=False
        "layers": [int, ...],                  # hidden-state indices (0 = embeddings)
        "limits": [[x0, x1, y0, y1], ...],     # per layer, fixed over the whole film
        "snapshots": [{"name": str, "title": str, "epoch": number, "step": int}, ...],
        "films": [str, ...],                   # [layer]: every snapshot's positions, coded (below)
        "predictions": [[int, ...] | null, ...] | null   # [snapshot][row]
      }, ...],
      "metrics": [{"split": str, "metric": str, "layers": [int, ...],
                   "values": [[number | null, ...], ...]}, ...],   # [layer][snapshot]
      "sections": [{"title": str, "text": str,  # text: `code spans` are shown as code
                    "images": [{"caption": str, "src": str,   # with "snapshot" and "group": one frame
                                "snapshot": {...}, "group": str}],  # of a picture that follows the slider
                    "links": [{"text": str, "href": str}],
                    "films": [{                # heatmaps that follow the slider (pages/sections.py)
                      "title": str, "group": str, "split": str | null, "row": int | null,
                      "snapshots": [{"epoch": number, "step": int, "title": str}, ...],
                      "ylabels": [str, ...], "xlabels": [str, ...], "range": [lo, hi],
                      "diverging": bool, "unit": str,
                      "values": str,           # base64 uint8 (snapshots, ylabels, xlabels); 255 missing
                      "strip": {"labels": [str, ...], "range": [lo, hi], "values": str} | null}, ...],
                    "datamap": {                # optional: an interactive data map (dynamics)
                      "split": str, "title": str, "top": int, "thresholds": [conf, var],
                      "label_names": [str, ...] | null, "rows": [int, ...], "x": [variability],
                      "y": [confidence], "correctness": [...], "aum": [...], "label": [int],
                      "predicted": [int], "texts": [str | null, ...] | null}}, ...]
    }

Coordinates: each ``films`` string holds one layer's positions at every snapshot, as the
base64 of a raw DEFLATE stream (RFC 1951, no header; the browser's
``DecompressionStream('deflate-raw')`` reads it). Inflated, it is ``snapshots`` blocks of
``4 * rows`` bytes. A position is a pair of 10-bit codes ``(qx, qy)`` in 0..1022 over the
panel's limits ``(x0, x1, y0, y1)``: ``x = x0 + qx * (x1 - x0) / 1022`` (and likewise for
y); 1023 marks a row that could not be laid out (NaN). Block ``k`` holds, for the
``2 * rows`` codes row after row (x then y), ``d = q_k - q_{k-1}`` (``q_{-1} = 0``) in
zigzag form ``z = 2d`` for ``d >= 0``, ``-2d - 1`` otherwise, as two byte planes: the
``2 * rows`` high bytes of ``z``, then the ``2 * rows`` low bytes. Decoding is exact to half
a quantisation step, ``(x1 - x0) / 1022 / 2``, under 4.9e-4 of the panel's extent (half a
pixel on a 1,000-pixel panel). Codes that change little between snapshots (the films are
warm-started) compress well, which keeps 10,000 rows x 25 layers x 10 snapshots per split
in a few MB.

Metric heatmaps hold every metric of ``metrics.csv`` (layers x snapshots per split);
layers with no value for a metric (``model_accuracy`` is filed under the top layer only)
are left out of its heatmap.

Texts are read from ``RUN/texts/<split>.json``, ``{"indices": [...], "texts": [...]}``
(dataset row index -> text), by :func:`read_texts`; without that file the page shows row
indices only.

Sections are plain data that the page draws generically: a title, an optional
paragraph (code spans in backticks shown as code), images as ``data:image/...`` URLs,
links (relative to the run directory, or http(s)) and heatmap films, each shown at the
snapshot the slider selects (its frame of the same step and epoch, else its latest
before) and lit when its ``row`` of its ``split`` is pinned. Each measurement gives its
own (``Measurement.report_sections``); pass others to :func:`collect_report` or
:func:`write_report` with ``sections=``.

The page is drawn from the run's history (:mod:`layerwatch.history`): the pipeline's,
appended per snapshot, or one read once from the run directory (``layerwatch report``).
Writing it after a snapshot reads no earlier snapshot's files.
"""

from __future__ import annotations

import argparse
import base64
import math
import zlib
import os
import posixpath
import re
from typing import Any, Iterable, Sequence

import numpy as np

from .config import parse_layers
from .history import LAYOUTS, METRICS, History
from .measures.base import Context, Measurement
from .pages import asset, render_page
from .reading import stored_history
from .store import RunStore, atomic_write_text
from .text import text_allowed

__all__ = ["add_report_command", "collect_report", "decode_film", "read_texts", "report_html", "write_report"]

FORMAT = "layerwatch-report/2"
REPORT_FILE = "report.html"
TEXTS_FOLDER = "texts"
# 10-bit codes: 0..1022 span the panel's limits; 1023 marks a missing point.
_Q_SPAN = 1022
_Q_MISSING = 1023
# The same margin as the frames' limits (render.limits_of), so panels frame points alike.
_MARGIN = 0.08
_IMAGE_SRC = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# -- reading -------------------------------------------------------------------------
def read_texts(root: str, split: str) -> dict[int, str] | None:
    """The stored texts of ``split``: dataset row index -> text, or None when absent.

    Reads ``<root>/texts/<split>.json`` through :meth:`RunStore.load_texts`.

    Raises:
        ValueError: the file is damaged (it names the file).
    """
    return RunStore(root).load_texts(split) or None


def run_sections(ctx: Context, measurements: Sequence[Measurement]) -> list[dict]:
    """The sections that the run's measurements add to its report, each asked for its own
    (``Measurement.report_sections``) and drawn from ``ctx.history``."""
    sections: list[dict] = []
    for m in measurements:
        # A measurement whose section fails costs only its section (on_error="raise" makes it fatal).
        sections.extend(ctx.guard(f"the {m.name} section of report.html", None, m.report_sections, ctx) or [])
    return sections


def _limits(panels: Iterable[np.ndarray]) -> list[float]:
    """``[x0, x1, y0, y1]`` holding every finite point of every layout of one panel."""
    lo = np.array([np.inf, np.inf])
    hi = -lo
    for xy in panels:
        pts = xy[np.isfinite(xy).all(axis=1)]
        if len(pts):
            lo = np.minimum(lo, pts.min(axis=0))
            hi = np.maximum(hi, pts.max(axis=0))
    if not np.isfinite(lo).all():
        return [-1.0, 1.0, -1.0, 1.0]
    pad = np.maximum((hi - lo) * _MARGIN, 1e-3)
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])]


def _codes(xy: np.ndarray, limits: Sequence[float]) -> np.ndarray:
    """(..., rows, 2) positions as int32 codes 0.._Q_SPAN over ``limits`` (_Q_MISSING: NaN)."""
    xy = np.asarray(xy, dtype=np.float64)
    lo = np.array([limits[0], limits[2]])
    span = np.array([limits[1] - limits[0], limits[3] - limits[2]])
    missing = ~np.isfinite(xy).all(axis=-1)
    filled = np.where(missing[..., None], lo, xy)
    q = np.rint((filled - lo) / span * _Q_SPAN).clip(0, _Q_SPAN).astype(np.int32)
    q[missing] = _Q_MISSING
    return q


def _encode_film(film: np.ndarray, limits: Sequence[float]) -> str:
    """One layer's (snapshots, rows, 2) positions in the coded form of the module docstring."""
    q = _codes(film, limits).reshape(len(film), -1)
    d = q.copy()
    d[1:] -= q[:-1]
    z = np.where(d >= 0, 2 * d, -2 * d - 1).astype(np.uint16)
    planes = np.concatenate([(z >> 8).astype(np.uint8), (z & 0xFF).astype(np.uint8)], axis=1)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return base64.b64encode(packer.compress(planes.tobytes()) + packer.flush()).decode("ascii")


def decode_film(text: str, limits: Sequence[float], rows: int) -> np.ndarray:
    """The (snapshots, rows, 2) positions of one ``films`` string (NaN where not laid out)."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(text), -15), dtype=np.uint8)
    planes = raw.reshape(-1, 2, 2 * rows).astype(np.int64)
    z = (planes[:, 0] << 8) | planes[:, 1]
    q = np.cumsum(np.where(z % 2 == 0, z // 2, -(z + 1) // 2), axis=0).reshape(len(z), rows, 2)
    lo = np.array([limits[0], limits[2]])
    span = np.array([limits[1] - limits[0], limits[3] - limits[2]])
    out = lo + q * span / _Q_SPAN
    out[(q == _Q_MISSING).any(axis=-1)] = np.nan
    return out


def _number(v: Any) -> Any:
    """A JSON-ready scalar: ints stay ints, NaN and infinities become null."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _choose_splits(store: RunStore, history: History, splits: Sequence[str] | None) -> list[str]:
    with_layouts = history.splits(LAYOUTS)
    if splits is None:
        if not with_layouts:
            raise ValueError(
                f"run {store.root!r} holds no layouts yet; train with LayerwatchCallback or run "
                "'layerwatch render RUN' first"
            )
        return with_layouts
    if isinstance(splits, str):
        splits = [splits]
    chosen = list(splits)
    if not chosen:
        raise ValueError("splits=[] selects no split; leave it out for all, or name some of " f"{with_layouts}")
    for s in chosen:
        if s not in with_layouts:
            raise ValueError(f"splits: run {store.root!r} has no laid-out split {s!r}; it has {with_layouts}")
    return list(dict.fromkeys(chosen))


def _collect_split(
    store: RunStore, history: History, split: str, layers: Sequence[int] | None, texts: bool,
) -> tuple[dict, dict]:
    """One split's page data, and its snapshots' ``key name -> column`` for the metrics."""
    frames = history.get(LAYOUTS, split)  # (key, Layout), in training order
    stored_layers = [int(l) for l in frames[0][1].layers]
    for key, lay in frames:
        these = [int(l) for l in lay.layers]
        if these != stored_layers:
            raise ValueError(
                f"split {split!r}: snapshot {key.name!r} has layouts of layers {these} but earlier ones "
                f"have {stored_layers}; run 'layerwatch render {store.root}' to lay the run out again"
            )
    if layers is None:
        pick = list(range(len(stored_layers)))
    else:
        absent = [l for l in layers if l not in stored_layers]
        if absent:
            raise ValueError(
                f"layers: layer {absent[0]} is not laid out in split {split!r}; its layers are "
                f"{stored_layers}; pass some of them or leave layers out"
            )
        pick = [stored_layers.index(l) for l in layers]
    first = frames[0][1]
    indices = np.asarray(first.indices)
    for key, lay in frames:
        if lay.layout.shape[1] != len(indices) or not np.array_equal(np.asarray(lay.indices), indices):
            raise ValueError(
                f"split {split!r}: snapshot {key.name!r} holds other rows than the first snapshot; "
                "a run monitors the same rows throughout, so this run directory mixes runs"
            )
    limits = [_limits(lay.layout[j] for _, lay in frames) for j in pick]
    has_predictions = any(lay.predictions is not None for _, lay in frames)
    row_texts = None
    if texts:
        stored = read_texts(store.root, split)
        if stored is not None:
            row_texts = [stored.get(int(i)) for i in indices]
    gif = store.gif_path(split)
    columns = {key.name: n for n, (key, _) in enumerate(frames)}
    data = {
        "name": split,
        "gif": posixpath.basename(gif) if os.path.exists(gif) else None,
        "rows": int(len(indices)),
        "indices": [int(i) for i in indices],
        "labels": [_number(v) for v in np.asarray(first.labels).tolist()],
        "texts": row_texts,
        "layers": [stored_layers[j] for j in pick],
        "limits": limits,
        "snapshots": [
            {"name": key.name, "title": key.title, "epoch": _number(lay.epoch), "step": int(lay.step)}
            for key, lay in frames
        ],
        "films": [_encode_film(np.stack([lay.layout[j] for _, lay in frames]), limits[k]) for k, j in enumerate(pick)],
        "predictions": (
            [None if lay.predictions is None else [int(p) for p in np.asarray(lay.predictions)] for _, lay in frames]
            if has_predictions
            else None
        ),
    }
    return data, columns


def _collect_metrics(history: History, splits: list[dict], columns: dict[str, dict]) -> list[dict]:
    cells: dict[tuple[str, str], dict[int, dict[int, Any]]] = {}
    shown = {s["name"]: set(s["layers"]) for s in splits}
    for split in shown:
        for key, rows in history.get(METRICS, split):
            col = columns[split].get(key.name)
            if col is None:
                continue  # a snapshot that is not laid out
            for r in rows:
                value = _number(r["value"])
                if int(r["layer"]) not in shown[split] or value is None:
                    continue  # a layer not shown, or a metric with no value there
                cells.setdefault((split, r["metric"]), {}).setdefault(int(r["layer"]), {})[col] = value
    out = []
    for s in splits:
        n = len(s["snapshots"])
        for metric in sorted(m for sp, m in cells if sp == s["name"]):
            by_layer = cells[(s["name"], metric)]
            layers = [l for l in s["layers"] if l in by_layer]
            out.append({
                "split": s["name"],
                "metric": metric,
                "layers": layers,
                "values": [[by_layer[l].get(c) for c in range(n)] for l in layers],
            })
    return out


def _check_sections(sections: Sequence[dict] | None) -> list[dict]:
    """Validate extra sections and give them their full shape (missing lists empty)."""
    if sections is None:
        return []
    if isinstance(sections, dict):
        sections = [sections]
    out = []
    for n, s in enumerate(sections):
        where = f"sections[{n}]"
        if not isinstance(s, dict) or not isinstance(s.get("title"), str):
            raise ValueError(f"{where} must be a dict with a 'title' string, e.g. {{'title': 'attention', 'images': [...]}}")
        unknown = set(s) - {"title", "text", "images", "links", "datamap", "films"}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}; allowed: title, text, images, links, datamap, films")
        text = s.get("text", "")
        if not isinstance(text, str):
            raise ValueError(f"{where}['text'] must be a string")
        for part in ("images", "links"):
            if not isinstance(s.get(part, []), (list, tuple)):
                raise ValueError(f"{where}[{part!r}] must be a list of dicts")
        images = []
        for m, im in enumerate(s.get("images", [])):
            src = im.get("src") if isinstance(im, dict) else None
            if not isinstance(src, str) or not _IMAGE_SRC.match(src):
                raise ValueError(
                    f"{where}['images'][{m}]['src'] must be a base64 data URL "
                    "('data:image/png;base64,...'); the page loads nothing from files or the network"
                )
            image = {"caption": str(im.get("caption", "")), "src": src}
            if im.get("snapshot") is not None:
                # One frame of a picture film (images sharing "group"): shown when the slider
                # selects its snapshot, or the latest before it.
                snap = im["snapshot"]
                if not (isinstance(snap, dict) and {"epoch", "step", "title"} <= set(snap)):
                    raise ValueError(f"{where}['images'][{m}]['snapshot'] must be {{'epoch', 'step', 'title'}} "
                                     "(layerwatch.pages.sections.snapshot_entry)")
                image["snapshot"] = {"epoch": snap["epoch"], "step": int(snap["step"]), "title": str(snap["title"])}
                image["group"] = str(im.get("group", ""))
            images.append(image)
        links = []
        for m, ln in enumerate(s.get("links", [])):
            href = ln.get("href") if isinstance(ln, dict) else None
            if not isinstance(href, str) or not href or (_SCHEME.match(href) and not href.startswith(("http://", "https://"))):
                raise ValueError(
                    f"{where}['links'][{m}]['href'] must be a path relative to the run directory "
                    "or an http(s) URL"
                )
            links.append({"text": str(ln.get("text", href)), "href": href})
        entry = {"title": s["title"], "text": text, "images": images, "links": links,
                 "films": [_check_film(f, f"{where}['films'][{m}]") for m, f in enumerate(s.get("films") or [])]}
        if s.get("datamap") is not None:
            entry["datamap"] = _check_datamap(s["datamap"], f"{where}['datamap']")
        out.append(entry)
    return out


_FILM_KEYS = ("title", "group", "split", "row", "snapshots", "ylabels", "xlabels", "range", "diverging", "values", "unit", "strip")
_B64 = re.compile(r"^[A-Za-z0-9+/=]*$")


def _check_film(film: Any, where: str) -> dict:
    """A section's heatmap film (``layerwatch.pages.sections.heatmap_film``): its frames fit its labels."""
    if not isinstance(film, dict) or set(film) != set(_FILM_KEYS):
        raise ValueError(f"{where} must be what layerwatch.pages.sections.heatmap_film returns (keys {', '.join(_FILM_KEYS)})")
    cells = len(film["snapshots"]) * len(film["ylabels"]) * len(film["xlabels"])
    if not isinstance(film["values"], str) or not _B64.match(film["values"]) or len(base64.b64decode(film["values"])) != cells:
        raise ValueError(f"{where}['values'] must code {cells} cells (snapshots x ylabels x xlabels), one byte each, in base64")
    strip = film["strip"]
    if strip is not None and len(base64.b64decode(strip["values"])) != len(film["snapshots"]) * len(strip["labels"]):
        raise ValueError(f"{where}['strip']['values'] must code one byte per snapshot and label")
    return dict(film)


_DATAMAP_ARRAYS = ("rows", "x", "y", "correctness", "aum", "label", "predicted")


def _check_datamap(dm: Any, where: str) -> dict:
    """An interactive data map: per-row arrays of equal length (the ``dynamics`` measurement's)."""
    if not isinstance(dm, dict) or not isinstance(dm.get("split"), str):
        raise ValueError(f"{where} must be a dict with a 'split' name and the arrays {', '.join(_DATAMAP_ARRAYS)}")
    n = len(dm.get("rows", []))
    for key in _DATAMAP_ARRAYS:
        if not isinstance(dm.get(key), list) or len(dm[key]) != n:
            raise ValueError(f"{where}[{key!r}] must be a list of {n} values (one per row)")
    texts = dm.get("texts")
    if texts is not None and (not isinstance(texts, list) or len(texts) != n):
        raise ValueError(f"{where}['texts'] must be None or a list of {n} strings or None")
    names = dm.get("label_names")
    return {
        "split": dm["split"], "title": str(dm.get("title", "")), "top": int(dm.get("top", 50)),
        "thresholds": [float(v) for v in dm.get("thresholds", (0.5, 0.2))],
        "label_names": [str(v) for v in names] if isinstance(names, list) else None,
        **{k: [_number(v) for v in dm[k]] for k in _DATAMAP_ARRAYS},
        "texts": [None if t is None else str(t) for t in texts] if texts is not None else None,
    }


def collect_report(
    root: str,
    splits: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    texts: bool = True,
    sections: Sequence[dict] | None = None,
    context: Context | None = None,
) -> dict:
    """The page data of a run directory (JSON-ready; the format is in the module docstring).

    Hrefs (GIFs, relative section links) are relative to the run directory.

    Args:
        root: The run directory (a LayerwatchCallback's ``output_dir``).
        splits: Splits to show (default: every split with layouts).
        layers: Hidden-state indices to show (default: every laid-out layer).
        texts: Put the rows' texts in the page; False leaves them out entirely (as does a
            run trained with ``report_text=False``, whatever ``texts`` says).
        sections: Extra sections, ``{"title", "text", "images", "links", "films"}`` each.
        context: The back half's context whose history holds the run (a pipeline's); by
            default the history is read once from the run directory.

    Raises:
        ValueError: an unknown split or layer, a run with no layouts, a bad section.
        FileNotFoundError: ``root`` is not a run directory.
    """
    store = RunStore(root) if context is None else context.store
    info = store.read_run()
    history = stored_history(store)[0].history if context is None else context.history
    if layers is not None:
        parsed = parse_layers(layers)
        layers = None if parsed == "all" else list(parsed)
    extra = _check_sections(sections)
    if not texts:
        for sec in extra:
            if "datamap" in sec:
                sec["datamap"]["texts"] = None
    chosen = _choose_splits(store, history, splits)
    split_data, columns = [], {}
    texts = bool(texts) and text_allowed(info.get("config"))
    for split in chosen:
        data, columns[split] = _collect_split(store, history, split, layers, texts)
        split_data.append(data)
    config = info.get("config") or {}
    label_names = info.get("label_names")
    model = info.get("model_name")
    if isinstance(model, str) and os.path.isabs(model):
        # A local model folder: its last two names say which model; the rest of the path
        # (a home folder, say) has no business in a page that may be shared.
        model = "/".join(os.path.normpath(model).split(os.sep)[-2:])
    return {
        "format": FORMAT,
        "title": f"layerwatch report: {model}" if model else "layerwatch report",
        "run": {
            "model": model,
            "method": config.get("method"),
            "pooling": config.get("pooling"),
            "label_kind": "regression" if info.get("label_kind") == "regression" else "class",
            "texts": any(s["texts"] is not None for s in split_data),
        },
        "label_names": [str(n) for n in label_names] if label_names is not None else None,
        "splits": split_data,
        "metrics": _collect_metrics(history, split_data, columns),
        "sections": extra,
    }


# -- writing -------------------------------------------------------------------------
_BODY = """<header>
  <h1 id="title"></h1>
  <p id="subtitle"></p>
</header>
<nav id="controls" aria-label="report controls">
  <label>split <select id="split"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>colour <select id="colour"></select></label>
  <label class="search">search <input id="search" type="search" autocomplete="off" spellcheck="false"></label>
  <span id="matches" aria-live="polite"></span>
  <span id="gifs"></span>
</nav>
<div id="timeline">
  <button id="play" type="button" aria-label="play">&#9654;</button>
  <input id="slider" type="range" min="0" max="0" value="0" step="1" aria-label="snapshot">
  <span id="snapshot"></span>
</div>
<div id="legend"></div>
<main>
  <section id="panels" aria-label="layouts per layer"></section>
  <aside id="details" aria-live="polite"><p class="hint">Point at a dot to read its row; click to pin it and see its path.</p></aside>
</main>
<section id="heatmaps" aria-label="metrics"></section>
<section id="sections"></section>
<noscript><p>This report needs JavaScript to draw its panels.</p></noscript>
"""


def report_html(data: dict) -> str:
    """The report page for ``data`` (from :func:`collect_report`): one offline HTML document."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"data must be the dict collect_report returns (format {FORMAT!r})")
    return render_page(data["title"], _BODY, [asset("report.js")], [asset("report.css")], data)


def _rebase(href: str, root: str, out_dir: str) -> str:
    """An href relative to the run directory, made relative to the page's folder."""
    if _SCHEME.match(href) or href.startswith("/"):
        return href
    target = os.path.join(os.path.abspath(root), *href.split("/"))
    return os.path.relpath(target, out_dir).replace(os.sep, "/")


def write_report(
    root: str,
    out: str | None = None,
    splits: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    texts: bool = True,
    sections: Sequence[dict] | None = None,
    context: Context | None = None,
    measurements: Sequence[Measurement] | None = None,
) -> str:
    """Write the report of run ``root`` to ``out`` (default ``<root>/report.html``) and return its path.

    The file is written atomically; the same run directory gives a byte-identical file.
    Arguments are those of :func:`collect_report`; ``sections`` defaults to the sections of
    ``measurements`` (by default the run's own, read with the history from the run directory).
    """
    if context is None:
        context, found = stored_history(RunStore(root))
        measurements = found if measurements is None else measurements
    store = context.store
    if sections is None:
        sections = run_sections(context, measurements or [])
    data = collect_report(root, splits=splits, layers=layers, texts=texts, sections=sections, context=context)
    path = os.path.abspath(out) if out is not None else os.path.join(os.path.abspath(root), REPORT_FILE)
    if os.path.isdir(path):
        raise ValueError(f"out={out!r} is a folder; pass a file name such as {os.path.join(out, REPORT_FILE)!r}")
    out_dir = os.path.dirname(path)
    if out_dir != os.path.abspath(root):
        for s in data["splits"]:
            if s["gif"] is not None:
                s["gif"] = _rebase(s["gif"], root, out_dir)
        for sec in data["sections"]:
            for ln in sec["links"]:
                ln["href"] = _rebase(ln["href"], root, out_dir)
    html = report_html(data)
    if out_dir == os.path.abspath(root):
        store.write_text(path, html)  # a run file: recorded, and never through a link out of the run
    else:
        atomic_write_text(path, html)
    return path


# -- command line --------------------------------------------------------------------
def _layers_arg(value: str) -> list[int]:
    try:
        parsed = parse_layers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if parsed == "all":
        raise argparse.ArgumentTypeError("--layers takes indices, for example 0,3,6 (leave it out for all)")
    return list(parsed)


def _cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.run_dir, out=args.output, splits=args.splits, layers=args.layers, texts=args.text)
    print(path)
    return 0


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``layerwatch report RUN [-o FILE] [--splits ...] [--layers ...] [--no-text]``.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
    """
    p = subparsers.add_parser("report", help="write one self-contained offline page of a run (RUN/report.html)")
    p.add_argument("run_dir", help="the output_dir of a LayerwatchCallback run")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument("--splits", nargs="+", help="splits to show (default: all laid out)")
    p.add_argument("--layers", type=_layers_arg, help="hidden-state indices to show, e.g. 0,3,6 (default: all)")
    p.add_argument("--no-text", dest="text", action="store_false", help="leave the rows' texts out of the page")
    p.set_defaults(func=_cmd_report)
    return p
