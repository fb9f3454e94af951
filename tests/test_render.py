"""Drawing, checked on the plotted data (offsets, markers, texts, limits), never on pixels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle

from layerwatch.render import ERROR_MARKER, draw_frame, draw_heatmap, figure_png, limits_of, new_frame_figure

NAMES = ["not-hate", "hate", "other"]


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    layouts = rng.normal(size=(3, len(labels), 2)).astype(np.float32)
    errors = np.zeros(len(labels), dtype=bool)
    errors[[1, 3, 8]] = True
    return layouts, labels, errors


def _marker_path(marker):
    style = MarkerStyle(marker)
    return style.get_path().transformed(style.get_transform()).vertices


def _scatters(ax):
    return [c for c in ax.collections if len(c.get_offsets())]


def test_one_panel_per_layer_with_each_class_at_its_layout_points(frame):
    layouts, labels, _ = frame
    fig = Figure()
    out = draw_frame(fig, layouts, labels, [0, 2, 4], NAMES)
    assert out is fig
    assert len(fig.axes) == 3
    for j, ax in enumerate(fig.axes):
        cols = ax.collections
        assert [c.get_label() for c in cols] == NAMES
        for c, coll in enumerate(cols):
            np.testing.assert_array_equal(coll.get_offsets(), layouts[j][labels == c])


def test_legend_titles_and_suptitle(frame):
    layouts, labels, _ = frame
    fig = draw_frame(
        Figure(), layouts, labels, [0, 2, 4], NAMES, title="validation - epoch 3",
        notes=["kNN acc 0.50", "", "kNN acc 0.91"],
    )
    assert [t.get_text() for t in fig.legends[0].get_texts()] == NAMES
    assert [ax.get_title() for ax in fig.axes] == ["embeddings\nkNN acc 0.50", "layer 2", "layer 4\nkNN acc 0.91"]
    assert fig._suptitle.get_text() == "validation - epoch 3"


def test_class_ids_name_themselves_without_label_names(frame):
    layouts, labels, _ = frame
    fig = draw_frame(Figure(), layouts[:1], labels, [1])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1", "2"]
    assert [c.get_label() for c in fig.axes[0].collections] == ["0", "1", "2"]


def test_misclassified_rows_are_their_own_x_collection(frame):
    layouts, labels, errors = frame
    fig = draw_frame(Figure(), layouts, labels, [0, 2, 4], NAMES, errors=errors)
    assert ERROR_MARKER == "X"
    x_path = _marker_path("X")
    for j, ax in enumerate(fig.axes):
        cols = ax.collections
        assert [c.get_label() for c in cols] == NAMES + ["misclassified"]
        for c, coll in enumerate(cols[:3]):
            # Correct rows only: an error row is drawn once, with the error marker.
            np.testing.assert_array_equal(coll.get_offsets(), layouts[j][(labels == c) & ~errors])
            assert not np.allclose(coll.get_paths()[0].vertices[: len(x_path)], x_path)
        err = cols[3]
        np.testing.assert_array_equal(err.get_offsets(), layouts[j][errors])
        np.testing.assert_allclose(err.get_paths()[0].vertices, x_path)
        # Each error point keeps its true class's colour.
        class_colour = {c: cols[c].get_facecolor()[0][:3] for c in range(3)}
        for row, face in zip(np.flatnonzero(errors), err.get_facecolor()):
            np.testing.assert_allclose(face[:3], class_colour[labels[row]])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == NAMES + ["misclassified"]


def test_no_error_collection_when_nothing_is_misclassified(frame):
    layouts, labels, _ = frame
    fig = draw_frame(Figure(), layouts, labels, [0, 2, 4], NAMES, errors=np.zeros(len(labels), bool))
    assert [c.get_label() for c in fig.axes[0].collections] == NAMES


def test_fixed_limits_are_applied_per_panel(frame):
    layouts, labels, _ = frame
    limits = [((-3.0, 3.0), (-2.0, 2.5)), ((-1.0, 1.0), (-1.5, 1.5)), ((-5.0, 0.5), (0.0, 4.0))]
    fig = draw_frame(Figure(), layouts, labels, [0, 2, 4], NAMES, limits=limits)
    for ax, (xl, yl) in zip(fig.axes, limits):
        assert ax.get_xlim() == pytest.approx(xl)
        assert ax.get_ylim() == pytest.approx(yl)


def test_limits_of_holds_every_finite_point():
    pts = np.array([[0.0, 1.0], [2.0, -1.0], [np.nan, 5.0]])
    (x0, x1), (y0, y1) = limits_of(pts, margin=0.1)
    assert (x0, x1) == pytest.approx((-0.2, 2.2))
    assert (y0, y1) == pytest.approx((-1.2, 1.2))
    assert limits_of(np.full((3, 2), np.nan)) == ((-1.0, 1.0), (-1.0, 1.0))


def test_redrawing_clears_the_figure(frame):
    layouts, labels, _ = frame
    fig = Figure()
    draw_frame(fig, layouts, labels, [0, 2, 4], NAMES)
    draw_frame(fig, layouts[:2], labels, [0, 2], NAMES)
    assert len(fig.axes) == 2
    assert len(fig.legends) == 1


def test_non_finite_panel_is_marked(frame):
    layouts, labels, _ = frame
    layouts = layouts.copy()
    layouts[1] = np.nan
    fig = draw_frame(Figure(), layouts, labels, [0, 2, 4], NAMES)
    assert [t.get_text() for t in fig.axes[1].texts] == ["not finite"]
    assert len(fig.axes[0].texts) == len(fig.axes[2].texts) == 0


def test_regression_colours_by_target_with_a_colour_bar(frame):
    layouts, _, _ = frame
    target = np.linspace(0.0, 1.0, layouts.shape[1]).astype(np.float32)
    fig = draw_frame(Figure(), layouts, target, [0, 2, 4], regression=True)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 and len(fig.axes) == 4  # the colour bar is the fourth
    for j, ax in enumerate(panels):
        (coll,) = ax.collections
        np.testing.assert_array_equal(coll.get_offsets(), layouts[j])
        np.testing.assert_allclose(coll.get_array(), target)
    assert fig.legends == []


def test_frames_of_a_film_have_one_size_and_no_pyplot_figure_is_made(frame):
    import matplotlib.pyplot as plt

    layouts, labels, errors = frame
    fig = new_frame_figure(3, dpi=40)
    a = figure_png(draw_frame(fig, layouts, labels, [0, 2, 4], NAMES))
    b = figure_png(draw_frame(fig, layouts * 3, labels, [0, 2, 4], NAMES, errors=errors))
    assert a[:8] == b[:8] == b"\x89PNG\r\n\x1a\n"
    assert a[16:24] == b[16:24]  # IHDR width and height
    assert plt.get_fignums() == []


def test_heatmap_draws_each_split_table():
    tables = {
        "train": np.array([[0.5, 0.6, 0.7], [0.55, 0.8, 0.9]]),
        "validation": np.array([[0.5, np.nan, 0.65], [0.52, 0.7, 0.85]]),
    }
    fig = draw_heatmap(Figure(figsize=(8, 3)), tables, [0, 6], ["0", "1", "2"], "knn_accuracy")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["train", "validation"]
    assert fig._suptitle.get_text() == "knn accuracy"
    for ax, (split, table) in zip(panels, tables.items()):
        mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
        values = np.ma.masked_invalid(table)
        got = np.ma.asarray(mesh.get_array()).reshape(table.shape)
        np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(values))
        np.testing.assert_allclose(got.compressed(), values.compressed())
        # One colour scale for every split, so the panels can be compared.
        assert (mesh.norm.vmin, mesh.norm.vmax) == (0.5, 0.9)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
        assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in values.compressed()]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["embeddings", "layer 6"]
    assert {t.get_text() for t in panels[1].get_yticklabels()} <= {""}


def test_a_legend_of_many_classes_names_the_largest_and_counts_the_rest():
    from layerwatch.render import MAX_LEGEND

    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(50, 7), np.full(40, 3), np.arange(64)])  # 64 classes, two large
    layouts = rng.normal(size=(1, len(labels), 2))
    names = [f"class {i}" for i in range(64)]
    fig = draw_frame(Figure(), layouts, labels, [1], names)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == MAX_LEGEND
    assert "class 7" in texts and "class 3" in texts
    assert texts[-1] == f"+ {64 - (MAX_LEGEND - 1)} more classes"
    # Every class is still drawn, each in its own collection.
    assert len(fig.axes[0].collections) == 64


def test_label_and_split_names_with_dollar_signs_are_drawn_as_plain_text(frame):
    layouts, labels, errors = frame
    names = ["$5 off", "cost $x$ and $y", "100%"]
    fig = draw_frame(Figure(), layouts, labels, [0, 2, 4], names, title="val$ - epoch 1", errors=errors)
    png = figure_png(fig)  # mathtext would fail on an unmatched '$'
    assert png[:4] == b"\x89PNG"
    assert [t.get_text() for t in fig.legends[0].get_texts()][:3] == names
    assert all(not t.get_parse_math() for t in fig.legends[0].get_texts())
    assert fig._suptitle.get_text() == "val$ - epoch 1" and not fig._suptitle.get_parse_math()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("panels", [1, 2, 7, 13])
@pytest.mark.parametrize("n_classes, name", [(60, "class {}"), (12, "a rather long class name number {}"), (5, "c{}")])
def test_the_legend_never_covers_a_panel_and_stays_in_the_figure(panels, n_classes, name):
    rng = np.random.default_rng(0)
    labels = np.arange(3 * n_classes) % n_classes
    layouts = rng.normal(size=(panels, len(labels), 2))
    errors = np.zeros(len(labels), dtype=bool)
    errors[::7] = True
    names = [name.format(i) for i in range(n_classes)]
    fig = draw_frame(new_frame_figure(panels), layouts, labels, list(range(panels)), names, title="t", errors=errors)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    assert figure_png(fig)[:4] == b"\x89PNG"
    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    canvas.draw()  # lay the texts out as the saved frame does
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
    for ax in fig.axes:
        assert not _overlaps(box, ax.get_window_extent(renderer)), (ax.get_title(), box, ax.get_window_extent())
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[-1] == "misclassified"
    if n_classes > 20:
        assert texts[-2].startswith("+ ") and texts[-2].endswith(" more classes")
    else:
        assert texts[:-1] == names


def test_very_long_class_names_are_shortened_in_the_middle_and_stay_apart():
    names = [f"{'a very long label describing the class ' * 3}number {i}" for i in range(4)]
    labels = np.arange(12) % 4
    fig = draw_frame(new_frame_figure(2), np.random.default_rng(0).normal(size=(2, 12, 2)), labels, [0, 1], names)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(set(texts)) == 4 and all(len(t) <= 40 and "\u2026" in t for t in texts)
    assert [t.split("\u2026")[1] for t in texts] == [n[-(40 - 1 - 19):] for n in names]
    assert all(t.endswith(f"number {i}") for i, t in enumerate(texts))
