"""The run report: its data (quantised layouts, limits, metrics, texts) and the page in a real browser.

Runs are written through the store's own write API with hand-set layouts, so every
expected position, text, label and prediction is known before the page is opened.
"""

from __future__ import annotations

import base64
import zlib
import json
import os
import shutil

import numpy as np
import pytest

from layerwatch.capturing import Snapshot
from layerwatch.store import RunStore, SnapshotKey
from layerwatch.measures.embeddings.files import layout_path, load_layout, save_layout, save_snapshot, write_metrics

HOSTILE = "</script><img src=x onerror=alert(1)>"
LABEL_NAMES = ["not-hate", "hate"]
LAYERS = [0, 1, 2]
ROWS = 20
# Per-epoch snapshots: epoch 0 (before training), then epochs 1 and 2.
KEYS = [SnapshotKey(0, 0), SnapshotKey(1, 5), SnapshotKey(2, 10)]
Q_STEPS = 1022  # the documented 10-bit code range across a panel's limits


def layout_of(split_no: int, k: int) -> np.ndarray:
    """(layers, rows, 2): rows on a 5 x 4 grid one unit apart, shifted per snapshot and layer.

    The shift (0.5, 0.3) per snapshot puts every row of the next snapshot in the empty
    middle between grid points, so the path of a pinned row crosses empty canvas.
    """
    i = np.arange(ROWS)
    base = np.stack([i % 5, i // 5], axis=1).astype(np.float32)
    out = np.empty((len(LAYERS), ROWS, 2), np.float32)
    for j in range(len(LAYERS)):
        out[j] = base * (1.0 + 0.25 * j) + np.array([0.5, 0.3]) * k + 10.0 * split_no
    return out


def labels_of() -> np.ndarray:
    return (np.arange(ROWS) % 2).astype(np.int64)


def predictions_of(k: int) -> np.ndarray:
    """Snapshot k gets every row with i % 3 == k % 3 wrong, the others right."""
    labels = labels_of()
    wrong = np.arange(ROWS) % 3 == k % 3
    return np.where(wrong, 1 - labels, labels)


def text_of(split: str, i: int) -> str:
    if split == "train" and i == 3:
        return HOSTILE
    return f"{split} tweet {i} about zebra{i}x and more words to read"


def metric_value(split_no: int, layer: int, k: int) -> float:
    return round(0.5 + 0.1 * layer + 0.05 * k + 0.01 * split_no, 6)


def make_run(root, splits=("train", "validation"), keys=KEYS, texts=True, gifs=True, nan_row=None) -> str:
    store = RunStore(str(root))
    rng = np.random.default_rng(0)
    store.write_run({
        "label_names": LABEL_NAMES, "label_kind": "class", "reference_split": "train",
        "model_name": "tiny-test-model", "config": {"method": "tsne", "pooling": "mean"},
    })
    rows = []
    for s, split in enumerate(splits):
        indices = np.arange(ROWS, dtype=np.int64) * 7 + 100 * s  # dataset rows differ from positions
        for k, key in enumerate(keys):
            snap = Snapshot(
                pooled=rng.normal(size=(len(LAYERS), ROWS, 4)).astype(np.float32), labels=labels_of(),
                layers=np.array(LAYERS), indices=indices, predictions=predictions_of(k), split=split,
            )
            save_snapshot(store, snap, key)
            layout = layout_of(s, k)
            if nan_row is not None:
                layout[1, nan_row] = np.nan
            save_layout(store, split, key, layout, np.array(LAYERS), "tsne", True)
            for layer in LAYERS:
                rows.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": layer,
                             "metric": "knn_accuracy", "value": metric_value(s, layer, k)})
            rows.append({"split": split, "epoch": key.epoch, "step": key.step, "layer": LAYERS[-1],
                         "metric": "model_accuracy", "value": 0.25 * k})
        if texts:
            os.makedirs(os.path.join(str(root), "texts"), exist_ok=True)
            with open(os.path.join(str(root), "texts", f"{split}.json"), "w", encoding="utf-8") as fh:
                json.dump({"indices": indices.tolist(), "texts": [text_of(split, i) for i in range(ROWS)]}, fh)
        if gifs:
            with open(store.gif_path(split), "wb") as fh:
                fh.write(b"GIF89a")
    write_metrics(store, rows)
    return str(root)


def expected_limits(split_no: int, j: int, n_keys: int = len(KEYS)) -> tuple[float, float, float, float]:
    """The documented rule: min/max of every point of the film, widened by 8% of the range."""
    pts = np.concatenate([layout_of(split_no, k)[j] for k in range(n_keys)]).astype(np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = (hi - lo) * 0.08
    return lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]


def decode(b64: str, limits, rows: int) -> np.ndarray:
    """The documented decoding: (snapshots, rows, 2) from raw DEFLATE of zigzag differences in byte planes."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(b64), -15), dtype=np.uint8).astype(np.int64)
    blocks = raw.reshape(-1, 4 * rows)
    z = blocks[:, : 2 * rows] * 256 + blocks[:, 2 * rows :]
    d = np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    q = np.cumsum(d, axis=0).reshape(-1, rows, 2).astype(np.float64)
    x0, x1, y0, y1 = limits
    out = np.stack([x0 + q[..., 0] * (x1 - x0) / Q_STEPS, y0 + q[..., 1] * (y1 - y0) / Q_STEPS], axis=-1)
    out[(q == 1023).any(axis=-1)] = np.nan
    return out


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


# -- the data --------------------------------------------------------------------------
def test_quantised_layouts_decode_to_the_stored_ones_within_half_a_step(run):
    from layerwatch.report import collect_report

    data = collect_report(run)
    store = RunStore(run)
    assert [s["name"] for s in data["splits"]] == ["train", "validation"]
    for s in data["splits"]:
        assert len(s["films"]) == len(LAYERS) and s["layers"] == LAYERS
        for k, key in enumerate(store.keys(s["name"], "layouts")):
            stored = load_layout(store, s["name"], key)["layout"].astype(np.float64)
            for j in range(len(LAYERS)):
                x0, x1, y0, y1 = s["limits"][j]
                half = np.array([x1 - x0, y1 - y0]) / Q_STEPS / 2
                err = np.abs(decode(s["films"][j], s["limits"][j], s["rows"])[k] - stored[j])
                assert (err <= half * (1 + 1e-6)).all(), (s["name"], k, j, err.max(axis=0), half)
                # The stated bound: under 4.9e-4 of the panel's extent.
                assert (half / np.array([x1 - x0, y1 - y0]) < 4.9e-4).all()


def test_film_coding_round_trips_random_layouts_within_the_stated_bound():
    """Random films (jumps of any size between snapshots, NaN rows) decode to within half a code step."""
    from layerwatch.report import _encode_film, _limits, decode_film

    rng = np.random.default_rng(3)
    for rows, snaps in ((1, 1), (37, 4), (500, 10)):
        film = (rng.normal(size=(snaps, rows, 2)) * rng.uniform(0.01, 100)).astype(np.float32)
        film[:, rows // 2] += rng.normal(size=(snaps, 2)) * 1e3  # an outlier that widens the limits
        if rows > 1:
            film[snaps - 1, 0] = np.nan
        limits = _limits(film)
        got = decode_film(_encode_film(film, limits), limits, rows)
        assert got.shape == film.shape
        assert np.array_equal(np.isnan(got).any(axis=-1), np.isnan(film).any(axis=-1))
        extent = np.array([limits[1] - limits[0], limits[3] - limits[2]])
        err = np.nan_to_num(np.abs(got - film.astype(np.float64)) / extent)
        assert err.max() <= 0.5 / 1022 * (1 + 1e-6) and 0.5 / 1022 < 4.9e-4


def test_limits_hold_every_point_of_the_film_and_follow_the_documented_rule(run):
    from layerwatch.report import collect_report

    data = collect_report(run)
    for s_no, s in enumerate(data["splits"]):
        for j in range(len(LAYERS)):
            x0, x1, y0, y1 = s["limits"][j]
            for k in range(len(KEYS)):
                pts = layout_of(s_no, k)[j]
                assert (pts[:, 0] > x0).all() and (pts[:, 0] < x1).all()
                assert (pts[:, 1] > y0).all() and (pts[:, 1] < y1).all()
            assert np.allclose(s["limits"][j], expected_limits(s_no, j), rtol=0, atol=1e-5)


def test_a_row_that_could_not_be_laid_out_is_marked_missing(tmp_path):
    from layerwatch.report import collect_report

    data = collect_report(make_run(tmp_path / "run", nan_row=4))
    s = data["splits"][0]
    xy = decode(s["films"][1], s["limits"][1], s["rows"])[0]
    assert np.isnan(xy[4]).all() and np.isfinite(np.delete(xy, 4, axis=0)).all()
    # The other layers keep the row.
    assert np.isfinite(decode(s["films"][0], s["limits"][0], s["rows"])).all()


def test_rows_labels_predictions_texts_and_metrics_come_from_the_run(run):
    from layerwatch.report import collect_report

    data = collect_report(run)
    train = data["splits"][0]
    assert train["indices"] == [i * 7 for i in range(ROWS)]
    assert train["labels"] == labels_of().tolist()
    assert train["predictions"] == [predictions_of(k).tolist() for k in range(len(KEYS))]
    assert train["texts"] == [text_of("train", i) for i in range(ROWS)]
    assert [t["title"] for t in train["snapshots"]] == [k.title for k in KEYS]
    assert train["gif"] == "train.gif"
    assert data["label_names"] == LABEL_NAMES
    knn = [m for m in data["metrics"] if m["metric"] == "knn_accuracy" and m["split"] == "validation"][0]
    assert knn["layers"] == LAYERS
    assert knn["values"] == [[metric_value(1, l, k) for k in range(len(KEYS))] for l in LAYERS]
    acc = [m for m in data["metrics"] if m["metric"] == "model_accuracy" and m["split"] == "train"][0]
    assert acc["layers"] == [LAYERS[-1]] and acc["values"] == [[0.0, 0.25, 0.5]]


def test_texts_are_read_per_dataset_row_and_a_bad_texts_file_is_named(run):
    from layerwatch.report import collect_report, read_texts

    path = os.path.join(run, "texts", "train.json")
    with open(path, "w", encoding="utf-8") as fh:  # rows in another order, row 0 missing
        json.dump({"indices": [i * 7 for i in reversed(range(1, ROWS))], "texts": [f"t{i}" for i in reversed(range(1, ROWS))]}, fh)
    assert read_texts(run, "train")[14] == "t2"
    assert collect_report(run)["splits"][0]["texts"] == [None] + [f"t{i}" for i in range(1, ROWS)]
    assert read_texts(run, "test") is None
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"indices": [1, 2], "texts": ["a"]}, fh)
    with pytest.raises(ValueError, match=r"train\.json is damaged \(it must hold .* of equal length; delete it"):
        collect_report(run)


def test_snapshots_with_steps_keep_the_stores_order_and_titles(tmp_path):
    from layerwatch.report import collect_report

    keys = [SnapshotKey(0, 0, True), SnapshotKey(0, 30, True), SnapshotKey(1, 60, True), SnapshotKey(1, 90, True)]
    data = collect_report(make_run(tmp_path / "run", splits=("train",), keys=keys))
    got = data["splits"][0]["snapshots"]
    assert [g["name"] for g in got] == [k.name for k in keys]
    assert [g["title"] for g in got] == [k.title for k in keys]
    assert [g["step"] for g in got] == [0, 30, 60, 90]
    knn = [m for m in data["metrics"] if m["metric"] == "knn_accuracy"][0]
    assert knn["values"][0] == [metric_value(0, 0, k) for k in range(4)]


def test_layers_and_splits_pick_what_is_shown(run):
    from layerwatch.report import collect_report

    data = collect_report(run, splits=["validation"], layers=[2, 0])
    (s,) = data["splits"]
    assert s["name"] == "validation" and s["layers"] == [2, 0]
    stored = load_layout(RunStore(run), "validation", KEYS[1])["layout"]
    x0, x1, y0, y1 = s["limits"][0]
    half = np.array([x1 - x0, y1 - y0]) / Q_STEPS / 2
    assert (np.abs(decode(s["films"][0], s["limits"][0], s["rows"])[1] - stored[2]) <= half * (1 + 1e-6)).all()
    assert {m["split"] for m in data["metrics"]} == {"validation"}
    assert [m["layers"] for m in data["metrics"] if m["metric"] == "knn_accuracy"] == [[2, 0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"splits": ["test"]}, r"splits: .*no laid-out split 'test'; it has \['train', 'validation'\]"),
        ({"layers": [5]}, r"layers: layer 5 is not laid out .*its layers are \[0, 1, 2\]"),
        ({"layers": "x"}, r"layers='x'"),
        ({"sections": [{"title": "t", "images": [{"src": "https://example.com/a.png"}]}]}, r"sections\[0\]\['images'\]\[0\]\['src'\]"),
        ({"sections": [{"title": "t", "links": [{"href": "javascript:alert(1)"}]}]}, r"sections\[0\]\['links'\]\[0\]\['href'\]"),
        ({"sections": [{"name": "t"}]}, r"sections\[0\] must be a dict with a 'title'"),
    ],
)
def test_bad_input_is_refused_with_the_parameter_and_the_fix(run, kwargs, match):
    from layerwatch.report import collect_report

    with pytest.raises(ValueError, match=match):
        collect_report(run, **kwargs)


def test_a_folder_that_is_not_a_run_or_has_no_layouts_is_refused(tmp_path):
    from layerwatch.report import collect_report

    with pytest.raises(FileNotFoundError, match="not a layerwatch run directory"):
        collect_report(str(tmp_path))
    RunStore(str(tmp_path)).write_run({"label_names": None})
    with pytest.raises(ValueError, match="holds no layouts yet"):
        collect_report(str(tmp_path))


def test_the_same_run_directory_gives_a_byte_identical_file(run, tmp_path):
    from layerwatch.report import write_report

    path = write_report(run)
    assert path == os.path.join(os.path.abspath(run), "report.html")
    first = open(path, "rb").read()
    os.utime(os.path.join(run, "metrics.csv"), (1, 1))  # file times are not part of the page
    assert open(write_report(run), "rb").read() == first
    # A copy of the run elsewhere gives the same page too.
    copy = shutil.copytree(run, tmp_path / "copy")
    os.remove(os.path.join(copy, "report.html"))
    assert open(write_report(str(copy)), "rb").read() == first
    # ...and a changed run a different one.
    write_metrics(RunStore(run), [])
    assert open(write_report(run), "rb").read() != first


def test_no_text_leaves_every_text_out_of_the_page(run):
    from layerwatch.report import write_report

    with_text = open(write_report(run), encoding="utf-8").read()
    assert "zebra7x" in with_text  # the check below can fail
    without = open(write_report(run, texts=False), encoding="utf-8").read()
    for split in ("train", "validation"):
        for i in range(ROWS):
            assert f"zebra{i}x" not in without
    assert "onerror" not in without


def test_hostile_text_cannot_end_the_data_block(run):
    from layerwatch.report import write_report

    page = open(write_report(run), encoding="utf-8").read()
    assert HOSTILE not in page and "<img" not in page
    assert page.count("</script>") == 2  # the data block and the page script


def test_output_elsewhere_links_the_gifs_relative_to_the_page(run, tmp_path):
    from layerwatch.report import write_report

    out = tmp_path / "pages" / "r.html"
    write_report(run, out=str(out))
    data = _page_data(out)
    assert data["splits"][0]["gif"] == "../run/train.gif"
    assert (out.parent / data["splits"][0]["gif"]).resolve() == (tmp_path / "run" / "train.gif").resolve()


def _page_data(path) -> dict:
    text = open(path, encoding="utf-8").read()
    start = text.index('id="layerwatch-data">') + len('id="layerwatch-data">')
    return json.loads(text[start : text.index("</script>", start)])


def test_cli_writes_the_report_and_names_bad_splits(run, tmp_path, capsys):
    from layerwatch.cli import main

    assert main(["report", run]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(os.path.abspath(run), "report.html")
    out = tmp_path / "x.html"
    assert main(["report", run, "-o", str(out), "--splits", "train", "--layers", "0,2", "--no-text"]) == 0
    data = _page_data(out)
    assert [s["name"] for s in data["splits"]] == ["train"] and data["splits"][0]["layers"] == [0, 2]
    assert data["splits"][0]["texts"] is None
    assert main(["report", run, "--splits", "test"]) == 2
    assert "layerwatch report: error: splits: " in capsys.readouterr().err
    assert main(["report", run, "--layers", "9"]) == 2
    assert "layer 9 is not laid out" in capsys.readouterr().err


# -- the page in a real browser ------------------------------------------------------------
def _open(open_page, run, **kwargs):
    from layerwatch.report import write_report

    page, log = open_page(write_report(run, **kwargs))
    page.wait_for_selector("body[data-ready='1']", timeout=10000)
    return page, log


def _expected_pixel(page, split_no: int, split: str, j: int, k: int, row: int, n_keys: int = len(KEYS)) -> tuple[float, float]:
    """Where the stored layout puts a row, by the panel's box and the documented limits."""
    box = page.evaluate(f"window.layerwatchReport.panelBox({split!r}, {LAYERS[j]})")
    x0, x1, y0, y1 = expected_limits(split_no, j, n_keys)
    x, y = layout_of(split_no, k)[j, row]
    return box["left"] + (x - x0) / (x1 - x0) * box["width"], box["top"] + (y1 - y) / (y1 - y0) * box["height"]


def _pixel(page, layer: int, x: float, y: float) -> list[int]:
    """The RGBA that a panel shows at viewport point (x, y): its dots with its marks canvas over them."""
    return page.evaluate(
        """([layer, x, y]) => {
            const c = document.querySelector(`#panels canvas[data-layer="${layer}"]`);
            const seen = document.createElement('canvas');
            seen.width = c.width; seen.height = c.height;
            const g = seen.getContext('2d');
            for (const layerCanvas of c.parentElement.querySelectorAll('canvas')) g.drawImage(layerCanvas, 0, 0);
            const r = c.getBoundingClientRect(), s = c.width / r.width;
            return Array.from(g.getImageData(Math.round((x - r.left) * s), Math.round((y - r.top) * s), 1, 1).data);
        }""",
        [layer, x, y],
    )


def test_page_loads_offline_with_no_error_and_no_request(run, open_page):
    page, log = _open(open_page, run)
    page.wait_for_timeout(200)
    assert log.console_errors == [] and log.page_errors == [] and log.requests == [] and log.dialogs == []
    assert page.locator("#panels canvas[data-layer]").count() == len(LAYERS)
    assert page.text_content("#title") == "layerwatch report: tiny-test-model"
    assert page.locator("#gifs a").evaluate_all("els => els.map(a => a.getAttribute('href'))") == ["train.gif", "validation.gif"]
    assert page.evaluate("window.layerwatchReport.state().snapshotTitle") == "epoch 0"


def test_hovering_where_a_row_is_drawn_shows_its_text_label_and_prediction(run, open_page):
    page, log = _open(open_page, run)
    row = 8  # label 0; at snapshot 0, 8 % 3 != 0 so the prediction is right
    x, y = _expected_pixel(page, 0, "train", 1, 0, row)
    # The same row in another panel, and a point on its highlight ring there.
    other = page.evaluate(f"window.layerwatchReport.pointOf('train', 2, {row})")
    ring = lambda: [max(_pixel(page, 2, other["x"], other["y"] - d)[:3]) for d in range(7, 16)]  # noqa: E731
    before = ring()
    page.mouse.move(x, y)
    assert page.evaluate("window.layerwatchReport.state().hovered") == row
    assert page.text_content("#details .text") == text_of("train", row)
    assert page.text_content("#details h2") == f"row {row * 7}"
    assert page.text_content("#details dd.label") == LABEL_NAMES[labels_of()[row]]
    assert page.text_content("#details dd.prediction") == LABEL_NAMES[predictions_of(0)[row]]
    assert page.text_content("#details dd.right") == "right"
    # Highlighted in every other panel: a dark ring around the row.
    after = ring()
    assert min(before) > 200 and min(after) < 80, (before, after)
    # A row the model gets wrong says so.
    page.mouse.move(*_expected_pixel(page, 0, "train", 1, 0, 9))
    assert page.text_content("#details dd.wrong") == "wrong"
    assert page.text_content("#details dd.prediction") == LABEL_NAMES[predictions_of(0)[9]]
    assert log.console_errors == [] and log.page_errors == []


def _drawn_layout(page, split_no: int, split: str, n_keys: int = len(KEYS)) -> np.ndarray:
    """What the page drew, mapped back to data coordinates with the documented limits."""
    out = np.empty((len(LAYERS), ROWS, 2))
    for j, layer in enumerate(LAYERS):
        box = page.evaluate(f"window.layerwatchReport.panelBox({split!r}, {layer})")
        pts = page.evaluate(f"[...Array({ROWS}).keys()].map(r => window.layerwatchReport.pointOf({split!r}, {layer}, r))")
        x0, x1, y0, y1 = expected_limits(split_no, j, n_keys)
        for r, p in enumerate(pts):
            out[j, r] = x0 + (p["x"] - box["left"]) / box["width"] * (x1 - x0), y1 - (p["y"] - box["top"]) / box["height"] * (y1 - y0)
    return out


def _step(split_no: int) -> np.ndarray:
    return np.array([[(lim[1] - lim[0]) / Q_STEPS, (lim[3] - lim[2]) / Q_STEPS] for lim in map(lambda j: expected_limits(split_no, j), range(len(LAYERS)))])


def test_moving_the_slider_draws_the_next_snapshots_stored_layout(run, open_page):
    page, _ = _open(open_page, run)
    store = RunStore(run)
    tol = _step(0)[:, None, :] * 0.5 + 1e-4
    first = load_layout(store, "train", KEYS[0])["layout"]
    assert (np.abs(_drawn_layout(page, 0, "train") - first) <= tol).all()
    page.focus("#slider")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("window.layerwatchReport.state().snapshot") == 1
    assert page.text_content("#snapshot").startswith("epoch 1")
    drawn = _drawn_layout(page, 0, "train")
    second = load_layout(store, "train", KEYS[1])["layout"]
    assert (np.abs(drawn - second) <= tol).all()
    assert (np.abs(drawn - first) > 0.2).all(axis=2).any(axis=1).all()  # it did move
    # The other split draws its own stored layout at the same snapshot.
    page.select_option("#split", label="validation")
    tol_v = _step(1)[:, None, :] * 0.5 + 1e-4
    assert (np.abs(_drawn_layout(page, 1, "validation") - load_layout(store, "validation", KEYS[1])["layout"]) <= tol_v).all()


def test_play_walks_through_the_snapshots(run, open_page):
    page, _ = _open(open_page, run)
    page.click("#play")
    page.wait_for_function("() => window.layerwatchReport.state().snapshot === 2", timeout=5000)
    page.click("#play")
    assert page.evaluate("window.layerwatchReport.state().playing") is False


def test_hostile_text_is_shown_literally_and_no_dialog_fires(run, open_page):
    page, log = _open(open_page, run)
    page.mouse.move(*_expected_pixel(page, 0, "train", 0, 0, 3))
    assert page.text_content("#details .text") == HOSTILE
    assert page.locator("img").count() == 0
    page.wait_for_timeout(200)
    assert log.dialogs == [] and log.page_errors == [] and log.requests == []


def test_colour_modes_change_the_colours(run, open_page):
    page, _ = _open(open_page, run)
    colour = lambda r: page.evaluate(f"window.layerwatchReport.colourOf('train', 0, {r})")  # noqa: E731
    labels, preds = labels_of(), predictions_of(0)
    by_label = [colour(r) for r in range(ROWS)]
    assert len({by_label[r] for r in range(ROWS) if labels[r] == 0}) == 1 and by_label[0] != by_label[1]
    page.select_option("#colour", "prediction")
    by_pred = [colour(r) for r in range(ROWS)]
    for r in range(ROWS):
        assert by_pred[r] == by_label[int(np.flatnonzero(labels == preds[r])[0])]
    assert any(by_pred[r] != by_label[r] for r in range(ROWS))
    page.select_option("#colour", "correct")
    by_right = [colour(r) for r in range(ROWS)]
    right = {by_right[r] for r in range(ROWS) if preds[r] == labels[r]}
    wrong = {by_right[r] for r in range(ROWS) if preds[r] != labels[r]}
    assert len(right) == 1 and len(wrong) == 1 and right != wrong
    assert page.evaluate("window.layerwatchReport.state().colour") == "correct"


def test_search_finds_the_row(run, open_page):
    page, _ = _open(open_page, run)
    page.fill("#search", "ZEBRA7X")
    assert page.evaluate("window.layerwatchReport.state().matches") == [7]
    assert page.text_content("#matches") == "1 match"
    page.fill("#search", "tweet 1")  # rows 1 and 10..19
    assert page.evaluate("window.layerwatchReport.state().matches") == [1, *range(10, 20)]
    page.fill("#search", "nothing like this")
    assert page.text_content("#matches") == "no match"


def test_search_highlights_the_matching_rows_in_every_panel_and_only_them(run, open_page):
    page, _ = _open(open_page, run)
    page.fill("#search", "tweet 1")  # rows 1 and 10..19
    found = [1, *range(10, 20)]
    for layer in LAYERS:
        assert page.evaluate(f"window.layerwatchReport.highlightedOf('train', {layer})") == found
        # The last row highlighted is drawn on top: its dot's centre has its own colour.
        colour = page.evaluate(f"window.layerwatchReport.colourOf('train', {layer}, 19)")
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        assert page.evaluate(f"window.layerwatchReport.highlightPixelOf('train', {layer}, 19)") == [*rgb, 255]
    # A row that does not match lies under the veil (unless a match's dot covers it).
    box = page.evaluate("window.layerwatchReport.panelBox('train', 0)")
    lit = [np.array(_expected_pixel(page, 0, "train", 0, 0, r)) for r in found]
    for r in (0, *range(2, 10)):
        centre = np.array(_expected_pixel(page, 0, "train", 0, 0, r))
        if min(np.linalg.norm(centre - q) for q in lit) > 0.02 * box["width"] + 12:
            assert page.evaluate(f"window.layerwatchReport.highlightPixelOf('train', 0, {r})") == [255, 255, 255, 224]
            break
    else:
        pytest.fail("no unmatched row lies clear of the matches")
    # Clearing the search removes them.
    page.fill("#search", "")
    assert page.evaluate("window.layerwatchReport.highlightedOf('train', 0)") == []
    assert page.evaluate("window.layerwatchReport.highlightPixelOf('train', 0, 19)") == [0, 0, 0, 0]


def test_search_without_texts_looks_for_row_indices(run, open_page):
    page, _ = _open(open_page, run, texts=False)
    page.fill("#search", "35")
    assert page.evaluate("window.layerwatchReport.state().matches") == [5]
    page.mouse.move(*_expected_pixel(page, 0, "train", 0, 0, 5))
    assert page.text_content("#details .text") == "(texts not in this report)"


def test_clicking_pins_a_row_and_draws_its_path(run, open_page):
    page, _ = _open(open_page, run)
    row = 6
    # Where the row is at the last snapshot: empty canvas until the row is pinned.
    later = _expected_pixel(page, 0, "train", 1, 2, row)
    assert min(_pixel(page, 1, *later)[:3]) > 240
    page.mouse.click(*_expected_pixel(page, 0, "train", 1, 0, row))
    assert page.evaluate("window.layerwatchReport.state().pinned") == row
    assert "(pinned)" in page.text_content("#details h2")
    assert min(_pixel(page, 1, *later)[:3]) < 150
    page.mouse.move(5, 5)  # leaving the panel keeps the pinned row in view
    assert page.text_content("#details .text") == text_of("train", row)
    page.keyboard.press("Escape")
    assert page.evaluate("window.layerwatchReport.state().pinned") is None
    assert min(_pixel(page, 1, *later)[:3]) > 240


def test_one_layer_large(run, open_page):
    page, _ = _open(open_page, run)
    small = page.evaluate("window.layerwatchReport.panelBox('train', 1)")["width"]
    page.select_option("#layer", label="layer 1")
    assert page.locator("#panels canvas[data-layer]").count() == 1
    assert page.evaluate("window.layerwatchReport.pointOf('train', 0, 0)") is None
    assert page.evaluate("window.layerwatchReport.panelBox('train', 1)")["width"] > 1.5 * small
    page.mouse.move(*_expected_pixel(page, 0, "train", 1, 0, 12))
    assert page.text_content("#details .text") == text_of("train", 12)


def test_heatmaps_read_the_cell_under_the_pointer(run, open_page):
    page, _ = _open(open_page, run)
    assert page.locator(".heatmap canvas").evaluate_all("els => els.map(c => c.dataset.metric)") == ["knn_accuracy", "model_accuracy"]
    cell = page.evaluate("window.layerwatchReport.cellOf('knn_accuracy', 1, 2)")
    page.mouse.move(cell["x"], cell["y"])
    assert page.text_content("#heatmaps .readout") == f"knn_accuracy  ·  layer 1  ·  epoch 2:  {metric_value(0, 1, 2):.4f}"
    page.mouse.click(cell["x"], cell["y"])
    assert page.evaluate("window.layerwatchReport.state().snapshot") == 2


def test_extra_sections_are_drawn_generically(run, open_page):
    png = "data:image/png;base64," + base64.b64encode(_tiny_png()).decode()
    section = {"title": "attention <b>entropy</b>", "text": HOSTILE, "images": [{"caption": "heads x layers", "src": png}],
               "links": [{"text": "the GIF", "href": "train.gif"}]}
    page, log = _open(open_page, run, sections=[section])
    box = page.locator("#sections .extra")
    assert box.locator("h2").text_content() == "attention <b>entropy</b>"
    assert box.locator("p").text_content() == HOSTILE
    assert box.locator("figcaption").text_content() == "heads x layers"
    assert box.locator("img").evaluate("i => i.complete && i.naturalWidth") == 2
    assert box.locator("a").get_attribute("href") == "train.gif"
    assert log.requests == [] and log.console_errors == [] and log.dialogs == []


def _tiny_png() -> bytes:
    import io

    from matplotlib.figure import Figure

    buf = io.BytesIO()
    Figure(figsize=(2, 2), dpi=1).savefig(buf, format="png")
    return buf.getvalue()


def test_screenshot_is_not_blank(run, open_page, tmp_path):
    page, _ = _open(open_page, run)
    page.mouse.move(*_expected_pixel(page, 0, "train", 0, 0, 8))
    path = tmp_path / "report.png"
    page.screenshot(path=str(path), full_page=True)
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 100, len(colours)
    # The dots' own colours are on the screen.
    for hexc in ("1f77b4", "ff7f0e"):
        rgb = np.array([int(hexc[i : i + 2], 16) for i in (0, 2, 4)])
        assert (np.abs(img.astype(int) - rgb).sum(axis=2) < 60).sum() > 50, hexc


def test_a_local_model_folder_shows_only_its_last_names(tmp_path):
    from layerwatch.report import collect_report

    root = make_run(tmp_path / "run")
    info = RunStore(root).read_run()
    RunStore(root).write_run({**info, "model_name": os.path.join(os.sep, "home", "alice", "models", "minilm", "model")})
    assert collect_report(root)["title"] == "layerwatch report: minilm/model"


def test_a_regression_run_colours_by_target_and_offers_no_prediction_colours(tmp_path, open_page):
    store = RunStore(str(tmp_path / "run"))
    store.write_run({"label_names": None, "label_kind": "regression", "config": {"method": "pca"}})
    targets = np.linspace(-1.0, 3.0, ROWS).astype(np.float32)
    for k, key in enumerate(KEYS[:2]):
        save_snapshot(store, Snapshot(pooled=np.zeros((3, ROWS, 2), np.float32), labels=targets, layers=np.array(LAYERS),
                                     indices=np.arange(ROWS), split="train"), key)
        save_layout(store, "train", key, layout_of(0, k), np.array(LAYERS), "pca", True)
    page, log = _open(open_page, store.root)
    assert page.locator("#colour option:not([disabled])").evaluate_all("os => os.map(o => o.value)") == ["label"]
    colours = {page.evaluate(f"window.layerwatchReport.colourOf('train', 0, {r})") for r in range(ROWS)}
    assert len(colours) == ROWS  # a colour scale, not classes
    page.mouse.move(*_expected_pixel(page, 0, "train", 0, 0, 5))
    assert page.text_content("#details dd.label") == f"{targets[5]:.4g}"
    assert page.locator("#details dd.prediction").count() == 0
    assert log.console_errors == [] and log.page_errors == []


def test_a_tap_on_a_phone_shows_and_pins_the_row(run, browser):
    from layerwatch.report import write_report

    path = write_report(run)
    context = browser.new_context(offline=True, has_touch=True, is_mobile=True, viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto("file://" + os.path.abspath(path))
        page.wait_for_selector("body[data-ready='1']")
        page.evaluate("document.querySelector('#panels canvas[data-layer=\"1\"]').scrollIntoView()")
        x, y = _expected_pixel(page, 0, "train", 1, 0, 13)
        page.touchscreen.tap(x, y)
        assert page.evaluate("window.layerwatchReport.state().pinned") == 13
        assert page.text_content("#details .text") == text_of("train", 13)
        assert errors == []
    finally:
        context.close()


def test_a_run_with_one_snapshot_and_no_texts_file_opens(tmp_path, open_page):
    root = make_run(tmp_path / "run", splits=("train",), keys=KEYS[:1], texts=False, gifs=False)
    page, log = _open(open_page, root)
    assert page.evaluate("window.layerwatchReport.state().snapshotTitle") == "epoch 0"
    assert page.locator("#gifs a").count() == 0
    page.mouse.move(*_expected_pixel(page, 0, "train", 2, 0, 0, n_keys=1))
    assert page.text_content("#details .text") == "(texts not in this report)"
    assert page.text_content("#details h2") == "row 0"
    page.focus("#slider")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("window.layerwatchReport.state().snapshot") == 0
    assert log.console_errors == [] and log.page_errors == [] and log.requests == []


def test_the_page_decodes_every_film_to_the_stored_layouts_within_half_a_step(tmp_path, open_page):
    """What the page's script decodes (every split, layer and snapshot) against the stored floats."""
    run = make_run(tmp_path / "run", nan_row=4)
    from layerwatch.report import collect_report

    limits = {s["name"]: s["limits"] for s in collect_report(run)["splits"]}
    page, log = _open(open_page, run)
    store = RunStore(run)
    for split in ("train", "validation"):
        for k, key in enumerate(store.keys(split, "layouts")):
            stored = load_layout(store, split, key)["layout"].astype(np.float64)
            for j, layer in enumerate(LAYERS):
                got = page.evaluate(f"window.layerwatchReport.positionsOf({split!r}, {layer}, {k})")
                x0, x1, y0, y1 = limits[split][j]
                half = np.array([x1 - x0, y1 - y0]) / Q_STEPS / 2
                for r in range(ROWS):
                    if not np.isfinite(stored[j, r]).all():
                        assert got[r] is None, (split, k, layer, r)
                        continue
                    assert (np.abs(np.array(got[r]) - stored[j, r]) <= half + 1e-5).all(), (split, k, layer, r)  # + float32
    assert log.console_errors == [] and log.page_errors == []


def test_splits_with_different_snapshots_switch_cleanly(run, open_page):
    os.remove(layout_path(RunStore(run), "validation", KEYS[2]))  # validation not laid out at epoch 2 yet
    page, log = _open(open_page, run)
    page.focus("#slider")
    page.keyboard.press("End")
    assert page.evaluate("window.layerwatchReport.state().snapshot") == 2
    page.select_option("#split", label="validation")
    page.wait_for_function("() => window.layerwatchReport.state().decoded", timeout=5000)
    state = page.evaluate("window.layerwatchReport.state()")
    assert (state["split"], state["snapshot"], state["snapshotTitle"]) == ("validation", 1, "epoch 1")
    # Drawn with limits over the validation film's own two snapshots, within half a code step.
    drawn = _drawn_layout(page, 1, "validation", n_keys=2)
    steps = np.array([[(l[1] - l[0]) / Q_STEPS, (l[3] - l[2]) / Q_STEPS] for l in (expected_limits(1, j, 2) for j in range(len(LAYERS)))])
    assert (np.abs(drawn - layout_of(1, 1)) <= steps[:, None, :] * 0.5 + 1e-4).all()
    assert log.console_errors == [] and log.page_errors == []


def test_hover_finds_the_nearest_drawn_row_among_many_as_a_full_scan_would(tmp_path, open_page):
    """The page's grid lookup against a brute-force nearest over what it drew (ties: the later row)."""
    n = 600
    rng = np.random.default_rng(5)
    store = RunStore(str(tmp_path / "big"))
    store.write_run({"label_names": LABEL_NAMES, "label_kind": "class", "model_name": "tiny", "config": {}})
    for k, key in enumerate(KEYS[:2]):
        save_snapshot(store, Snapshot(pooled=np.zeros((1, n, 1), np.float32), labels=rng.integers(0, 2, n),
                                     layers=np.array([0]), indices=np.arange(n), predictions=None, split="train"), key)
        layout = rng.normal(size=(1, n, 2)).astype(np.float32)
        layout[0, :50] *= 0.05  # a dense clump, where cells are crowded
        save_layout(store, "train", key, layout, np.array([0]), "tsne", True)
    page, log = _open(open_page, store.root)
    got = page.evaluate(
        """([n]) => {
            const hook = window.layerwatchReport, box = hook.panelBox('train', 0);
            const canvas = document.querySelector('#panels canvas[data-layer="0"]');
            const pts = [...Array(n).keys()].map((r) => hook.pointOf('train', 0, r));
            let seed = 7;
            const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
            const out = [];
            for (let t = 0; t < 300; t++) {
                // Half at random, half a few pixels from a row (around cell edges and the clump).
                const p = t % 2 ? {x: box.left + rand() * box.width, y: box.top + rand() * box.height}
                                : {x: pts[t % n].x + (rand() - 0.5) * 12, y: pts[t % n].y + (rand() - 0.5) * 12};
                canvas.dispatchEvent(new PointerEvent('pointermove', {clientX: p.x, clientY: p.y, bubbles: true}));
                out.push([p.x, p.y, hook.state().hovered]);
            }
            return {pts, out};
        }""",
        [n],
    )
    pts = np.array([[p["x"], p["y"]] for p in got["pts"]])
    reach = page.evaluate("Math.max(8, Math.min(4.5, Math.max(1.8, (window.layerwatchReport.panelBox('train', 0).width + 12) * 0.3 / Math.sqrt(600))) + 4)")
    found = 0
    for x, y, hovered in got["out"]:
        d = (pts[:, 0] - x) ** 2 + (pts[:, 1] - y) ** 2
        close = np.flatnonzero(d <= d.min() + 1e-6) if d.min() <= reach**2 else []
        if len(close) == 0:
            assert hovered is None, (x, y, hovered)
        else:
            found += 1
            assert hovered in close.tolist(), (x, y, hovered, close)
    assert found >= 100  # the check saw many rows found, not only misses
    assert log.console_errors == [] and log.page_errors == []


def test_a_browser_that_cannot_inflate_says_so_in_place_of_the_panels(run, open_page):
    from layerwatch.report import write_report

    page, log = open_page(write_report(run))
    page.add_init_script("delete window.DecompressionStream;")
    page.reload()
    page.wait_for_selector("#panels p.error", timeout=5000)
    assert "cannot decode the layouts" in page.text_content("#panels p.error")
    assert page.get_attribute("body", "data-ready") is None
