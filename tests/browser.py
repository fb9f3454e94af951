"""A real headless Chromium for page tests, driven by Playwright.

Locally the page tests skip with a message when no browser is installed; where
``LAYERWATCH_REQUIRE_BROWSER=1`` is set (``.ci/run`` sets it and installs Chromium when
missing) a missing browser is a failure, never a skip.

``open_page(path)`` loads a file with networking disabled and records every console
error, page error, dialog and request that tried to leave the file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    env = os.environ.get("LAYERWATCH_CHROMIUM")
    if env and os.path.exists(env):
        return env
    for path in CANDIDATES:
        if os.path.exists(path):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str):
    if os.environ.get("LAYERWATCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser test cannot run: {reason} (LAYERWATCH_REQUIRE_BROWSER=1)")
    pytest.skip(f"{reason}; install Chromium (apt-get install chromium) and playwright to run the page tests")


@dataclass
class PageLog:
    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    dialogs: list = field(default_factory=list)
    requests: list = field(default_factory=list)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    path = chromium_path()
    if path is None:
        _unavailable("no Chromium found")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser):
    """``open_page(path, viewport=(w, h)) -> (page, log)``: a file opened offline."""
    contexts = []

    def _open(path: str | Path, viewport: tuple[int, int] = (1280, 900)):
        context = browser.new_context(offline=True, viewport={"width": viewport[0], "height": viewport[1]})
        contexts.append(context)
        log = PageLog()
        page = context.new_page()
        page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: log.page_errors.append(str(e)))

        def _dialog(d):
            log.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", _dialog)

        def _route(route):
            url = route.request.url
            if url.startswith("file:") and url.split("#")[0] == Path(path).resolve().as_uri():
                route.continue_()
            else:
                log.requests.append(url)
                route.abort()

        page.route("**/*", _route)
        page.goto(Path(path).resolve().as_uri())
        page.wait_for_load_state("load")
        return page, log

    yield _open
    for c in contexts:
        c.close()
