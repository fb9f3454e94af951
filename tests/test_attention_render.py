"""Attention pictures: the plotted data, colour limits and texts, never pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from layerwatch.measures.attention.render import (
    draw_head_heatmap,
    draw_head_summary,
    head_figure,
)


def main_axes(fig: Figure):
    """The heatmap's axes (the colour bar has axes, and a mesh, of its own)."""
    found = [ax for ax in fig.axes if ax.get_ylabel() == "layer"]
    assert len(found) == 1
    return found[0]


def mesh_of(fig: Figure) -> QuadMesh:
    meshes = [c for c in main_axes(fig).collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    return meshes[0]


def cell_texts(ax) -> dict:
    return {(round(t.get_position()[1] - 0.5), round(t.get_position()[0] - 0.5)): t.get_text() for t in ax.texts}


def test_heatmap_plots_the_values_with_a_fixed_colour_scale():
    values = np.arange(12, dtype=float).reshape(3, 4) / 10
    fig = head_figure(3, 4)
    assert draw_head_heatmap(fig, values, [1, 2, 3], "entropy", "train, epoch 2", vmin=0.0, vmax=2.5) is fig
    mesh = mesh_of(fig)
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(3, 4), values)
    assert mesh.get_clim() == (0.0, 2.5)
    ax = main_axes(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2", "3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
    assert ax.get_ylim() == (3.0, 0.0)  # layer 1 on top
    assert ax.get_title() == "train, epoch 2"
    assert cell_texts(ax)[(2, 1)] == "0.90"
    bar_axes = [a for a in fig.axes if a is not ax]
    assert bar_axes and bar_axes[0].get_ylabel() == "entropy"


def test_heatmap_frames_of_one_film_share_their_scale():
    fig = head_figure(2, 2)
    clims = []
    for values in (np.zeros((2, 2)), np.full((2, 2), 0.3)):
        draw_head_heatmap(fig, values, [1, 2], "first", "t", vmin=0.0, vmax=1.0)
        clims.append(mesh_of(fig).get_clim())  # one mesh: the figure was cleared
    assert clims == [(0.0, 1.0), (0.0, 1.0)]


def test_heatmap_names_layers_and_heads_as_given_and_skips_annotation_on_big_grids():
    fig = draw_head_heatmap(Figure(), np.ones((2, 13 * 12)), [5, 6], "sep", "t", 0, 1, head_numbers=range(156))
    ax = main_axes(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["5", "6"]
    assert ax.get_xticklabels()[0].get_text() == "0"
    assert len(ax.texts) == 0


def test_dollar_signs_are_drawn_literally():
    fig = draw_head_heatmap(Figure(), np.ones((1, 2)), [1], "mass $on$ [SEP]", "cost $5 to $6", 0, 1)
    fig.savefig(io.BytesIO(), format="png")  # mathtext would fail or change the text
    ax = main_axes(fig)
    assert ax.get_title() == "cost $5 to $6"
    assert not ax.title.get_parse_math()


def test_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match=r"values has shape \(4,\)"):
        draw_head_heatmap(Figure(), np.ones(4), [1], "entropy", "t", 0, 1)
    with pytest.raises(ValueError, match="layer_numbers has 1 entries for 2 layers"):
        draw_head_heatmap(Figure(), np.ones((2, 2)), [1], "entropy", "t", 0, 1)
    with pytest.raises(ValueError, match="vmin=1, vmax=1"):
        draw_head_heatmap(Figure(), np.ones((2, 2)), [1, 2], "entropy", "t", 1, 1)


def test_summary_shows_drift_and_both_labels():
    drift = np.array([[0.0, 0.2], [0.5, 0.1]])
    start = np.array([["positional", "broad"], ["to-special", "mixed"]])
    end = np.array([["positional", "to-special"], ["broad", "mixed"]])
    fig = draw_head_summary(Figure(figsize=(5, 4)), drift, start, end, [1, 2], "validation")
    mesh = mesh_of(fig)
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(2, 2), drift)
    assert mesh.get_clim() == (0.0, 0.5)
    ax = main_axes(fig)
    assert cell_texts(ax) == {(0, 0): "P", (0, 1): "B\u2192S", (1, 0): "S\u2192B", (1, 1): "M"}
    assert ax.get_title() == "validation"
    assert any("P positional" in t.get_text() for t in fig.texts)
    fig.savefig(io.BytesIO(), format="png")


def test_summary_of_a_run_without_drift_and_with_a_given_scale():
    zero = np.zeros((1, 2))
    labels = np.array([["mixed", "mixed"]])
    assert mesh_of(draw_head_summary(Figure(), zero, labels, labels, [1], "t")).get_clim()[1] > 0
    assert mesh_of(draw_head_summary(Figure(), zero, labels, labels, [1], "t", vmax=0.69)).get_clim() == (0.0, 0.69)


def test_summary_rejects_unknown_labels():
    drift = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"end_labels holds \['diagonal'\]"):
        draw_head_summary(Figure(), drift, np.array([["broad", "broad"]]), np.array([["broad", "diagonal"]]), [1], "t")
    with pytest.raises(ValueError, match=r"start_labels has shape \(2,\)"):
        draw_head_summary(Figure(), drift, np.array(["broad", "broad"]), np.array([["broad", "broad"]]), [1], "t")
