"""The A2A page in a real browser: a message sent with the a2a-sdk client through the gateway
(to an agent's own URL and to the router agent) shows up as a task, by state and in its detail
with its history, and the router's decision for it is listed."""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest
from a2a.utils.constants import TransportProtocol

from tests.ui.conftest import Stack, screenshot, sign_in

PHONE = {"width": 390, "height": 844}
T = TypeVar("T")


async def _send(url: str, text: str, message_id: str, *, streaming: bool = False) -> str:
    """Send one message with the a2a-sdk client (its card fetched through Crossway); the task
    id the agent answered with."""
    async with httpx.AsyncClient(timeout=20) as http:
        config = ClientConfig(
            streaming=streaming,
            httpx_client=http,
            supported_protocol_bindings=[TransportProtocol.JSONRPC],
        )
        client = await ClientFactory(config).create_from_url(url)
        message = Message(message_id=message_id, role=Role.ROLE_USER, parts=[Part(text=text)])
        events = [e async for e in client.send_message(SendMessageRequest(message=message))]
    ids = [e.task.id for e in events if e.HasField("task")]
    ids += [e.status_update.task_id for e in events if e.HasField("status_update")]
    assert ids, events
    return str(ids[-1])


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end on a new event loop in another thread (Playwright's sync API
    keeps a loop running in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


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


def test_tasks_decisions_and_catalog(page: Any, console_stack: Stack, tmp_path: Path) -> None:
    direct_id = f"direct-{uuid.uuid4().hex[:8]}"
    routed_id = f"routed-{uuid.uuid4().hex[:8]}"
    direct_task = _run(
        _send(
            console_stack.url + "/a2a/writer/",
            "Summarize this report please",
            direct_id,
            streaming=True,
        )
    )
    routed_task = _run(
        _send(console_stack.url + "/a2a/", "Translate this paragraph into French", routed_id)
    )

    sign_in(page, console_stack)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="A2A").click()
    assert page.locator("h1").inner_text() == "A2A"
    # The catalog: both sample agents, their skills with tags and examples, modes, capabilities.
    writer = page.locator("article.agent", has_text="Writes: summarizes")
    assert writer.get_by_text("up", exact=True).is_visible()
    assert writer.get_by_text(console_stack.url + "/a2a/writer/").is_visible()
    assert writer.get_by_role("cell", name="Translate text translate").count() == 1
    assert writer.get_by_text("Translate this paragraph into French").is_visible()
    vision = page.locator("article.agent", has_text="Looks at images")
    assert "image/png" in vision.inner_text()
    assert "Streaming\nyes" in writer.inner_text()

    # The router's decision for the routed message: writer, skill translate, why, score.
    decision = page.locator("table.decisions tr", has_text=routed_id)
    assert decision.count() == 1
    row = decision.inner_text()
    assert "writer" in row and "translate" in row and "match" in row
    assert decision.get_by_role("link").inner_text() == routed_task
    screenshot(page, "a2a", tmp_path)

    # Tasks by state: both completed; the filter shows them, another state does not.
    page.get_by_role("group", name="Task states").get_by_role("link", name="completed").click()
    assert "state=completed" in page.url
    tasks = page.locator("table.tasks")
    assert tasks.get_by_role("link", name=direct_task).is_visible()
    assert tasks.get_by_role("link", name=routed_task).is_visible()
    screenshot(page, "a2a-completed", tmp_path)
    page.get_by_role("group", name="Task states").get_by_role("link", name="failed").click()
    assert page.get_by_text("No task is in state failed.").is_visible()

    # The direct task's detail: its agent and history (submitted -> working -> completed).
    page.goto(console_stack.console + "/a2a?state=completed")
    page.locator("table.tasks").get_by_role("link", name=direct_task).click()
    page.wait_for_url(f"**/ui/a2a/tasks/{direct_task}*")
    assert page.locator("h1").inner_text() == "A2A"
    history = page.locator("table.history").inner_text()
    assert history.index("working") < history.index("completed")
    assert "writer" in page.locator("dl.facts").inner_text()
    assert page.get_by_text("was not created through the router agent").is_visible()
    screenshot(page, "a2a-task", tmp_path)

    # The routed task's detail names the router's decision.
    page.goto(console_stack.console + f"/a2a/tasks/{routed_task}")
    routing = page.locator("main li", has_text="The router sent message")
    assert routed_id in routing.inner_text() and "translate" in routing.inner_text()

    # An unknown task: the API's 404 message, no traceback.
    page.goto(console_stack.console + "/a2a/tasks/no-such-task")
    assert "no task 'no-such-task' is recorded" in page.get_by_role("alert").inner_text()

    page.set_viewport_size(PHONE)
    for name, path in (("a2a-phone", "/a2a"), ("a2a-task-phone", f"/a2a/tasks/{routed_task}")):
        page.goto(console_stack.console + path)
        screenshot(page, name, tmp_path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: the page is {width} px wide on a phone"

    for path in ("/a2a", f"/a2a/tasks/{routed_task}"):
        median = _server_ms(console_stack.console + path, console_stack.token)
        print(f"GET /ui{path}: median {median:.1f} ms")
        assert median < 300, (path, median)
