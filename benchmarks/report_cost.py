"""What the run report costs at the HatEval defaults: size, ready time, writing time.

A synthetic run shaped like the HatEval defaults (2 splits x 7 hidden states x 1,000
rows, hidden size 384, 100-character texts) with 10 snapshots is written through
``layerwatch.RunStore``. Its layouts are two label clusters per layer that separate over
the snapshots, deeper layers more, each snapshot a small step from the last (as tied
layouts are); predictions get better over the snapshots; the metrics of the pipeline
(kNN, probe, silhouette, model accuracy) are filed for every snapshot.

Figures, with their targets:

1. file size of ``report.html``: at most 2 MB;
2. ready time in headless Chromium from a file path, offline: from the start of the
   navigation to the page's own ready flag (``body[data-ready]``, set after the first
   draw), median of ``--repeats`` fresh pages: under 1 s. The page's own clock
   (``performance.now()`` at ready, counted from the navigation's start) and the time
   of one redraw when the slider moves are printed too;
3. the time ``write_report`` takes for the run with 10 snapshots, median of
   ``--repeats`` (the callback rewrites the report after every snapshot, so this is the
   cost it adds to the last snapshot of such a run): under 1 s.

Nothing is asserted: figures, targets and PASS/FAIL are printed. The machine's load is
printed too; timings taken while other work runs are inflated.

Usage::

    python benchmarks/report_cost.py
    python benchmarks/report_cost.py --screenshot docs/images/report.png   # also the README picture
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SPLITS = ("train", "validation")
LAYERS = 7
ROWS = 1000
HIDDEN = 384
SNAPSHOTS = 10
TEXT_CHARS = 100
SIZE_TARGET = 2_000_000
READY_TARGET = 1.0
WRITE_TARGET = 1.0
WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up "
         "other about out many then them these so some her would make like him into time has look two more go see "
         "no way could people my than first water been call who oil its now find long down day did get come made "
         "may part @user #tag lol why really never always again today tomorrow").split()


def _text(rng: np.random.Generator) -> str:
    words = []
    while sum(len(w) + 1 for w in words) < TEXT_CHARS:
        words.append(str(rng.choice(WORDS)))
    return " ".join(words)[:TEXT_CHARS]


def build_run(root: str, seed: int = 0, rows: int = ROWS, layers: int = LAYERS, hidden: int = HIDDEN) -> str:
    """Write the synthetic run described in the module docstring to ``root``.

    ``rows``, ``layers`` and ``hidden`` change its shape (``--scale`` uses ``hidden=1``: the
    page reads no pooled vector, and 25 layers x 10,000 rows x 384 would be 3.8 GB).
    """
    ROWS, LAYERS, HIDDEN = rows, layers, hidden  # noqa: N806 (the shape of this run)
    from layerwatch.capturing import Snapshot
    from layerwatch.measures.embeddings.files import save_layout, save_snapshot, write_metrics
    from layerwatch.store import RunStore, SnapshotKey

    rng = np.random.default_rng(seed)
    store = RunStore(root)
    store.write_run({
        "label_names": list(common.LABEL_NAMES), "label_kind": "class", "reference_split": "train",
        "model_name": "all-MiniLM-L6-v2 (synthetic run)", "config": {"method": "tsne", "pooling": "mean"},
    })
    metrics = []
    steps_per_epoch = 63
    for s_no, split in enumerate(SPLITS):
        indices = np.sort(rng.choice(max(9000, 2 * ROWS), size=ROWS, replace=False)).astype(np.int64)
        labels = (rng.random(ROWS) < 0.42).astype(np.int64)
        sign = np.where(labels == 1, 1.0, -1.0)
        noise = rng.normal(size=(LAYERS, ROWS, 2)) * 9.0
        luck = rng.random(ROWS)
        walk = np.zeros((LAYERS, ROWS, 2))
        for k in range(SNAPSHOTS):
            key = SnapshotKey(k, k * steps_per_epoch)
            t = k / (SNAPSHOTS - 1)
            walk += rng.normal(size=walk.shape) * 0.8
            layout = np.empty((LAYERS, ROWS, 2), np.float32)
            for j in range(LAYERS):
                sep = 2.0 + 26.0 * t * (j / (LAYERS - 1)) ** 1.5
                layout[j, :, 0] = sign * sep + noise[j, :, 0] + walk[j, :, 0]
                layout[j, :, 1] = noise[j, :, 1] * (1.0 - 0.3 * t * j / LAYERS) + walk[j, :, 1]
            right = luck < 0.55 + 0.35 * t
            predictions = np.where(right, labels, 1 - labels)
            pooled = rng.normal(size=(LAYERS, ROWS, HIDDEN)).astype(np.float32)
            save_snapshot(
                store,
                Snapshot(pooled=pooled, labels=labels, layers=np.arange(LAYERS), indices=indices,
                         predictions=predictions, split=split), key)
            save_layout(store, split, key, layout, np.arange(LAYERS), "tsne", True)
            for j in range(LAYERS):
                depth = t * j / (LAYERS - 1)
                for metric, value in (("knn_accuracy", 0.55 + 0.35 * depth), ("probe_accuracy", 0.6 + 0.3 * depth),
                                      ("silhouette", 0.02 + 0.4 * depth)):
                    metrics.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": j,
                                    "metric": metric, "value": round(value + rng.normal() * 0.01, 4)})
            metrics.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": LAYERS - 1,
                            "metric": "model_accuracy", "value": round(float(right.mean()), 4)})
        os.makedirs(os.path.join(root, "texts"), exist_ok=True)
        with open(os.path.join(root, "texts", f"{split}.json"), "w", encoding="utf-8") as fh:
            json.dump({"indices": indices.tolist(), "texts": [_text(rng) for _ in range(ROWS)]}, fh)
        with open(store.gif_path(split), "wb") as fh:
            fh.write(b"GIF89a")  # a placeholder: the page only links it
    write_metrics(store, metrics)
    return root


def time_writes(root: str, repeats: int) -> tuple[float, float, str]:
    """Median and first ``write_report`` time, and the path written."""
    from layerwatch.report import write_report

    times = []
    path = ""
    for _ in range(repeats):
        with common.Timer() as t:
            path = write_report(root)
        times.append(t.seconds)
    return common.median(times), times[0], path


def time_page(path: str, repeats: int, screenshot: str | None) -> dict:
    """Ready times in headless Chromium, a redraw time, and optionally the README picture."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        common.skip("playwright is not installed: pip install playwright")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from browser import chromium_path

    exe = chromium_path()
    if exe is None:
        common.skip("no Chromium found (apt-get install chromium)")
    uri = "file://" + os.path.abspath(path)
    wall, own, redraw = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            for n in range(repeats + 1):
                context = browser.new_context(offline=True, viewport={"width": 1360, "height": 1060})
                page = context.new_page()
                with common.Timer() as t:
                    page.goto(uri, wait_until="commit")
                    page.wait_for_selector("body[data-ready='1']", timeout=30000)
                if n:  # the first load warms the browser's own caches; it is not counted
                    wall.append(t.seconds)
                    own.append(page.evaluate("window.layerwatchReport.readyMs") / 1000)
                    page.focus("#slider")
                    page.keyboard.press("ArrowRight")
                    redraw.append(page.evaluate("window.layerwatchReport.state().lastDrawMs") / 1000)
                if screenshot and n == repeats:
                    _picture(page, screenshot)
                context.close()
        finally:
            browser.close()
    return {"wall": common.median(wall), "own": common.median(own), "redraw": common.median(redraw)}


def _picture(page, out: str) -> None:
    """The README picture: a late snapshot, one row pinned (its path drawn), another hovered."""
    hook = "window.layerwatchReport"
    page.evaluate("document.getElementById('slider').value = '7'")
    page.dispatch_event("#slider", "input")
    pin = page.evaluate(f"{hook}.pointOf('train', 5, 11)")
    page.mouse.click(pin["x"], pin["y"])
    point = page.evaluate(f"{hook}.pointOf('train', 6, 40)")
    page.mouse.move(point["x"], point["y"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Not full_page: growing the viewport for it would move the panels from under the pointer.
    page.screenshot(path=out)
    print(f"screenshot: {out}")


# -- --scale: the report of a big run, against the page of a baseline revision ----------
SCALE_SIZE_TARGET = 15_000_000
SCALE_FIRST_TARGET = 2.0
SCALE_HOVER_TARGET = 0.050
BASELINE_REV = "e723a37"  # the page before the films were coded (int16 per snapshot, every dot redrawn)

# Runs in the page: pointer moves, pin clicks and a search dispatched to the page's own
# handlers (they answer synchronously), each timed with the page's clock, in ms.
_INTERACT = """async ([split, layer, rows]) => {
  const hook = window.layerwatchReport, canvas = document.querySelector('canvas[data-layer="' + layer + '"]');
  const at = (r) => hook.pointOf(split, layer, r);
  const fire = (type, p) => canvas.dispatchEvent(new PointerEvent(type, {clientX: p.x, clientY: p.y, bubbles: true}));
  const time = (f) => { const t0 = performance.now(); f(); return performance.now() - t0; };
  const hover = [], pin = [];
  for (const r of rows) { const p = at(r); if (p) hover.push(time(() => fire('pointermove', p))); }
  for (const r of rows.slice(0, 5)) {
    const p = at(r);
    if (p) pin.push(time(() => canvas.dispatchEvent(new MouseEvent('click', {clientX: p.x, clientY: p.y, bubbles: true}))));
    if (p) canvas.dispatchEvent(new MouseEvent('click', {clientX: p.x, clientY: p.y, bubbles: true}));   // unpin
  }
  const box = document.getElementById('search');
  const search = time(() => { box.value = 'the'; box.dispatchEvent(new Event('input')); });
  box.value = ''; box.dispatchEvent(new Event('input'));
  return {hover, pin, search, matches: hook.state().matches.length};
}"""


def baseline_page(root: str, rev: str) -> str | None:
    """The page that revision ``rev`` wrote for this run (its script and style, its int16 coding), or None."""
    import subprocess

    from layerwatch.measures.embeddings.files import load_layout
    from layerwatch.pages import render_page
    from layerwatch.report import _BODY, collect_report
    from layerwatch.store import RunStore

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        js, css = (subprocess.run(["git", "show", f"{rev}:layerwatch/pages/{name}"], cwd=here, check=True,
                                  capture_output=True, text=True).stdout for name in ("report.js", "report.css"))
    except (OSError, subprocess.CalledProcessError):
        return None
    data = collect_report(root, sections=[])
    store = RunStore(root)
    data["format"] = "layerwatch-report/1"
    for s in data["splits"]:
        films = [np.asarray(load_layout(store, s["name"], key)["layout"], np.float64) for key in store.keys(s["name"], "layouts")]
        s["xy"] = [[_int16(f[j], s["limits"][j]) for j in range(len(s["layers"]))] for f in films]
        del s["films"]
    return render_page(data["title"], _BODY, [js], [css], data)


def _int16(xy: np.ndarray, limits) -> str:
    """The baseline's coding: little-endian int16 pairs over the limits, base64."""
    import base64

    lo = np.array([limits[0], limits[2]])
    span = np.array([limits[1] - limits[0], limits[3] - limits[2]])
    missing = ~np.isfinite(xy).all(axis=1)
    q = np.rint((np.where(missing[:, None], lo, xy) - lo) / span * 65534 - 32767).clip(-32767, 32767).astype("<i2")
    q[missing] = -32768
    return base64.b64encode(q.tobytes()).decode("ascii")


def time_scale_page(path: str, repeats: int, layer: int, rows: int, timeout_s: float) -> dict:
    """First picture (page's clock from the navigation), ready, hover, pin and search times in Chromium."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from browser import chromium_path

    exe = chromium_path()
    if exe is None:
        common.skip("no Chromium found (apt-get install chromium)")
    uri = "file://" + os.path.abspath(path)
    first, ready, hover, pin, search = [], [], [], [], []
    probe = [int(r) for r in np.linspace(0, rows - 1, 40)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            for n in range(repeats + 1):
                context = browser.new_context(offline=True, viewport={"width": 1360, "height": 1060})
                page = context.new_page()
                with common.Timer() as t:
                    page.goto(uri, wait_until="commit", timeout=timeout_s * 1000)
                    page.wait_for_selector("body[data-ready='1']", timeout=timeout_s * 1000)
                if n:  # the first load warms the browser's own caches; it is not counted
                    first.append(page.evaluate("window.layerwatchReport.readyMs") / 1000)
                    ready.append(t.seconds)
                    got = page.evaluate(_INTERACT, ["train", layer, probe])
                    hover.extend(got["hover"])
                    pin.extend(got["pin"])
                    search.append(got["search"])
                context.close()
        finally:
            browser.close()
    return {"first": common.median(first), "ready": common.median(ready), "hover": common.median(hover) / 1000,
            "hover_max": max(hover) / 1000, "pin": common.median(pin) / 1000, "search": common.median(search) / 1000}


def scale(args: argparse.Namespace) -> int:
    """``--scale``: size, first picture and hover of a big run's page, and the baseline's in the same run."""
    from layerwatch.report import write_report

    rows, layers = args.rows, args.layers
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or os.path.join(tmp, "run")
        print(f"building a synthetic run: {len(SPLITS)} splits x {layers} layers x {rows} rows, {SNAPSHOTS} snapshots, "
              f"{TEXT_CHARS}-character texts (pooled vectors of width 1: the page reads none)")
        build_run(root, rows=rows, layers=layers, hidden=1)
        with common.Timer() as t:
            path = write_report(root)
        pages = {"coded films (this revision)": (path, t.seconds)}
        old = baseline_page(root, args.baseline) if args.baseline else None
        if old is not None:
            old_path = os.path.join(root, "report_baseline.html")
            with open(old_path, "w", encoding="utf-8") as fh:
                fh.write(old)
            pages[f"int16 per snapshot ({args.baseline})"] = (old_path, None)
        elif args.baseline:
            print(f"(no baseline: 'git show {args.baseline}:...' failed; run from a git checkout)")
        figures = {}
        for name, (page_path, _) in pages.items():
            print(f"timing in Chromium: {name} ...", flush=True)
            figures[name] = dict(size=os.path.getsize(page_path),
                                 **time_scale_page(page_path, args.repeats, layers // 2, rows, args.page_timeout))
    table = []
    names = list(figures)
    for name in names:
        f = figures[name]
        table += [
            (f"{name}: file size", f"{f['size'] / 1e6:.2f} MB", f"<= {SCALE_SIZE_TARGET / 1e6:.0f} MB",
             common.verdict(f["size"] <= SCALE_SIZE_TARGET)),
            ("  first picture drawn (page's clock from navigation)", f"{f['first']:.2f} s", f"< {SCALE_FIRST_TARGET:.0f} s",
             common.verdict(f["first"] < SCALE_FIRST_TARGET)),
            ("  ready, every split decoded (wall)", f"{f['ready']:.2f} s", "", ""),
            ("  hover answered (median of 40 rows)", f"{f['hover'] * 1000:.1f} ms", f"< {SCALE_HOVER_TARGET * 1000:.0f} ms",
             common.verdict(f["hover"] < SCALE_HOVER_TARGET)),
            ("  hover answered (slowest)", f"{f['hover_max'] * 1000:.1f} ms", "", ""),
            ("  pin a row: its path drawn (median)", f"{f['pin'] * 1000:.1f} ms", "", ""),
            ("  search 'the' (median)", f"{f['search'] * 1000:.1f} ms", "", ""),
        ]
    write = pages[names[0]][1]
    table.append((f"write_report ({names[0]})", f"{write:.1f} s", "", ""))
    if len(names) == 2:
        a, b = figures[names[0]], figures[names[1]]
        for key, what in (("size", "file size"), ("first", "first picture"), ("hover", "hover"), ("pin", "pin"),
                          ("search", "search")):
            table.append((f"ratio {what}: baseline / this revision", f"{b[key] / a[key]:.1f}x", "", ""))
    common.print_table(table, ("figure", "value", "target", "verdict"))
    common.print_load(" (after)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed writes and page loads (default: %(default)s)")
    parser.add_argument("--screenshot", help="also save a picture of the page here (PNG)")
    parser.add_argument("--keep", help="build the run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--scale", action="store_true",
                        help="the big-run figures instead: 2 splits x --layers x --rows, 10 snapshots (size, first "
                             "picture, hover), against the page of --baseline in the same run")
    parser.add_argument("--rows", type=int, default=10_000, help="--scale: rows per split (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=25, help="--scale: layers (default: %(default)s)")
    parser.add_argument("--baseline", default=BASELINE_REV,
                        help="--scale: the git revision whose page to compare with ('' for none; default: %(default)s)")
    parser.add_argument("--page-timeout", type=float, default=180.0, help="--scale: seconds a page may take to load")
    args = parser.parse_args()
    common.print_load()
    if args.scale:
        return scale(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or os.path.join(tmp, "run")
        print(f"building a synthetic run: {len(SPLITS)} splits x {LAYERS} layers x {ROWS} rows, "
              f"hidden {HIDDEN}, {SNAPSHOTS} snapshots, {TEXT_CHARS}-character texts")
        build_run(root)
        write, first, path = time_writes(root, args.repeats)
        size = os.path.getsize(path)
        page = time_page(path, args.repeats, args.screenshot)
    rows = [
        ("file size", f"{size / 1e6:.2f} MB", f"<= {SIZE_TARGET / 1e6:.0f} MB", common.verdict(size <= SIZE_TARGET)),
        ("ready in Chromium (navigation to ready flag)", f"{page['wall']:.3f} s", f"< {READY_TARGET:.0f} s",
         common.verdict(page["wall"] < READY_TARGET)),
        ("  page's own clock at ready", f"{page['own']:.3f} s", "", ""),
        ("  one redraw (slider step, all panels)", f"{page['redraw'] * 1000:.1f} ms", "", ""),
        (f"write_report, {SNAPSHOTS} snapshots (median)", f"{write:.3f} s", f"< {WRITE_TARGET:.0f} s",
         common.verdict(write < WRITE_TARGET)),
        ("  first write (cold)", f"{first:.3f} s", "", ""),
    ]
    common.print_table(rows, ("figure", "value", "target", "verdict"))
    common.print_load(" (after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
