"""The Guardrails page in a real browser: after an answer masked by the `pii` guard and a
request it refused (openai SDK, a key made through the admin API), the page counts both
decisions by guard and action, lists the requests with a link to their log entry, shows the
decision counters, and lists route `llm`'s policies in order with the guard marked — and the
e-mail address and card number never appear in its HTML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.helpers import wait_for
from tests.ui.conftest import Stack, sign_in
from tests.ui.test_overview import CARD, EMAIL, WAIT_SECONDS, admin, send_traffic, shots

CARD_DIGITS = CARD.replace(" ", "")


def _no_sensitive_text(html: str) -> None:
    for text in (EMAIL, CARD, CARD_DIGITS, "alice.wonder", "1111 1111"):
        assert text not in html, f"{text!r} is on the Guardrails page"


def test_guard_decisions_and_route_policies(
    page: Any, console_stack: Stack, tmp_path: Path
) -> None:
    stack = console_stack
    send_traffic(stack)
    status, body = admin(stack, "GET", "/summary/guards")
    assert status == 200, body
    actions = {(d["guard"], d["action"], d["direction"]) for d in body["decisions"]}
    assert actions == {("pii", "mask", "response"), ("pii", "block", "request")}
    _no_sensitive_text(str(body))

    sign_in(page, stack)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Guardrails").click()
    assert page.locator("h1").inner_text() == "Guardrails"

    # By guard and action: one finding each, in one request each.
    grouped = page.locator("#by-guard-action").inner_text()
    assert re.search(r"pii\s+block\s+1\s+1", grouped), grouped
    assert re.search(r"pii\s+mask\s+1\s+1", grouped), grouped
    detail = page.locator("#decisions").inner_text()
    assert "response" in detail and "request" in detail
    assert page.get_by_role("img", name="Guard findings by guard and action").count() == 1

    # The requests that had decisions, each linking to its log entry.
    recent = page.locator("#recent")
    assert recent.locator("tbody tr").count() == 2
    links = recent.get_by_role("link")
    assert all(
        re.fullmatch(r"/ui/logs/\d+", links.nth(i).get_attribute("href") or "") for i in range(2)
    )

    # The counters since the start (every worker's crossway_guard_decisions_total).
    metrics = page.locator("#guard-metrics").inner_text()
    assert "mask" in metrics and "block" in metrics

    # Route llm's policies, in order: virtual_key, then the pii guard (marked as a guard).
    table = page.locator('table.policies[data-route="llm"]')
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "virtual_key" in first and "route" in first
    assert "guardrails" in second and "guard" in second and "pii" in second
    assert "credit_card" in second and "block" in second and "mask" in second
    assert page.locator('table.policies[data-route="mcp"]').count() == 0  # no policies there
    assert "No policies" in page.locator("main").inner_text()

    _no_sensitive_text(page.content())
    shots(page, "guardrails", tmp_path)

    # An entry's link opens the Logs page's detail of that request.
    href = links.first.get_attribute("href")
    links.first.click()
    page.wait_for_url(re.compile(re.escape(str(href)) + "$"))
    wait_for(
        lambda: page.locator("h1").inner_text() == "Logs",
        timeout=WAIT_SECONDS,
        what="the log entry",
    )

    # Other windows say the same; the page stays free of the text in each.
    page.goto(stack.console + "/guardrails?window=7d")
    assert "Decisions in the last 7 days" in page.locator("main").inner_text()
    _no_sensitive_text(page.content())
