"""The Models page in Chromium: the sample model with its target and health, and the chat
playground streaming an answer through the gateway with a key made through the admin API."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import wait_for
from tests.ui.conftest import Stack, screenshot, sign_in

BUDGET_MS = 300.0


def _admin(stack: Stack) -> dict[str, str]:
    assert stack.token is not None
    return {"authorization": f"Bearer {stack.token}"}


def _new_key(stack: Stack, name: str) -> str:
    response = httpx.post(
        stack.admin + "/keys", json={"name": name}, headers=_admin(stack), timeout=10
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    assert key.startswith("sk-cw-")
    return key


def _probed(stack: Stack) -> None:
    """Wait until the admin plane's probe has reached the sample model server."""

    def reachable() -> bool:
        body = httpx.get(stack.admin + "/models", headers=_admin(stack), timeout=10).json()
        return bool(body["backends"]) and body["backends"][0]["reachable"] is True

    wait_for(reachable, what="the probe of the sample model server")


def test_models_api_lists_the_sample_model(console_stack: Stack) -> None:
    anonymous = httpx.get(console_stack.admin + "/models", timeout=10)
    assert anonymous.status_code == 401
    _probed(console_stack)
    body = httpx.get(console_stack.admin + "/models", headers=_admin(console_stack)).json()
    [backend] = body["backends"]
    assert backend["name"] == "llm"
    [provider] = backend["providers"]
    assert provider["name"] == "sample" and provider["type"] == "openai_compatible"
    assert provider["reachable"] is True and provider["base_url"].startswith("http://127.0.0.1:")
    models = {m["name"]: m for m in backend["models"]}
    assert set(models) == {"sample-model", "sample-model-mini"}
    [target] = models["sample-model"]["targets"]
    assert target["provider"] == "sample" and target["order"] == 1
    assert target["upstream_model"] == "sample-model"
    assert target["price"]["input"] == 1.0 and target["price_configured"] is True
    assert body["notes"]  # no shared cooldown store: says what it cannot see


def test_models_page_and_the_playground_streams_an_answer(
    page: Any, browser: Any, console_stack: Stack, tmp_path: Path
) -> None:
    _probed(console_stack)
    key = _new_key(console_stack, "playground")
    sign_in(page, console_stack)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Models").click()
    assert page.locator("h1").inner_text() == "Models"
    table = page.locator("table.targets", has_text="sample-model").first
    assert "sample" in table.inner_text()
    providers = page.locator("table", has=page.get_by_role("columnheader", name="Base URL"))
    row = providers.get_by_role("row", name="sample")
    assert "reachable" in row.inner_text() and "openai_compatible" in row.inner_text()
    assert console_stack.token not in page.content()

    page.get_by_label("Route").select_option("llm")
    page.get_by_label("Model", exact=True).select_option("sample-model")
    page.get_by_label("API key").fill(key)
    page.get_by_label("System message").fill("Be brief.")
    page.get_by_label("User message").fill("hello from the playground")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#playground-out")
    answer.filter(has_text="You said: hello from the playground").wait_for()
    page.get_by_role("status").filter(has_text="Done.").wait_for()
    screenshot(page, "models", tmp_path)

    # A wrong key: the gateway's refusal comes back as a readable line with its status.
    page.get_by_label("API key").fill("sk-cw-not-a-real-key")
    page.get_by_role("button", name="Send").click()
    answer.filter(has_text="HTTP 401").wait_for()
    page.get_by_role("status").filter(has_text="Failed (HTTP 401)").wait_for()

    phone = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        small = phone.new_page()
        sign_in(small, console_stack)
        small.goto(console_stack.console + "/models")
        assert small.locator("h1").inner_text() == "Models"
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        screenshot(small, "models-phone", tmp_path)
    finally:
        phone.close()


def test_the_playground_endpoint_streams_chunk_by_chunk(console_stack: Stack) -> None:
    key = _new_key(console_stack, "stream")
    words = " ".join(f"word{i}" for i in range(1500))
    chunks: list[bytes] = []
    with httpx.stream(
        "POST",
        console_stack.console + "/models/chat",
        headers=_admin(console_stack),
        data={"route": "llm", "model": "sample-model", "key": key, "user": words},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        chunks.extend(response.iter_raw())
    assert len(chunks) > 1, "the answer came back in one piece: it was buffered"
    assert b"".join(chunks).decode() == f"You said: {words}"


def test_the_playground_reports_bad_input_and_an_unreachable_gateway(
    console_stack: Stack,
) -> None:
    url = console_stack.console + "/models/chat"
    no_route = httpx.post(
        url, headers=_admin(console_stack), data={"route": "nope", "model": "m", "user": "hi"}
    )
    assert no_route.status_code == 400 and no_route.text.startswith("Error: choose one")
    no_message = httpx.post(
        url, headers=_admin(console_stack), data={"route": "llm", "model": "sample-model"}
    )
    assert no_message.status_code == 400 and "user message" in no_message.text
    # Without the console's session or token the endpoint is not reachable at all.
    anonymous = httpx.post(url, data={"route": "llm", "model": "sample-model", "user": "hi"})
    assert anonymous.status_code in (401, 403)


def test_models_page_timing(console_stack: Stack) -> None:
    _probed(console_stack)

    def once() -> float:
        started = time.perf_counter()
        response = httpx.get(console_stack.console + "/models", headers=_admin(console_stack))
        assert response.status_code == 200 and "<h1>Models</h1>" in response.text
        return (time.perf_counter() - started) * 1000

    once()
    median = statistics.median(once() for _ in range(7))
    print(f"GET /ui/models median {median:.1f} ms")
    assert median < BUDGET_MS
