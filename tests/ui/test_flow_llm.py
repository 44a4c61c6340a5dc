"""The console's LLM flow in a real browser with real clients: sign in, create a key on the Keys
page, use its secret with the openai SDK (a chat and a streamed one), find the requests on the
Logs page and their detail (model, trace id), see the spend on the key, revoke it in the UI and
have the SDK refused."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.helpers import ROOT, wait_for
from tests.telemetry.otlp_receiver import otlp_receiver
from tests.ui.conftest import Stack, screenshot, sign_in, start_stack, stop_stack

TELEMETRY = "telemetry:\n  request_log:\n    enabled: true\n"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WAIT_SECONDS = 30.0


def traced_config(tmp: Path, endpoint: str) -> Path:
    """examples/console.yaml with tracing on (to a real OTLP receiver), so entries carry the
    caller's trace id."""
    text = (ROOT / "examples" / "console.yaml").read_text()
    assert TELEMETRY in text, "examples/console.yaml changed: update this test's anchor"
    text = text.replace(
        TELEMETRY, TELEMETRY + f"  tracing:\n    enabled: true\n    endpoint: {endpoint}\n"
    )
    path = tmp / "console-traced.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("flow")
    with otlp_receiver() as receiver:
        config = traced_config(tmp, receiver.http_endpoint)
        stack = start_stack(config, tmp, token=secrets.token_hex(16))
        try:
            yield stack
        finally:
            stop_stack(stack)


def shots(page: Any, name: str, tmp: Path) -> None:
    """The page at 1280 px and at phone width (390 px)."""
    screenshot(page, name, tmp)
    page.set_viewport_size(PHONE)
    screenshot(page, name + "-phone", tmp)
    page.set_viewport_size(DESKTOP)


def reload_until(page: Any, url: str, ready: Any, what: str) -> None:
    """Load `url` again until `ready(page)` (the log and spend writers flush in batches)."""

    def check() -> bool:
        page.goto(url)
        return bool(ready(page))

    wait_for(check, timeout=WAIT_SECONDS, what=what)


def traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def test_key_chat_logs_spend_revoke(page: Any, traced_stack: Stack, tmp_path: Path) -> None:
    stack = traced_stack
    sign_in(page, stack)

    # Create a key on the Keys page: the secret is shown once, in the answer's body.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Keys").click()
    form = page.locator("form#new-key")
    form.get_by_label("Name", exact=True).fill("flow-key")
    form.get_by_label("User", exact=True).fill("ann")
    form.get_by_label("Team", exact=True).fill("research")
    form.get_by_label("Budget (USD)").fill("5")
    form.get_by_label("Budget period").select_option("monthly")
    form.get_by_role("button", name="Create key").click()
    secret = page.locator(".secret code").inner_text().strip()
    assert secret.startswith("sk-cw-") and len(secret) > 30
    assert "will not be shown again" in page.locator("main").inner_text()
    assert secret not in page.url
    shots(page, "keys-created", tmp_path)
    page.get_by_role("link", name="All keys").click()
    assert secret not in page.content()  # shown once: never on a later page
    assert "flow-key" in page.locator("table.keys").inner_text()

    # The openai SDK with that secret: a chat and a streamed chat, each with its own trace.
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)
    chat_trace, chat_parent = traceparent()
    answer = client.chat.completions.create(
        model="sample-model",
        messages=[{"role": "user", "content": "hello from the console test"}],
        extra_headers={"traceparent": chat_parent},
    )
    assert answer.choices[0].message.content
    stream_trace, stream_parent = traceparent()
    chunks = client.chat.completions.create(
        model="sample-model",
        messages=[{"role": "user", "content": "stream to me"}],
        stream=True,
        extra_headers={"traceparent": stream_parent},
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Both requests on the Logs page (filtered by the key, in the URL).
    logs_url = stack.console + "/logs?key=flow-key"
    reload_until(
        page, logs_url, lambda p: p.locator("table.logs tbody tr").count() >= 2, "the log rows"
    )
    table = page.locator("table.logs").inner_text()
    assert "sample-model" in table and "flow-key" in table
    shots(page, "logs", tmp_path)

    # The filter form: by trace id (htmx swaps the table and pushes the bookmarkable URL).
    page.get_by_label("Trace id").fill(chat_trace)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"trace_id=" + chat_trace))
    wait_for(lambda: page.locator("table.logs tbody tr").count() == 1, what="one row")
    page.locator("table.logs tbody tr a").first.click()
    page.wait_for_url(re.compile(r"/ui/logs/\d+$"))
    detail = page.locator("main").inner_text()
    assert chat_trace in detail
    assert "sample-model" in detail
    assert "hello from the console test" in detail  # the stored prompt
    assert "flow-key" in detail and "research" in detail
    shots(page, "logs-detail", tmp_path)

    # The streamed one is there too, under its own trace id.
    page.goto(stack.console + "/logs?trace_id=" + stream_trace)
    assert page.locator("table.logs tbody tr").count() == 1

    # The spend on the key: Keys list and the key's page.
    def spent(p: Any) -> bool:
        row = p.locator("table.keys tr", has_text="flow-key")
        return "$0 of $5.00" not in row.inner_text() and "of $5.00" in row.inner_text()

    reload_until(page, stack.console + "/keys", spent, "the key's spend")
    shots(page, "keys", tmp_path)
    page.get_by_role("link", name="flow-key").click()
    page.wait_for_url(re.compile(r"/ui/keys/key_"))
    cost = page.locator("table td.spend").first.inner_text()
    assert float(cost.lstrip("$").replace(",", "")) > 0
    assert "sample-model" in page.locator("main").inner_text()
    assert page.locator("main").get_by_text("of $5.00").count() >= 1
    shots(page, "keys-detail", tmp_path)

    # Revoke it in the UI (a confirmation step), and the SDK is refused.
    page.get_by_role("link", name="Revoke key…").click()
    assert "cannot be undone" in page.locator("main").inner_text()
    page.get_by_role("button", name="Yes, revoke it").click()
    page.wait_for_url(re.compile(r"done=revoked"))
    assert page.locator(".keyname .badge").inner_text().strip().endswith("revoked")

    def refused() -> bool:
        try:
            client.chat.completions.create(
                model="sample-model", messages=[{"role": "user", "content": "still there?"}]
            )
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, timeout=WAIT_SECONDS, what="the revoked key to be refused")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="sample-model", messages=[{"role": "user", "content": "and now?"}]
        )
