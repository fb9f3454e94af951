"""The offline page mechanism: data that cannot end its block, a policy that forbids the network."""

from __future__ import annotations

import json

import pytest

from layerwatch.pages import json_block, render_page

HOSTILE = "</script><img src=x onerror=alert(1)><!-- \u2028 & done"

SCRIPT = """
const data = JSON.parse(document.getElementById('layerwatch-data').textContent);
const out = document.getElementById('out');
out.textContent = data.text;
document.body.dataset.ready = '1';
fetch('https://example.com/x').catch(() => { document.body.dataset.fetch = 'blocked'; });
const img = new Image(); img.src = 'https://example.com/pixel.png'; document.body.appendChild(img);
"""


def test_json_block_escapes_everything_that_could_end_the_block():
    text = json_block({"t": HOSTILE})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"t": HOSTILE}


def test_json_block_is_deterministic():
    assert json_block({"b": 1, "a": [0.5, 2]}) == json_block({"a": [0.5, 2], "b": 1}) == '{"a":[0.5,2],"b":1}'


def test_a_script_holding_a_closing_tag_is_refused():
    with pytest.raises(ValueError, match="may not contain '</script'"):
        render_page("t", "", ["var s = '</script>';"])


def test_page_shows_hostile_text_literally_and_reaches_no_network(tmp_path, open_page):
    path = tmp_path / "page.html"
    path.write_text(render_page("test", '<p id="out"></p>', [SCRIPT], data={"text": HOSTILE}), encoding="utf-8")
    page, log = open_page(path)
    page.wait_for_selector("body[data-ready='1']")
    assert page.text_content("#out") == HOSTILE
    assert page.locator("img[src='x']").count() == 0
    page.wait_for_timeout(200)
    assert log.dialogs == [] and log.page_errors == []
    # The content security policy refuses both requests before they are made.
    assert log.requests == []
    assert page.evaluate("document.body.dataset.fetch") == "blocked"
