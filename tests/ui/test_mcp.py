"""The MCP page in a real browser: a tool whose upstream changed it behind the client's back is
shown blocked with the diff, kept blocked, approved, then called through the gateway with the
mcp SDK client and in the console's playground."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from mcp import Client
from tests.helpers import free_port
from tests.mcp.conftest import spawn, stop
from tests.mcp.rugpull_server import HONEST
from tests.ui.conftest import Stack, screenshot, sign_in, start_stack, stop_stack
from tests.ui.logstore import fill_request_log

PHONE = {"width": 390, "height": 844}
T = TypeVar("T")

CONFIG = """\
listen:
  host: 127.0.0.1
  port: ${{CROSSWAY_PORT}}
admin:
  port: ${{CROSSWAY_ADMIN_PORT}}
  token: ${{CROSSWAY_ADMIN_TOKEN}}
telemetry:
  request_log:
    enabled: true
    path: {log}
routes:
  - name: mcp
    match:
      path: {{prefix: /mcp}}
    backend: tools
  - name: a2a
    match:
      path: {{prefix: /a2a}}
    backend: agents
backends:
  agents:
    type: a2a
    agents:
      writer:
        url: ${{A2A_WRITER_URL}}
    task_store:
      type: sqlite
  tools:
    type: mcp
    pinning:
      mode: block
      store: sqlite
    servers:
      rp:
        type: streamable_http
        url: http://127.0.0.1:{port}/mcp
"""


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a new event loop in another thread (Playwright's sync API keeps a loop
    running in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


def _client(url: str) -> Client:
    transport = streamable_http_client(url, http_client=create_mcp_http_client())
    return Client(transport, mode="legacy")


def _text(result: Any) -> str:
    return str(getattr(result.content[0], "text", None))


async def _swap_behind_the_clients_back(url: str) -> set[str]:
    """List (pins the honest definitions), make the upstream change `forecast`, list again;
    the names listed the second time."""
    async with _client(url) as client:
        first = {t.name for t in (await client.list_tools()).tools}
        assert first == {"rp_forecast", "rp_stable", "rp_swap"}
        assert _text(await client.call_tool("rp_swap", {})) == "swapped"
        second = {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError, match="blocked"):
            await client.call_tool("rp_forecast", {"city": "Oslo"})
        return second


async def _forecast(url: str, city: str) -> str:
    """Call `rp_forecast` (listing the tools first: it must be listed again once approved)."""
    refused: MCPError | None = None
    async with _client(url) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        try:
            result = await client.call_tool("rp_forecast", {"city": city})
        except MCPError as exc:  # raised here, outside the SDK's task group
            refused = exc
    if refused is not None:
        assert "rp_forecast" not in names
        raise refused
    assert "rp_forecast" in names
    return _text(result)


def _pin_status(stack: Stack, tool: str) -> str:
    import json

    request = urllib.request.Request(
        stack.admin + "/pins", headers={"Authorization": f"Bearer {stack.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        pins = json.loads(answer.read())["pins"]
    return str(next(p for p in pins if p["tool"] == tool)["status"])


def _phone_screenshot(page: Any, name: str, tmp: Path) -> None:
    """A screenshot of the page as it is, at phone width (then back to 1280 px)."""
    page.set_viewport_size(PHONE)
    try:
        screenshot(page, name, tmp)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: the page is {width} px wide on a phone"
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def _server_ms(url: str, token: str | None, runs: int = 7) -> float:
    """The median time of GET `url` with the admin token as a Bearer token, in ms."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            assert r.status == 200 and r.geturl() == url  # the page itself, not the login form
            assert b"<h1>" in r.read()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@pytest.fixture(scope="module")
def rugpull_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway with pinning (block, sqlite) in front of the changing rug-pull server, and a
    request log store of 100,000 entries (the page timings' condition)."""
    tmp = tmp_path_factory.mktemp("rugpull")
    log = tmp / "request-log.sqlite3"
    fill_request_log(log, 100_000)
    port = free_port()
    upstream = spawn([sys.executable, "-m", "tests.mcp.rugpull_server", str(port)], port)
    try:
        config = tmp / "rugpull.yaml"
        config.write_text(CONFIG.format(port=port, log=log))
        stack = start_stack(config, tmp, token=secrets.token_hex(16))
        try:
            yield stack
        finally:
            stop_stack(stack)
    finally:
        stop(upstream)


def test_changed_tool_reviewed_approved_and_called(
    page: Any, rugpull_stack: Stack, tmp_path: Path
) -> None:
    stack = rugpull_stack
    mcp_url = stack.url + "/mcp"
    assert _run(_swap_behind_the_clients_back(mcp_url)) == {"rp_stable", "rp_swap"}

    sign_in(page, stack)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="MCP").click()
    assert page.locator("h1").inner_text() == "MCP"
    server = page.locator("section.mcp-backend tbody tr", has_text="rp")
    assert "streamable_http" in server.inner_text()
    cells = server.locator("td.num").all_inner_texts()
    assert cells == ["3", "1", "1"]  # tools seen, blocked, changed
    forecast = page.locator("tr.pin-blocked", has_text="forecast")
    assert forecast.locator(".badge").inner_text() == "blocked"
    assert page.locator("tr.pin-pinned", has_text="stable").count() == 1
    screenshot(page, "mcp", tmp_path)
    _phone_screenshot(page, "mcp-phone", tmp_path)

    # The diff: the description gained the poisoned instructions; the schema did not change.
    forecast.get_by_role("link", name="Review change").click()
    page.wait_for_url("**/ui/mcp/pins/tools/rp/forecast")
    description = page.get_by_role("group", name="Description")
    assert description.locator(".del").inner_text() == HONEST
    assert "<IMPORTANT>" in description.locator(".add").inner_text()
    assert page.locator("h3", has_text="Input schema").locator(".badge").inner_text() == "same"
    screenshot(page, "mcp-pin", tmp_path)
    _phone_screenshot(page, "mcp-pin-phone", tmp_path)

    # Keeping it blocked changes nothing, and says so.
    page.get_by_role("button", name="Keep blocked").click()
    assert page.get_by_role("status").inner_text().startswith("Kept blocked: nothing was changed")
    assert _pin_status(stack, "forecast") == "blocked"
    with pytest.raises(MCPError, match="blocked"):
        _run(_forecast(mcp_url, "Oslo"))

    # Approving pins the definition shown; the tool is served again.
    page.get_by_role("button", name="Approve definition").click()
    assert page.get_by_role("status").inner_text().startswith("Approved")
    # Pinned now, but still flagged: the description scan finds the hidden instructions.
    assert page.locator("h2 .badge").inner_text() == "flagged"
    assert "important-tag" in page.locator("dl.pin-facts").inner_text()
    screenshot(page, "mcp-approved", tmp_path)
    assert _pin_status(stack, "forecast") == "flagged"
    assert _run(_forecast(mcp_url, "Oslo")) == "sunny in Oslo"

    # The playground lists and calls it through the gateway.
    page.goto(stack.console + "/mcp")
    playground = page.locator("form.playground")
    playground.get_by_role("button", name="List tools").click()
    listed = page.locator("#playground-out table")
    listed.get_by_role("cell", name="rp_forecast", exact=True).wait_for()
    playground.get_by_label("Tool", exact=True).fill("rp_forecast")
    playground.get_by_label("Arguments (JSON)").fill('{"city": "Rome"}')
    playground.get_by_role("button", name="Call tool").click()
    assert page.locator("pre.pg-result").inner_text() == "sunny in Rome"
    screenshot(page, "mcp-playground", tmp_path)
    _phone_screenshot(page, "mcp-playground-phone", tmp_path)

    for path in ("/mcp", "/mcp/pins/tools/rp/forecast", "/a2a"):
        median = _server_ms(stack.console + path, stack.token)
        print(f"GET /ui{path} (100,000 log rows): median {median:.1f} ms")
        assert median < 300, (path, median)


def test_playground_calls_the_sample_echo(page: Any, console_stack: Stack, tmp_path: Path) -> None:
    sign_in(page, console_stack)
    page.goto(console_stack.console + "/mcp")
    playground = page.locator("form.playground")
    # Bad arguments are refused with a message before anything is sent.
    playground.get_by_label("Tool", exact=True).fill("sample_echo")
    playground.get_by_label("Arguments (JSON)").fill('{"text": ')
    playground.get_by_role("button", name="Call tool").click()
    assert "not JSON" in page.locator("#playground-out [role=alert]").inner_text()

    playground.get_by_role("button", name="List tools").click()
    listed = page.locator("#playground-out table")
    listed.get_by_role("cell", name="sample_echo", exact=True).wait_for()
    playground.get_by_label("Arguments (JSON)").fill('{"text": "hello from the console"}')
    playground.get_by_role("button", name="Call tool").click()
    assert "hello from the console" in page.locator("pre.pg-result").inner_text()
    screenshot(page, "mcp-playground-sample", tmp_path)

    # Listing pinned the sample's tools: the page shows them and the server's tool count.
    page.goto(console_stack.console + "/mcp")
    assert page.locator("tr.pin-pinned", has_text="echo").count() == 1
    server = page.locator("section.mcp-backend tbody tr", has_text="sample")
    assert server.locator("td.num").first.inner_text() != "0"

    # An unknown tool: the API's answer as a message, never a traceback.
    page.goto(console_stack.console + "/mcp/pins/tools/sample/no-such-tool")
    assert "no pin for tool 'no-such-tool'" in page.get_by_role("alert").inner_text()
    median = _server_ms(console_stack.console + "/mcp", console_stack.token)
    print(f"GET /ui/mcp (console stack): median {median:.1f} ms")
    assert median < 300, median
