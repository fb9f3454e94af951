"""The attribution pictures, checked on the plotted data (mesh arrays, limits, texts, colours, lines), never on pixels."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure

from layerwatch.measures.attribution.render import (
    CONDUCTANCE_CMAP,
    conductance_vmax,
    draw_conductance,
    draw_norm_shares,
    sentence_layout,
)

TOKENS = ["[CLS]", "the", "price", "is", "$5", r"$\frac$", "!", "[SEP]"]
CLASSES = ("cls", "sep", "punct", "other")


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    conductance = rng.normal(size=(4, len(TOKENS)))  # embeddings + 3 layers
    attributions = np.array([0.0, 0.1, -2.0, 0.01, 1.9, -0.3, 0.0, 0.0])
    return conductance, attributions


def _mesh(fig):
    meshes = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]  # the heatmap's (not the colour bar's)
    assert len(meshes) == 1
    return meshes[0]


def _sentence(fig):
    texts = [t for ax in fig.axes for t in ax.texts if (t.get_gid() or "").startswith("token-")]
    return sorted(texts, key=lambda t: int(t.get_gid().split("-")[1]))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_heatmap_holds_the_conductance_with_a_symmetric_fixed_scale(frame):
    conductance, attributions = frame
    fig = Figure(figsize=(8, 5))
    out = draw_conductance(fig, conductance, TOKENS, attributions, title="row 3 - epoch 2", vmax=4.0)
    assert out is fig
    mesh = _mesh(fig)
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(conductance.shape), conductance)
    assert mesh.get_clim() == (-4.0, 4.0)
    assert mesh.get_cmap().name == CONDUCTANCE_CMAP
    ax = mesh.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_yticklabels()] == ["embeddings", "layer 1", "layer 2", "layer 3"]
    np.testing.assert_array_equal(ax.get_xticks(), np.arange(len(TOKENS)) + 0.5)
    assert fig._suptitle.get_text() == "row 3 - epoch 2"


def test_dollar_signs_are_text_not_mathtext(frame):
    conductance, attributions = frame
    fig = draw_conductance(Figure(figsize=(8, 5)), conductance, TOKENS, attributions, vmax=4.0)
    labels = fig.axes[0].get_xticklabels()
    assert all(not t.get_parse_math() for t in labels + _sentence(fig))
    assert _png(fig)[:4] == b"\x89PNG"  # r"$\frac$" as mathtext would raise while drawing


def test_sentence_colours_encode_the_attributions(frame):
    conductance, attributions = frame
    fig = draw_conductance(Figure(figsize=(8, 5)), conductance, TOKENS, attributions, vmax=4.0, attribution_vmax=2.0)
    texts = _sentence(fig)
    assert [t.get_text() for t in texts] == TOKENS
    cmap, norm = matplotlib.colormaps[CONDUCTANCE_CMAP], Normalize(-2.0, 2.0)
    for t, value in zip(texts, attributions):
        np.testing.assert_allclose(t.get_bbox_patch().get_facecolor(), cmap(norm(value)))
    # readable: white on the dark ends of the scale, black near zero
    assert to_rgba(texts[2].get_color()) == to_rgba("white") and to_rgba(texts[4].get_color()) == to_rgba("white")
    assert to_rgba(texts[3].get_color()) == to_rgba("black")
    # the sentence scale defaults to the heatmap's
    fig = draw_conductance(Figure(figsize=(8, 5)), conductance, TOKENS, attributions, vmax=4.0)
    np.testing.assert_allclose(_sentence(fig)[2].get_bbox_patch().get_facecolor(), cmap(Normalize(-4, 4)(-2.0)))


def test_every_frame_of_a_film_shares_the_scale_and_the_layout(frame):
    conductance, attributions = frame
    vmax = conductance_vmax(conductance, conductance * 3)
    assert vmax == pytest.approx(3 * np.abs(conductance).max())
    figs = [draw_conductance(Figure(figsize=(8, 5)), c, TOKENS, attributions, vmax=vmax) for c in (conductance, conductance * 3)]
    assert _mesh(figs[0]).get_clim() == _mesh(figs[1]).get_clim() == (-vmax, vmax)
    assert [t.get_position() for t in _sentence(figs[0])] == [t.get_position() for t in _sentence(figs[1])]
    assert [ax.get_position().bounds for ax in figs[0].axes] == [ax.get_position().bounds for ax in figs[1].axes]
    # without vmax, the frame's own largest |value|
    own = draw_conductance(Figure(figsize=(8, 5)), conductance, TOKENS, attributions)
    assert _mesh(own).get_clim() == (-np.abs(conductance).max(), np.abs(conductance).max())
    assert conductance_vmax(np.zeros(3), np.array([np.nan])) == 1.0


def test_long_sentences_wrap_and_stay_in_their_band():
    tokens = [f"tok{i}" for i in range(128)]
    fig = draw_conductance(Figure(figsize=(12, 6)), np.ones((7, 128)), tokens, np.linspace(-1, 1, 128), vmax=1.0)
    texts = _sentence(fig)
    ys = sorted({round(t.get_position()[1], 6) for t in texts}, reverse=True)
    assert len(ys) > 1  # more than one line
    band = texts[0].axes
    lo, hi = band.get_ylim()
    assert all(lo < t.get_position()[1] < hi for t in texts)
    assert all(0 <= t.get_position()[0] < band.get_xlim()[1] for t in texts)


def test_sentence_layout_known_answer():
    # 10 pt monospace: (3 chars + a space) x 6.2 pt = 24.8 pt per token; 60 pt hold two.
    layout = sentence_layout(["abc", "def", "ghi", "j"], 60.0, 10.0)
    assert [line for line, _ in layout] == [0, 0, 1, 1]
    assert [x for _, x in layout] == pytest.approx([0.0, 24.8, 0.0, 24.8])
    assert sentence_layout(["a" * 50], 10.0, 10.0) == [(0, 0.0)]  # a token longer than a line gets its own


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"conductance": np.ones(8)}, r"conductance has shape \(8,\); pass \(layers \+ 1, tokens\)"),
        ({"tokens": TOKENS[:3]}, "tokens has 3 texts; conductance has 8 token columns"),
        ({"token_attributions": np.ones(5)}, r"token_attributions has shape \(5,\); pass \(8,\)"),
        ({"vmax": 0.0}, "vmax=0.0 must be a positive number"),
        ({"vmax": float("nan")}, "vmax=nan must be a positive number"),
    ],
)
def test_draw_conductance_bad_input(frame, kwargs, match):
    conductance, attributions = frame
    args = {"conductance": conductance, "tokens": TOKENS, "token_attributions": attributions, "vmax": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_conductance(Figure(), **args)


# -- norm shares -----------------------------------------------------------------------------
def test_norm_shares_one_panel_per_class_with_both_curves():
    epochs = np.array([0, 1, 2, 3])
    weight = np.array([[0.5, 0.2, 0.1, 0.2], [0.6, 0.2, 0.1, 0.1], [0.4, 0.3, 0.1, 0.2], [0.3, 0.3, 0.2, 0.2]])
    norm = weight[:, ::-1].copy()
    fig = Figure(figsize=(10, 3))
    assert draw_norm_shares(fig, epochs, weight, norm, CLASSES, title="validation") is fig
    assert len(fig.axes) == 4
    for c, ax in enumerate(fig.axes):
        assert ax.get_title() == CLASSES[c]
        solid, dashed = ax.get_lines()
        np.testing.assert_array_equal(solid.get_xdata(), epochs)
        np.testing.assert_array_equal(solid.get_ydata(), weight[:, c])
        np.testing.assert_array_equal(dashed.get_ydata(), norm[:, c])
        assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
        assert ax.get_ylim() == (0.0, 1.0)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "attention weight share (\u03b1)", "norm share (\u2016\u03b1 f(x)\u2016)"]
    assert fig._suptitle.get_text() == "validation"
    assert _png(fig)[:4] == b"\x89PNG"


def test_norm_shares_per_layer_last_layer_on_top():
    rng = np.random.default_rng(1)
    weight, norm = rng.random((3, 2, 4)), rng.random((3, 2, 4))  # 3 snapshots, 2 layers
    fig = draw_norm_shares(Figure(figsize=(10, 5)), [0, 1, 2], weight, norm, CLASSES)
    assert len(fig.axes) == 8
    top, bottom = fig.axes[:4], fig.axes[4:]
    assert top[0].get_ylabel() == "layer 2" and bottom[0].get_ylabel() == "layer 1"
    np.testing.assert_array_equal(top[3].get_lines()[0].get_ydata(), weight[:, 1, 3])
    np.testing.assert_array_equal(bottom[2].get_lines()[1].get_ydata(), norm[:, 0, 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight_share": np.ones(4)}, r"weight_share has shape \(4,\)"),
        ({"norm_share": np.ones((3, 4))}, r"norm_share has shape \(3, 4\); it must match weight_share's \(2, 4\)"),
        ({"epochs": [0, 1, 2]}, r"epochs has shape \(3,\); pass one x value per snapshot, \(2,\)"),
        ({"classes": ("a", "b")}, "classes has 2 names; the shares have 4 classes"),
    ],
)
def test_draw_norm_shares_bad_input(kwargs, match):
    args = {"epochs": [0, 1], "weight_share": np.ones((2, 4)) / 4, "norm_share": np.ones((2, 4)) / 4, "classes": CLASSES}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_norm_shares(Figure(), **args)


def test_pyplot_is_never_touched(frame):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    conductance, attributions = frame
    draw_conductance(Figure(), conductance, TOKENS, attributions, vmax=1.0)
    draw_norm_shares(Figure(), [0, 1], np.ones((2, 4)) / 4, np.ones((2, 4)) / 4, CLASSES)
    assert plt.get_fignums() == before
