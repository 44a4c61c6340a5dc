"""The Config page in Chromium: the effective config without a secret, the validation of an
edited config with every error located, and a rejected reload of a broken file."""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, wait_for
from tests.ui.conftest import Stack, screenshot, sign_in, start_stack, stop_stack

BUDGET_MS = 300.0

# Three problems, on lines 3, 9 and 13 (an unknown key, a bad strategy, a bad weight).
THREE_ERRORS = """\
routes:
  - name: llm
    tiemout: 5
    match: {path: {prefix: /v1}}
    backend: llm
backends:
  llm:
    type: llm
    routing: {strategy: fastest}
    providers:
      sample: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
    models:
      - {name: m, targets: [{provider: sample, weight: -1}]}
"""
VALID = """\
routes:
  - name: llm
    match: {path: {prefix: /v1}}
    backend: llm
backends:
  llm:
    type: llm
    providers:
      sample: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
"""


@pytest.fixture(scope="module")
def config_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """The console example on a config file of its own (this module breaks and mends it)."""
    tmp = tmp_path_factory.mktemp("config-page")
    path = tmp / "console.yaml"
    path.write_text((ROOT / "examples" / "console.yaml").read_text())
    stack = start_stack(path, tmp, token=secrets.token_hex(16))
    try:
        yield stack, path
    finally:
        stop_stack(stack)


def _admin(stack: Stack) -> dict[str, str]:
    assert stack.token is not None
    return {"authorization": f"Bearer {stack.token}"}


def _open_config(page: Any, stack: Stack) -> None:
    sign_in(page, stack)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Config").click()
    assert page.locator("h1").inner_text() == "Config"


def test_effective_config_shows_no_secret(
    page: Any, browser: Any, config_stack: tuple[Stack, Path], tmp_path: Path
) -> None:
    stack, path = config_stack
    assert stack.token is not None
    _open_config(page, stack)
    html = page.content()
    assert stack.token not in html
    assert page.get_by_text("the file on disk is valid and loaded").is_visible()
    assert str(path) in page.locator("code.path").inner_text()
    effective = page.get_by_label("Effective config (YAML)").inner_text()
    assert 'token: "**********"' in effective and "sample-model" in effective
    # The editor holds the file's own text (its ${VAR} references, no values).
    editor = page.get_by_label("Config to validate (YAML)").input_value()
    assert editor == path.read_text() and "${CROSSWAY_ADMIN_TOKEN}" in editor
    screenshot(page, "config", tmp_path)
    page.get_by_role("link", name="JSON").click()
    effective_json = page.get_by_label("Effective config (JSON)").inner_text()
    assert '"token": "**********"' in effective_json
    assert stack.token not in page.content()

    phone = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        small = phone.new_page()
        _open_config(small, stack)
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        screenshot(small, "config-phone", tmp_path)
    finally:
        phone.close()


def test_validation_lists_every_error_with_its_line(
    page: Any, config_stack: tuple[Stack, Path], tmp_path: Path
) -> None:
    stack, path = config_stack
    before = path.read_bytes()
    _open_config(page, stack)
    page.get_by_label("Config to validate (YAML)").fill(THREE_ERRORS)
    page.get_by_role("button", name="Validate").click()
    page.get_by_text("Invalid:").wait_for()
    assert "3 problems found" in page.get_by_role("alert").last.inner_text()
    table = page.get_by_role("table", name="Problems in the edited config")
    rows = table.locator("tbody tr")
    assert rows.count() == 3
    found = {
        (
            rows.nth(i).locator("td").nth(0).inner_text(),
            rows.nth(i).locator("td").nth(2).inner_text(),
        )
        for i in range(3)
    }
    assert found == {
        ("3", "routes[0].tiemout"),
        ("9", "backends.llm.routing.strategy"),
        ("13", "backends.llm.models[0].targets[0].weight"),
    }, found
    assert "unknown key" in table.inner_text()
    assert "    tiemout: 5" in table.inner_text()  # the line itself is quoted
    assert (
        page.get_by_label("Config to validate (YAML)").input_value() == THREE_ERRORS
    )  # kept to fix
    screenshot(page, "config-invalid", tmp_path)

    page.get_by_label("Config to validate (YAML)").fill(VALID)
    page.get_by_role("button", name="Validate").click()
    page.get_by_text("the gateway would load this config").wait_for()
    assert page.get_by_role("table", name="Problems in the edited config").count() == 0
    assert path.read_bytes() == before  # the page never writes the file


def test_a_rejected_reload_is_shown(
    page: Any, browser: Any, config_stack: tuple[Stack, Path], tmp_path: Path
) -> None:
    stack, path = config_stack
    good = path.read_text()
    path.write_text(good.replace("type: openai_compatible", "type: openai_compat"))
    try:

        def rejected() -> bool:
            body = httpx.get(stack.admin + "/config", headers=_admin(stack), timeout=10).json()
            return "rejected_reload" in body

        wait_for(rejected, what="the admin plane to notice the broken file")
        _open_config(page, stack)
        banner = page.get_by_role("alert").filter(has_text="Rejected reload")
        assert "no longer loads" in banner.inner_text()
        assert "backends.llm.providers.sample.type" in banner.inner_text()
        assert "(line 50)" in banner.inner_text()
        assert page.get_by_text("Workers: serving the last valid config").is_visible()
        assert not page.get_by_text("the file on disk is valid and loaded").count()
        screenshot(page, "config-rejected", tmp_path)
    finally:
        path.write_text(good)
    wait_for(lambda: not _rejected_now(stack), what="the mended file to load again")
    page.reload()
    assert page.get_by_text("the file on disk is valid and loaded").is_visible()


def _rejected_now(stack: Stack) -> bool:
    body = httpx.get(stack.admin + "/config", headers=_admin(stack), timeout=10).json()
    return "rejected_reload" in body


def test_config_page_timing(config_stack: tuple[Stack, Path]) -> None:
    stack, _path = config_stack

    def once() -> float:
        started = time.perf_counter()
        response = httpx.get(stack.console + "/config", headers=_admin(stack), timeout=10)
        assert response.status_code == 200 and "<h1>Config</h1>" in response.text
        assert stack.token is not None and stack.token not in response.text
        return (time.perf_counter() - started) * 1000

    once()
    median = statistics.median(once() for _ in range(7))
    print(f"GET /ui/config median {median:.1f} ms")
    assert median < BUDGET_MS
