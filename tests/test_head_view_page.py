"""The head view page, driven in a real headless browser through its own controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_bert
from layerwatch.measures.attention.head_view import head_view_html
from layerwatch.measures.attention.neuron import attention_scores, query_key_capture

HOSTILE = "</script><img src=x onerror=alert(1)>"
TOKENS = ["[CLS]", "the", "cat", "sat", "on", "mats", ".", "[SEP]"]
SNAPSHOTS = ["epoch 0", "epoch 1", "epoch 2"]
LAYERS, HEADS = 2, 3


def sharp_maps(n: int, seed: int) -> np.ndarray:
    """(snapshots, layers, heads, n, n) maps whose argmax leads the runner-up by a clear margin."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(SNAPSHOTS), LAYERS, HEADS, n, n))
    winners = rng.integers(0, n, size=logits.shape[:-1])
    np.put_along_axis(logits, winners[..., None], 4.0, axis=-1)
    e = np.exp(logits)
    maps = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    top2 = np.sort(maps, -1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0] > 0.05).all()  # far more than a quantisation level
    return maps


@pytest.fixture
def examples():
    return [
        {"tokens": TOKENS, "label": "not hateful", "maps": sharp_maps(len(TOKENS), 0)},
        {"tokens": ["[CLS]", HOSTILE, "$x$", "[SEP]"], "label": HOSTILE, "maps": sharp_maps(4, 1)},
    ]


@pytest.fixture
def page_of(tmp_path, open_page):
    def _open(examples, name="head_view.html"):
        path = tmp_path / name
        path.write_text(head_view_html(examples, SNAPSHOTS, title="test page"), encoding="utf-8")
        page, log = open_page(path)
        page.wait_for_selector("body[data-ready='1']")
        return page, log

    return _open


def lines(page) -> list[tuple[int, int, int, float]]:
    """The lines on show: (query, key, head, weight) each."""
    return page.eval_on_selector_all(
        "#lines g:not([display='none']) line",
        "els => els.map(e => [+e.dataset.query, +e.dataset.key, +e.dataset.head, +e.dataset.weight])",
    )


def choose(page, example: int, layer: int, head, snapshot: int):
    """Pick through the page's controls; the slider is moved with the keyboard, as a user would."""
    # By value: the options' labels count from 1, their values (indices) from 0.
    page.select_option("#example", value=str(example))
    page.select_option("#layer", value=str(layer))
    page.select_option("#head", value=str(head))
    page.focus("#snapshot")
    page.keyboard.press("Home")
    for _ in range(snapshot):
        page.keyboard.press("ArrowRight")


def test_page_loads_offline_without_errors_or_requests(page_of, examples):
    page, log = page_of(examples)
    page.wait_for_timeout(200)
    assert log.console_errors == [] and log.page_errors == [] and log.requests == [] and log.dialogs == []
    assert page.text_content("#title") == "test page"
    assert page.text_content("#snapshot-title") == "epoch 0"
    assert page.eval_on_selector_all("#attention text.left", "els => els.map(e => e.textContent)") == TOKENS
    assert page.eval_on_selector_all("#layer option", "els => els.map(e => e.textContent)") == ["layer 1", "layer 2"]
    # All heads at first: every head has lines.
    assert {h for _, _, h, _ in lines(page)} == set(range(HEADS))


@pytest.mark.parametrize("layer, head, snapshot, query", [(1, 2, 2, 3), (0, 0, 1, 0), (1, 1, 0, 7)])
def test_strongest_lines_of_a_token_are_the_argmax_of_the_stored_map(page_of, examples, layer, head, snapshot, query):
    page, log = page_of(examples)
    choose(page, 0, layer, head, snapshot)
    assert page.text_content("#snapshot-title") == SNAPSHOTS[snapshot]
    page.hover(f"#attention text.left[data-index='{query}']")
    drawn = lines(page)
    assert drawn and {(q, h) for q, _, h, _ in drawn} == {(query, head)}
    stored = examples[0]["maps"][snapshot, layer, head, query]
    strongest = max(drawn, key=lambda line: line[3])
    assert strongest[1] == int(np.argmax(stored))
    # Every drawn weight is the stored one to the page's precision.
    for _, key, _, w in drawn:
        assert w == pytest.approx(stored[key], abs=1 / 510 + 1e-4)
    assert log.console_errors == [] and log.page_errors == []


def test_moving_the_slider_shows_the_next_snapshot(page_of, examples):
    page, _ = page_of(examples)
    choose(page, 0, 1, 0, 0)
    page.click("#attention text.left[data-index='2']")  # pin the query
    page.mouse.move(5, 5)  # leave the token: the pinned query stays
    first = {key: w for _, key, _, w in lines(page)}
    page.focus("#snapshot")
    page.keyboard.press("ArrowRight")
    assert page.text_content("#snapshot-title") == "epoch 1"
    second = {key: w for _, key, _, w in lines(page)}
    maps = examples[0]["maps"]
    for drawn, snapshot in ((first, 0), (second, 1)):
        expected = np.rint(maps[snapshot, 1, 0, 2] * 255) / 255
        assert drawn == {j: pytest.approx(expected[j], abs=1e-4) for j in range(len(TOKENS)) if expected[j] > 0}
    assert first != second


def test_hostile_tokens_and_labels_are_shown_literally(page_of, examples):
    page, log = page_of(examples)
    page.select_option("#example", value="1")
    assert page.eval_on_selector_all("#attention text.right", "els => els.map(e => e.textContent)")[1] == HOSTILE
    assert page.text_content("#example-label") == "label: " + HOSTILE
    assert page.locator("img").count() == 0
    page.wait_for_timeout(200)
    assert log.dialogs == [] and log.page_errors == [] and log.console_errors == []


def test_neuron_view_recomputes_the_models_attention(tmp_path, page_of):
    model = tiny_bert()
    ids = torch.tensor([1, 17, 33, 54, 2])
    capture = query_key_capture(model, ids, torch.ones_like(ids))
    tokens = ["[CLS]", "a", "b", "c", "[SEP]"]
    maps = np.stack([capture["attention"]] * len(SNAPSHOTS))  # vectors stored for the second snapshot only
    examples = [{"tokens": tokens, "label": "x", "maps": maps,
                 "neuron": {"q": capture["q"][None], "k": capture["k"][None], "snapshots": [1]}}]
    page, log = page_of(examples, "neuron.html")
    choose(page, 0, 1, 1, 0)
    assert "stored for: epoch 1" in page.text_content("#neuron-note")
    page.keyboard.press("ArrowRight")
    page.click("#attention text.left[data-index='3']")
    softmax = page.eval_on_selector_all("#neuron .softmax", "els => els.map(e => +e.dataset.softmax)")
    scores = page.eval_on_selector_all("#neuron text.score", "els => els.map(e => +e.dataset.score)")
    np.testing.assert_allclose(softmax, capture["attention"][1, 1, 3], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, attention_scores(capture["q"], capture["k"])[1, 1, 3], atol=1e-5, rtol=0)
    d = capture["q"].shape[-1]
    assert page.locator("#neuron rect.query").count() == d
    assert page.locator("#neuron rect.key").count() == page.locator("#neuron rect.product").count() == 5 * d
    assert log.console_errors == [] and log.page_errors == []


def test_a_screenshot_is_not_blank(tmp_path, page_of, examples):
    from matplotlib.image import imread

    page, _ = page_of(examples)
    choose(page, 0, 0, "all", 1)
    page.hover("#attention text.left[data-index='2']")
    path = tmp_path / "head_view.png"
    page.screenshot(path=str(path), full_page=True)
    pixels = imread(path)[..., :3]
    assert pixels.std() > 0.05  # more than a blank page
    # Coloured lines, not only black text on white.
    saturation = pixels.max(-1) - pixels.min(-1)
    assert (saturation > 0.3).mean() > 0.001


def test_a_damaged_layer_is_named_where_it_is_shown_and_the_others_drawn(page_of, examples):
    examples[0]["maps"][1, 1, :, :, :] = np.nan  # layer 2 at epoch 1
    page, log = page_of(examples)
    assert page.eval_on_selector_all("#layer option", "els => els.map(e => e.textContent)") == [
        "layer 1", "layer 2 (non-finite)"]
    choose(page, 0, 1, 0, 1)
    assert "Layer 2 holds non-finite attention weights" in page.text_content("#damaged")
    assert lines(page) == []
    choose(page, 0, 1, 0, 2)  # the same layer at another snapshot, and another layer, are drawn
    assert page.text_content("#damaged") == "" and lines(page)
    choose(page, 0, 0, 0, 1)
    assert page.text_content("#damaged") == "" and lines(page)
    assert log.console_errors == [] and log.page_errors == []
