"""Self-contained offline HTML pages: every byte of script, style and data inline.

A page built here asks the network for nothing: its content security policy forbids
every request (``default-src 'none'``), allows only the scripts and styles it carries
(by their SHA-256 hashes) and images from ``data:`` URLs. Data travel as JSON in a
``<script type="application/json">`` block that no browser executes; ``<``, ``>``, ``&``
and the JavaScript line separators are escaped inside it, so no text in the data (a tweet
holding ``</script>``, say) can end the block or become markup. Pages show text only
through ``textContent``, never ``innerHTML``.

The scripts and styles of each page live as files in this package (``*.js``, ``*.css``)
and are read with :func:`asset`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Any, Sequence

from ..text import clean_text

__all__ = ["asset", "json_block", "render_page"]


def asset(name: str) -> str:
    """The text of a script or style file shipped in ``layerwatch/pages/``."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def json_block(data: Any) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``.

    Keys are sorted and floats written by ``json``'s own repr, so the same data give the
    same bytes (pages are byte-identical for the same run directory).
    """
    # What UTF-8 cannot encode (lone surrogates in a row's text) becomes U+FFFD: the page is written as UTF-8.
    text = clean_text(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def render_page(
    title: str,
    body: str,
    scripts: Sequence[str],
    styles: Sequence[str] = (),
    data: Any = None,
    data_id: str = "layerwatch-data",
) -> str:
    """One HTML document holding ``body`` (trusted markup), the scripts, styles and data.

    Args:
        title: The page title (escaped).
        body: Markup written by layerwatch itself (never user text).
        scripts: JavaScript sources, inlined in order at the end of the body.
        styles: CSS sources, inlined in the head.
        data: JSON-ready data, placed before the scripts in a block with id ``data_id``;
            read it with ``JSON.parse(document.getElementById(data_id).textContent)``.
    """
    for source in scripts:
        if "</script" in source.lower():
            raise ValueError("a page script may not contain '</script'")
    csp = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(_hash(s) for s in scripts) if scripts else "script-src 'none'",
            # Styles cannot run code; inline ones (and the style attributes that scripts
            # set) are allowed.
            "style-src 'unsafe-inline'",
            "img-src data:",
            "connect-src 'none'",
            "font-src 'none'",
            "media-src data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
    ]
    parts += [f"<style>{s}</style>" for s in styles]
    parts += ["</head>", "<body>", body]
    if data is not None:
        parts.append(f'<script type="application/json" id="{html.escape(data_id)}">{json_block(data)}</script>')
    parts += [f"<script>{s}</script>" for s in scripts]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
