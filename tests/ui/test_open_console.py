"""The quickstart's console: open on loopback (no admin token), and says so on every page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT
from tests.ui.conftest import Stack, screenshot, start_stack, stop_stack

PAGES = ("Overview", "Models", "Keys", "Logs", "MCP", "A2A", "Guardrails", "Config")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("quickstart")
    stack = start_stack(ROOT / "examples" / "quickstart.yaml", tmp, token=None)
    try:
        yield stack
    finally:
        stop_stack(stack)


def test_quickstart_prints_the_console_url(quickstart: Stack) -> None:
    log = (quickstart.data / "stack.log").read_text()
    assert f"console at {quickstart.admin}/ui" in log


def test_open_console_says_so_and_needs_no_login(
    page: Any, quickstart: Stack, tmp_path: Path
) -> None:
    page.goto(quickstart.console + "/")
    assert page.locator("h1").inner_text() == "Overview"
    note = page.locator("#open-console")
    assert note.get_attribute("role") == "note"
    assert "no admin token is set" in note.inner_text()
    for name in PAGES:
        page.get_by_role("navigation", name="Console").get_by_role(
            "link", name=name, exact=True
        ).click()
        assert page.locator("h1").inner_text() == name
        assert "Open console" in page.locator("#open-console").inner_text()
    # There is nothing to sign in with: the login page leads back to the console.
    page.goto(quickstart.console + "/login")
    assert page.url == quickstart.console + "/"


def test_phone_width_keeps_the_nav_usable(browser: Any, quickstart: Stack, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(quickstart.console + "/")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width} px)"
        links = page.get_by_role("navigation", name="Console").get_by_role("link")
        assert links.count() == len(PAGES)
        for i in range(links.count()):
            box = links.nth(i).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        screenshot(page, "nav-phone", tmp_path)
    finally:
        context.close()


def test_open_console_still_checks_csrf(page: Any, quickstart: Stack) -> None:
    page.goto(quickstart.console + "/")
    answer = page.request.post(quickstart.console + "/keys", form={"name": "x"})
    assert answer.status == 403
