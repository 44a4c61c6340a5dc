"""The console without a mouse: sign in, reach a page and create a key with the keyboard."""

from __future__ import annotations

from typing import Any

from tests.ui.conftest import Stack

MAX_TABS = 80


def _tab_to(page: Any, predicate: str) -> None:
    """Press Tab until the focused element satisfies the JS `predicate` (on `el`)."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return {predicate}; }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def test_sign_in_and_create_a_key_with_the_keyboard(page: Any, console_stack: Stack) -> None:
    page.goto(console_stack.console + "/")
    assert "/ui/login" in page.url
    # The token field has focus on arrival; Enter submits the form.
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(console_stack.token or "")
    page.keyboard.press("Enter")
    page.wait_for_url(console_stack.console + "/")
    _tab_to(page, "el.tagName === 'A' && el.textContent.trim() === 'Keys'")
    page.keyboard.press("Enter")
    page.wait_for_url(console_stack.console + "/keys")
    assert page.locator("h1").inner_text() == "Keys"
    _tab_to(page, "el.tagName === 'INPUT' && el.name === 'name'")
    page.keyboard.type("typed-key")
    _tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === 'Create key'")
    # Focus is visible where it lands (an outline, not colour alone).
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")
    secret = page.locator(".secret")
    secret.wait_for()
    assert secret.inner_text().strip()
    assert "typed-key" in page.locator("main").inner_text()
