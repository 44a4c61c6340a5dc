"""Signing in to the console, its cookies, CSRF and security headers, in a real browser."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.ui.conftest import Stack, screenshot, sign_in

PAGES = ("Overview", "Models", "Keys", "Logs", "MCP", "A2A", "Guardrails", "Config")


def _fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=data, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        return opener.open(request, timeout=10)
    except urllib.error.HTTPError as exc:
        return exc


def test_login_required_then_every_page_reachable_from_the_nav(
    page: Any, console_stack: Stack, tmp_path: Path
) -> None:
    page.goto(console_stack.console + "/keys")
    assert "/ui/login" in page.url
    screenshot(page, "login", tmp_path)
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That is not the admin token")
    page.get_by_label("Admin token").fill(console_stack.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(console_stack.console + "/keys")
    cookies = page.context.cookies()
    session = [c for c in cookies if c["name"] == "__Host-crossway-session"]
    assert session and session[0]["httpOnly"] and session[0]["secure"]
    assert session[0]["sameSite"] == "Strict"
    for name in PAGES:
        nav = page.get_by_role("navigation", name="Console")
        nav.get_by_role("link", name=name, exact=True).click()
        assert page.locator("h1").inner_text() == name
        assert page.locator("nav").count() == 1
        assert nav.get_by_role("link", name=name, exact=True).get_attribute("aria-current") == (
            "page"
        )


def test_keyboard_reaches_the_nav(page: Any, console_stack: Stack) -> None:
    sign_in(page, console_stack)
    page.keyboard.press("Tab")  # the skip link first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('nav') !== null")


def test_headers_and_cookie_flags(console_stack: Stack) -> None:
    answer = _fetch(console_stack.console + "/login")
    assert answer.status == 200
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    cookie = answer.headers["set-cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie


def test_unsigned_requests_are_refused(console_stack: Stack) -> None:
    # No session: pages redirect to the login form, changes are refused.
    assert _fetch(console_stack.console + "/keys").status == 303
    assert _fetch(console_stack.console + "/keys", data=b"name=x").status == 401
    # The admin token as a Bearer header works for scripts (no cookie, so no CSRF token).
    bearer = {"authorization": f"Bearer {console_stack.token}"}
    assert _fetch(console_stack.console + "/keys", headers=bearer).status == 200


def test_state_change_without_csrf_token_is_refused(page: Any, console_stack: Stack) -> None:
    sign_in(page, console_stack)
    # Signed in, but the request carries no CSRF token: refused, nothing signed out.
    answer = page.request.post(console_stack.console + "/logout", form={"x": "1"})
    assert answer.status == 403
    assert "CSRF" in answer.text()
    wrong = page.request.post(console_stack.console + "/logout", form={"csrf": "forged"})
    assert wrong.status == 403
    # A request from another site is refused even with the token.
    csrf = page.locator("form.logout input[name=csrf]").get_attribute("value")
    cross = page.request.post(
        console_stack.console + "/logout",
        form={"csrf": csrf},
        headers={"origin": "http://evil.example"},
    )
    assert cross.status == 403
    page.goto(console_stack.console + "/")
    assert page.locator("h1").inner_text() == "Overview"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    page.goto(console_stack.console + "/")
    assert "/ui/login" in page.url


def test_login_goes_only_to_console_paths(page: Any, console_stack: Stack) -> None:
    page.goto(console_stack.console + "/login?" + urllib.parse.urlencode({"next": "//evil/x"}))
    page.get_by_label("Admin token").fill(console_stack.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(console_stack.console + "/")


def test_no_page_breaks_the_content_security_policy(page: Any, console_stack: Stack) -> None:
    """Every page runs under the CSP as sent: no refused script, style or connection, and no
    script error."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "response",
        lambda r: problems.append(f"{r.status} {r.url}") if r.status == 404 else None,
    )
    sign_in(page, console_stack)
    for name in PAGES:
        page.get_by_role("navigation", name="Console").get_by_role(
            "link", name=name, exact=True
        ).click()
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").inner_text() == name
    assert not problems, problems
