"""The back half in memory: the history a pipeline holds, and the report and head view drawn
from it; every section of the report moving with the page's slider.

One tiny run with attention and attribution (3 snapshots) serves every test: its
pipeline's history against one read back from the disk, the store reads a snapshot
costs after a restore, and the page in a real browser, checked through the data it plots.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import make_trainer, tiny_bert, toy_dataset

from layerwatch import LayerwatchCallback, RunStore
from layerwatch.history import LAYOUTS, METRICS
from layerwatch.pages.sections import LEVELS, decode_values, heatmap_film
from layerwatch.snapshot import SnapshotKey

KEYS = [SnapshotKey(0, 0), SnapshotKey(1, 2), SnapshotKey(2, 4)]  # 16 rows, batches of 8


@pytest.fixture(scope="module")
def sections_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sections")
    train, val = toy_dataset(16), toy_dataset(12, seed=1)
    watch = LayerwatchCallback(
        {"train": train, "validation": val}, out / "lw", method="pca", progress=False,
        attention=True, attention_examples=2, attribution=True, attribution_examples=2, attribution_steps=4,
        precision="fp32",
    )
    trainer = make_trainer(tiny_bert(), train, [watch], out / "t", epochs=2)
    trainer.train()
    pipe = watch.pipeline
    report = (out / "lw" / "report.html").read_bytes()
    head_view = (out / "lw" / "attention_head_view.html").read_bytes()
    return {"dir": out / "lw", "pipeline": pipe, "report": report, "head_view": head_view, "val": val}


def _page_data(text: str) -> dict:
    start = text.index('id="layerwatch-data">') + len('id="layerwatch-data">')
    return json.loads(text[start : text.index("</script>", start)])


def _copy(sections_run, tmp_path):
    return str(shutil.copytree(sections_run["dir"], tmp_path / "copy"))


# -- the history ---------------------------------------------------------------------------
def test_the_pipeline_holds_every_snapshot_of_every_part(sections_run):
    history = sections_run["pipeline"].history
    for split in ("train", "validation"):
        assert [k for k, _ in history.get(LAYOUTS, split)] == KEYS
        assert [k for k, _ in history.get(METRICS, split)] == KEYS
        assert [k for k, _ in history.get("attention", split)] == KEYS
    assert [k for k, _ in history.get("attribution", "validation")] == KEYS
    store = RunStore(sections_run["dir"])
    for key, lay in history.get(LAYOUTS, "validation"):
        np.testing.assert_array_equal(lay.layout, store.load_layout("validation", key)["layout"])


def test_a_pipeline_that_processed_the_run_writes_the_report_a_reading_of_the_disk_writes(sections_run, tmp_path):
    from layerwatch.report import write_report

    root = _copy(sections_run, tmp_path)
    # The page the live pipeline wrote after its last snapshot, and the page of the run read from its files.
    live = sections_run["report"]
    assert open(write_report(root), "rb").read() == live
    data = _page_data(live.decode("utf-8"))
    assert [s["title"] for s in data["sections"]] == ["Attention", "Attribution"]
    # ...and the head view, written from the history, is the one a pipeline restored from the disk writes.
    from layerwatch.pipeline import Pipeline
    from layerwatch.reading import run_context

    ctx, measurements = run_context(RunStore(root))
    pipe = Pipeline(ctx.store, ctx.config, ctx.label_names, ctx.regression, ctx.reference_split, measurements)
    pipe.restore()
    attention = [m for m in pipe.measurements if m.name == "attention"][0]
    os.remove(os.path.join(root, "attention_head_view.html"))
    attention.write_head_view(pipe.ctx)
    assert open(os.path.join(root, "attention_head_view.html"), "rb").read() == sections_run["head_view"]


class _Reads:
    """Counts what the store reads, by method and snapshot key (the key's name, or None)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str | None]] = []
        self._in_write = 0
        for name in ("load_layout", "load_arrays", "load_snapshot", "snapshot_key", "read_metrics", "read_table", "load_texts"):
            original = getattr(RunStore, name)
            monkeypatch.setattr(RunStore, name, self._wrap(name, original))
        replace = RunStore.replace_rows

        def replace_rows(store, *a, **kw):  # a table rewritten whole: the store's persistence, not a page read
            self._in_write += 1
            try:
                return replace(store, *a, **kw)
            finally:
                self._in_write -= 1

        monkeypatch.setattr(RunStore, "replace_rows", replace_rows)

    def _wrap(self, name, original):
        def counted(store, *a, **kw):
            if not self._in_write:
                key = next((x for x in list(a) + list(kw.values()) if isinstance(x, SnapshotKey)), None)
                self.calls.append((name, None if key is None else key.name))
            return original(store, *a, **kw)

        return counted


def test_after_a_restore_a_snapshot_reads_no_earlier_snapshots_files(sections_run, tmp_path, monkeypatch):
    from layerwatch.pipeline import Pipeline
    from layerwatch.reading import run_context, stored_snapshots

    root = _copy(sections_run, tmp_path)
    ctx, measurements = run_context(RunStore(root))
    pipe = Pipeline(ctx.store, ctx.config, ctx.label_names, ctx.regression, ctx.reference_split, measurements)
    pipe.restore()
    # A new snapshot: the last one's arrays again, one epoch later (the pipeline measures and draws it).
    last_key, snaps = stored_snapshots(ctx.store, measurements, label_names=ctx.label_names)[-1]
    new = SnapshotKey(3, 6)
    for snap in snaps.values():
        snap.epoch, snap.step = 3.0, 6
    reads = _Reads(monkeypatch)
    before = os.path.getmtime(os.path.join(root, "report.html"))
    pipe.process(snaps, new)
    assert pipe.failures == []
    assert os.path.getmtime(os.path.join(root, "report.html")) >= before
    earlier = [c for c in reads.calls if c[1] is not None and c[1] != new.name]
    assert earlier == [], f"the snapshot read earlier snapshots' files: {earlier}"
    assert [c for c in reads.calls if c[0] in ("read_metrics", "read_table")] == []
    # ...and what it wrote holds the new snapshot next to the others.
    data = _page_data(open(os.path.join(root, "report.html"), encoding="utf-8").read())
    assert [s["step"] for s in data["splits"][0]["snapshots"]] == [0, 2, 4, 6]
    films = [f for sec in data["sections"] for f in sec["films"]]
    # Every film has the new frame after its earlier ones (drift_prev has none at the first snapshot).
    assert films and all([s["step"] for s in f["snapshots"]] == ([2, 4, 6] if "drift prev" in f["title"] else [0, 2, 4, 6])
                         for f in films)


def test_the_report_command_reads_each_file_once(sections_run, tmp_path, monkeypatch):
    from layerwatch.report import write_report

    root = _copy(sections_run, tmp_path)
    reads = _Reads(monkeypatch)
    write_report(root)
    layouts = [c for c in reads.calls if c[0] == "load_layout"]
    assert sorted(layouts) == sorted(("load_layout", k.name) for k in KEYS for _ in ("train", "validation"))
    assert len([c for c in reads.calls if c[0] == "read_metrics"]) == 1


# -- the sections' data ------------------------------------------------------------------------
def test_heatmap_films_code_every_frame_within_half_a_level():
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(3, 5)) for _ in KEYS]
    frames[1][2, 4] = np.nan
    film = heatmap_film("t", KEYS, frames, list("abc"), list("vwxyz"), diverging=True)
    lo, hi = film["range"]
    assert lo == -hi and hi == pytest.approx(max(np.nanmax(np.abs(f)) for f in frames))
    back = decode_values(film["values"], (3, 3, 5), film["range"])
    assert np.isnan(back[1, 2, 4])
    ok = ~np.isnan(back)
    assert (np.abs(back - np.stack(frames))[ok] <= (hi - lo) / LEVELS / 2 + 1e-12).all()
    assert [s["step"] for s in film["snapshots"]] == [0, 2, 4]
    with pytest.raises(ValueError, match="3 keys but 2 frames"):
        heatmap_film("t", KEYS, frames[:2], list("abc"), list("vwxyz"))


def test_the_sections_carry_every_snapshot_of_the_stored_values(sections_run):
    data = _page_data(sections_run["report"].decode("utf-8"))
    attention, attribution = data["sections"]
    store = RunStore(sections_run["dir"])
    rows = store.read_table("attention.csv")
    film = [f for f in attention["films"] if f["title"] == "validation: entropy"][0]
    values = decode_values(film["values"], (3, len(film["ylabels"]), len(film["xlabels"])), film["range"])
    step = (film["range"][1] - film["range"][0]) / LEVELS / 2 + 1e-9
    for r in rows:
        if r["split"] == "validation" and r["stat"] == "entropy":
            k = [s["step"] for s in film["snapshots"]].index(r["step"])
            assert abs(values[k, r["layer"] - 1, r["head"] - 1] - r["value"]) <= step
    conductance = [f for f in attribution["films"] if f["row"] is not None]
    val_rows = set(int(i) for i in store.load_snapshot("validation", KEYS[0], pooled=False).indices)
    assert len(conductance) == 2 and all(f["split"] == "validation" and f["row"] in val_rows for f in conductance)
    arrays = store.load_arrays("attribution", "validation", KEYS[2])
    f = conductance[0]
    n = len(f["xlabels"])
    got = decode_values(f["values"], (3, len(f["ylabels"]), n), f["range"])[2]
    r = [int(store.load_snapshot("validation", KEYS[2], pooled=False).indices[p]) for p in arrays["positions"]].index(f["row"])
    np.testing.assert_allclose(got, arrays["conductance"][r][:, :n], atol=(f["range"][1] - f["range"][0]) / LEVELS / 2 + 1e-9)


# -- the page in a real browser ----------------------------------------------------------------
def _open(open_page, path):
    page, log = open_page(path, viewport=(1360, 1000))
    page.wait_for_selector("body[data-ready='1']", timeout=10000)
    return page, log


def _set_slider(page, k: int) -> None:
    page.evaluate(f"document.getElementById('slider').value = '{k}'")
    page.dispatch_event("#slider", "input")


def test_each_sections_frame_follows_the_slider(sections_run, tmp_path, open_page):
    root = _copy(sections_run, tmp_path)
    data = _page_data(open(os.path.join(root, "report.html"), encoding="utf-8").read())
    page, log = _open(open_page, os.path.join(root, "report.html"))
    hook = "window.layerwatchReport"
    every = [f for sec in data["sections"] for f in sec["films"]]
    for k in (0, 2, 1):
        _set_slider(page, k)
        slider = page.evaluate(f"{hook}.state().snapshot")
        want = data["splits"][0]["snapshots"][slider]
        shown = page.evaluate(f"{hook}.films()")
        assert len(shown) == len(every)
        visible = [f for f in shown if f["visible"]]
        assert {f["group"] for f in visible} == {"entropy", "conductance by layer and token"}
        exact = 0
        for f, film in zip(shown, every):
            mine = [(s["step"], s["epoch"]) for s in film["snapshots"]]
            got = np.array([[np.nan if v is None else v for v in line] for line in f["values"]])
            if (want["step"], want["epoch"]) not in mine:  # drift_prev has no frame at the first snapshot
                assert f["snapshot"] is None and not f["exact"] and np.isnan(got).all()
                continue
            exact += 1
            assert f["exact"] and (f["snapshot"]["step"], f["snapshot"]["epoch"]) == (want["step"], want["epoch"])
            rows, cols = len(film["ylabels"]), len(film["xlabels"])
            stored = decode_values(film["values"], (len(film["snapshots"]), rows, cols), film["range"])
            np.testing.assert_allclose(got, stored[mine.index((want["step"], want["epoch"]))], atol=1e-6)
        assert exact >= len(every) - 1
    # The canvas shows those colours: a cell's pixel is the colour of its value.
    first = page.evaluate(f"{hook}.films()")[0]
    at = page.evaluate(f"{hook}.filmCell(0, 0, 0)")
    pixel = page.evaluate(
        """([x, y]) => { const c = document.querySelectorAll('.film canvas')[0], r = c.getBoundingClientRect(), s = c.width / r.width;
            return Array.from(c.getContext('2d').getImageData(Math.round((x - r.left) * s), Math.round((y - r.top) * s), 1, 1).data); }""",
        [at["x"], at["y"]],
    )
    assert "rgb(" + ",".join(str(v) for v in pixel[:3]) + ")" == first["colours"][0][0]
    # Another statistic: its films, at the same snapshot.
    page.locator(".extra select").first.select_option("drift first")
    visible = [f for f in page.evaluate(f"{hook}.films()") if f["visible"]]
    titles = {f["title"] for f in visible}
    # Drift is of the examples' maps: the examples' split only.
    assert "validation: drift first" in titles and not {"train: entropy", "validation: entropy"} & titles
    assert log.console_errors == [] and log.page_errors == [] and log.requests == []


def test_a_pinned_row_lights_up_its_attribution_example(sections_run, tmp_path, open_page):
    root = _copy(sections_run, tmp_path)
    page, log = _open(open_page, os.path.join(root, "report.html"))
    hook = "window.layerwatchReport"
    films = page.evaluate(f"{hook}.films()")
    examples = [f for f in films if f["row"] is not None]
    target = examples[1]
    # Pin it where it is drawn in the layouts: the validation split, its position among the monitored rows.
    page.select_option("#split", "1")
    page.wait_for_timeout(50)
    indices = _page_data(open(os.path.join(root, "report.html"), encoding="utf-8").read())["splits"][1]["indices"]
    layer = _page_data(open(os.path.join(root, "report.html"), encoding="utf-8").read())["splits"][1]["layers"][0]
    point = page.evaluate(f"{hook}.pointOf('validation', {layer}, {indices.index(target['row'])})")
    page.mouse.click(point["x"], point["y"])
    assert page.evaluate(f"{hook}.state().pinned") == indices.index(target["row"])
    lit = {f["title"]: f["pinned"] for f in page.evaluate(f"{hook}.films()")}
    assert lit[target["title"]] is True
    assert [t for t, on in lit.items() if on] == [target["title"]]
    # Escape unpins: nothing is lit.
    page.keyboard.press("Escape")
    assert not any(f["pinned"] for f in page.evaluate(f"{hook}.films()"))
    # Clicking an example's title pins its row in the layouts.
    page.locator(".film figcaption.pin", has_text=examples[0]["title"]).click()
    assert page.evaluate(f"{hook}.state().pinned") == indices.index(examples[0]["row"])
    assert [f["title"] for f in page.evaluate(f"{hook}.films()") if f["pinned"]] == [examples[0]["title"]]
    assert log.console_errors == [] and log.page_errors == []


def test_no_raw_backtick_in_the_page_text_code_spans_are_code(sections_run, tmp_path, open_page):
    root = _copy(sections_run, tmp_path)
    data = _page_data(open(os.path.join(root, "report.html"), encoding="utf-8").read())
    assert any("`" in sec["text"] for sec in data["sections"])  # the sections do use code spans
    page, _ = _open(open_page, os.path.join(root, "report.html"))
    assert "`" not in page.evaluate("document.body.innerText")
    codes = page.locator(".extra p code").all_text_contents()
    assert "attention.csv" in codes and "layerwatch attention RUN" in codes


def test_a_section_film_that_does_not_fit_its_labels_is_refused(tmp_path):
    from test_report import make_run

    from layerwatch.report import collect_report

    run = make_run(tmp_path / "run")
    film = heatmap_film("f", KEYS, [np.zeros((2, 3))] * 3, ["a", "b"], ["x", "y", "z"])
    ok = collect_report(run, sections=[{"title": "t", "films": [film]}])
    assert ok["sections"][0]["films"] == [film]
    with pytest.raises(ValueError, match=r"sections\[0\]\['films'\]\[0\]\['values'\] must code 18 cells"):
        collect_report(run, sections=[{"title": "t", "films": [{**film, "values": film["values"][:8]}]}])
    with pytest.raises(ValueError, match=r"sections\[0\]\['films'\]\[0\] must be what layerwatch.pages.sections.heatmap_film"):
        collect_report(run, sections=[{"title": "t", "films": [{"title": "f"}]}])


def test_the_report_of_a_run_with_every_section_imports_no_torch(sections_run, tmp_path):
    import subprocess
    import sys

    code = (f"import sys; from layerwatch.report import write_report; write_report({str(sections_run['dir'])!r}, out={str(tmp_path / 'r.html')!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
