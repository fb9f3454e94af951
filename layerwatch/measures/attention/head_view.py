"""The head view (and neuron view) of chosen examples as one offline HTML page.

:func:`head_view_html` writes a self-contained page (through :mod:`layerwatch.pages`:
no network, text only as text) that shows, for each chosen example, its tokens in two
columns with lines from every query (left) to the keys (right) weighted by attention;
pickers for example, layer and head (or all heads, one colour each) and a slider over
the snapshots. Where an example carries query and key vectors (see
:mod:`layerwatch.measures.attention.neuron`), the page also shows the neuron view: for the
selected query token and head, the query vector, each key vector, their elementwise
product, the scores ``q . k / sqrt(d)`` and their softmax.

Data on the page:

* Attention maps are quantised to one byte per weight, ``round(255 w)`` with ``w``
  clipped to [0, 1] (absolute error at most 1/510), stored as base64 of the
  (snapshots, layers, heads, T, T) uint8 array in C order: ``4/3 * S * L * H * T * T``
  bytes of page per example.
* A layer whose maps hold a non-finite weight (NaN or infinity) at a snapshot is listed
  in the example's ``damaged`` as ``[snapshot, layer]`` (0-based), stored as zeros, and
  shown with a note and no lines.
* Query and key vectors are stored exactly as float32 (little-endian base64), so the page
  recomputes the model's softmax; they cost ``2 * 4 * 4/3 * N * L * H * T * d`` bytes
  for N snapshots, which is why at most ``max_neuron_examples`` examples carry them.

In the page's SVG every line carries ``data-query``, ``data-key``, ``data-head`` (0-based
indices) and ``data-weight`` (the dequantised weight); layers and heads are numbered
from 1 on screen.

:func:`to_bertviz` and :func:`show_bertviz` hand one stored map to bertviz for users who
have it (``pip install "layerwatch[bertviz]"``).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from layerwatch.pages import asset, render_page

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "MAX_NEURON_EXAMPLES",
    "QUANT_LEVELS",
    "damaged_layers",
    "dequantise_maps",
    "head_view_data",
    "head_view_html",
    "quantise_maps",
    "show_bertviz",
    "to_bertviz",
]

QUANT_LEVELS = 255
MAX_NEURON_EXAMPLES = 2
# Attention is a probability; float16 storage may round a weight a hair above 1.
_WEIGHT_SLACK = 1e-2

_BODY = """<header>
  <h1 id="title"></h1>
  <p class="note">Lines run from each query token (left) to the key tokens it attends to (right), as opaque as
  the attention weight. Hover over a left token to see only its lines; click it to keep them.
  Weights are stored to 1/255.</p>
</header>
<div class="controls">
  <label>Example <select id="example"></select></label>
  <label>Layer <select id="layer"></select></label>
  <label>Head <select id="head"></select></label>
  <label class="slider">Snapshot <input type="range" id="snapshot" min="0" max="0" step="1" value="0">
    <span id="snapshot-title"></span></label>
</div>
<p id="example-label"></p>
<p id="damaged" class="warning"></p>
<div id="legend"></div>
<svg id="attention" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="attention lines"></svg>
<section id="neuron-view">
  <h2>Neuron view</h2>
  <p id="neuron-note"></p>
  <svg id="neuron" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="query and key vectors"></svg>
</section>"""


def quantise_maps(maps: np.ndarray) -> np.ndarray:
    """Attention weights in [0, 1] as uint8 levels ``round(255 w)`` (error at most 1/510)."""
    maps = np.asarray(maps, dtype=np.float32)
    return np.rint(np.clip(maps, 0.0, 1.0) * QUANT_LEVELS).astype(np.uint8)


def dequantise_maps(levels: np.ndarray) -> np.ndarray:
    """The weights that the page shows for quantised ``levels``."""
    return np.asarray(levels, dtype=np.float32) / QUANT_LEVELS


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _neuron_entry(index: int, neuron: Mapping[str, Any], shape: tuple, snapshots: int) -> dict:
    layers, heads, width = shape
    q = np.asarray(neuron.get("q"), dtype="<f4")
    k = np.asarray(neuron.get("k"), dtype="<f4")
    if q.ndim != 5 or q.shape[1:4] != (layers, heads, width) or k.shape != q.shape:
        raise ValueError(
            f"examples[{index}]['neuron'] has q {q.shape} and k {k.shape}; expected both (N, {layers}, {heads}, "
            f"{width}, d_head): stack the q and k of query_key_capture for N snapshots"
        )
    which = list(neuron.get("snapshots", range(q.shape[0])))
    if len(which) != q.shape[0] or any(not 0 <= int(s) < snapshots for s in which) or len(set(which)) != len(which):
        raise ValueError(
            f"examples[{index}]['neuron']['snapshots']={which} must name {q.shape[0]} distinct snapshot indices "
            f"in 0..{snapshots - 1}, one per stacked q and k"
        )
    # Like the maps: a layer with a non-finite vector at a snapshot is marked damaged there.
    bad = ~(np.isfinite(q).all(axis=(2, 3, 4)) & np.isfinite(k).all(axis=(2, 3, 4)))  # (N, layers)
    q = np.where(bad[:, :, None, None, None], 0, q).astype("<f4")
    k = np.where(bad[:, :, None, None, None], 0, k).astype("<f4")
    damaged = [[int(which[n]), int(l)] for n, l in np.argwhere(bad)]
    return {"d": int(q.shape[-1]), "snapshots": [int(s) for s in which], "q": _b64(q), "k": _b64(k), "damaged": damaged}


def head_view_data(
    examples: Sequence[Mapping[str, Any]],
    snapshot_titles: Sequence[str],
    title: str = "layerwatch: attention heads",
    max_neuron_examples: int = MAX_NEURON_EXAMPLES,
) -> dict:
    """The JSON-ready data of the head view page (see :func:`head_view_html`)."""
    titles = [str(t) for t in snapshot_titles]
    if not titles:
        raise ValueError("snapshot_titles is empty; pass one title per snapshot (e.g. 'epoch 0')")
    if not examples:
        raise ValueError("examples is empty; pass at least one example with tokens, label and maps")
    shape = None
    out = []
    with_neuron = 0
    for index, example in enumerate(examples):
        missing = [key for key in ("tokens", "label", "maps") if key not in example and not (key == "maps" and "levels" in example)]
        if missing:
            raise ValueError(f"examples[{index}] lacks {missing}; each example needs 'tokens', 'label' and 'maps'")
        tokens = [str(t) for t in example["tokens"]]
        maps = np.asarray(example["levels"]) if "levels" in example else np.asarray(example["maps"], dtype=np.float32)
        width = len(tokens)
        expected = f"(snapshots, layers, heads, T, T) = ({len(titles)}, L, H, {width}, {width})"
        if maps.ndim != 5 or maps.shape[0] != len(titles) or maps.shape[3:] != (width, width) or width == 0:
            raise ValueError(
                f"examples[{index}]['maps'] has shape {maps.shape}; expected {expected}: one map per snapshot "
                "over the example's real tokens"
            )
        if shape is not None and maps.shape[1:3] != shape:
            raise ValueError(
                f"examples[{index}]['maps'] has {maps.shape[1]} layers x {maps.shape[2]} heads; the first example "
                f"has {shape[0]} x {shape[1]}: pass examples of one model"
            )
        shape = maps.shape[1:3]
        if "levels" in example:
            # Already quantised (quantise_maps, damaged layers zeroed and named in "damaged"): a caller
            # that keeps every snapshot's levels passes them, so nothing is quantised again.
            if maps.dtype != np.uint8:
                raise ValueError(f"examples[{index}]['levels'] must be the uint8 levels of quantise_maps, not {maps.dtype}")
            entry = {"tokens": tokens, "label": str(example["label"]), "maps": _b64(maps), "neuron": None,
                     "damaged": [[int(s), int(l)] for s, l in example.get("damaged", ())]}
        else:
            maps = maps.astype(np.float32)
            # A layer whose weights are not all finite (NaN or infinity: the forward pass overflowed)
            # is marked damaged at that snapshot and drawn without lines; the rest of the page stands.
            damaged = ~np.isfinite(maps).all(axis=(2, 3, 4))  # (snapshots, layers)
            finite = np.where(damaged[:, :, None, None, None], 0.0, maps)
            if finite.min() < -_WEIGHT_SLACK or finite.max() > 1 + _WEIGHT_SLACK:
                raise ValueError(
                    f"examples[{index}]['maps'] holds values outside [0, 1] (from {float(finite.min()):.3g} to "
                    f"{float(finite.max()):.3g}); pass attention probabilities"
                )
            entry = {
                "tokens": tokens, "label": str(example["label"]), "maps": _b64(quantise_maps(finite)), "neuron": None,
                "damaged": [[int(s), int(l)] for s, l in np.argwhere(damaged)],
            }
        if example.get("neuron") is not None:
            with_neuron += 1
            if with_neuron > max_neuron_examples:
                raise ValueError(
                    f"{with_neuron} or more examples carry neuron data; at most max_neuron_examples="
                    f"{max_neuron_examples} may (each costs megabytes of page): drop 'neuron' from the others"
                )
            entry["neuron"] = _neuron_entry(index, example["neuron"], (*shape, width), len(titles))
            entry["damaged"] = sorted({*map(tuple, entry["damaged"]), *map(tuple, entry["neuron"].pop("damaged"))})
            entry["damaged"] = [list(pair) for pair in entry["damaged"]]
        out.append(entry)
    return {
        "title": str(title),
        "snapshots": titles,
        "layers": int(shape[0]),
        "heads": int(shape[1]),
        "levels": QUANT_LEVELS,
        "examples": out,
    }


def damaged_layers(data: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """``(example, snapshot, layer)`` (0-based) of every layer :func:`head_view_data` marked damaged."""
    return [(e, int(s), int(l)) for e, ex in enumerate(data["examples"]) for s, l in ex.get("damaged", ())]


def head_view_html(
    examples: Sequence[Mapping[str, Any]],
    snapshot_titles: Sequence[str],
    title: str = "layerwatch: attention heads",
    max_neuron_examples: int = MAX_NEURON_EXAMPLES,
) -> str:
    """One self-contained offline page with the head view of ``examples`` over snapshots.

    The same input gives the same bytes.

    Args:
        examples: Each a mapping with ``tokens`` (list of str, the example's real tokens),
            ``label`` (str), ``maps`` (snapshots, layers, heads, T, T) attention
            probabilities with T = len(tokens) (query on axis 3; a layer holding NaN or
            infinity at a snapshot is marked damaged there), and optionally
            ``neuron``: ``{"q": (N, layers, heads, T, d), "k": same, "snapshots": N
            snapshot indices}`` (from :func:`~layerwatch.measures.attention.neuron.query_key_capture`
            at N snapshots; ``snapshots`` defaults to 0..N-1).
            Instead of ``maps``, ``levels``: the same maps already quantised (uint8, as
            :func:`quantise_maps` gives them, damaged layers zeroed) with ``damaged``, the
            ``[snapshot, layer]`` pairs of the damaged layers.
        snapshot_titles: One title per snapshot, shown beside the slider.
        title: The page title.
        max_neuron_examples: At most this many examples may carry neuron data.

    Returns:
        The HTML document.
    """
    data = head_view_data(examples, snapshot_titles, title, max_neuron_examples)
    return render_page(data["title"], _BODY, [asset("head_view.js")], [asset("head_view.css")], data=data)


def to_bertviz(maps: np.ndarray, tokens: Sequence[str]) -> tuple["torch.Tensor", ...]:
    """One example's maps at one snapshot in bertviz's ``attention`` format.

    Args:
        maps: (layers, heads, T, T) attention of one example and snapshot.
        tokens: The T tokens.

    Returns:
        A tuple with one (1, heads, T, T) float32 tensor per layer.
    """
    import torch

    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4 or maps.shape[2:] != (len(tokens), len(tokens)):
        raise ValueError(
            f"maps has shape {maps.shape}; expected (layers, heads, {len(tokens)}, {len(tokens)}) for "
            f"{len(tokens)} tokens: pass one example's maps at one snapshot"
        )
    return tuple(torch.from_numpy(layer.copy())[None] for layer in maps)


def show_bertviz(maps: np.ndarray, tokens: Sequence[str], view: str = "head", **kwargs: Any) -> Any:
    """Show one stored map with bertviz's ``head_view`` or ``model_view`` (in Jupyter).

    Args:
        maps: (layers, heads, T, T) attention of one example and snapshot.
        tokens: The T tokens.
        view: ``"head"`` or ``"model"``.
        **kwargs: Passed to bertviz (for example ``html_action="return"``).

    Returns:
        What bertviz returns (None, or an HTML object with ``html_action="return"``).

    Raises:
        ImportError: when bertviz is not installed, with the command that installs it.
    """
    if view not in ("head", "model"):
        raise ValueError(f"view={view!r} is not one of 'head', 'model'")
    attention = to_bertviz(maps, tokens)
    try:
        import bertviz
    except ImportError:
        raise ImportError('show_bertviz needs bertviz; install it with: pip install "layerwatch[bertviz]"') from None
    show = bertviz.head_view if view == "head" else bertviz.model_view
    return show(attention=attention, tokens=list(tokens), **kwargs)
