"""Browser tests of the console: Debian's Chromium driven by Playwright's Python API.

The browser is the system one (`/usr/bin/chromium`, or `$CROSSWAY_CHROMIUM`): Playwright's own
browser download is never used. Screenshots land in the test's tmp dir, and also in
`$CROSSWAY_UI_SCREENSHOTS` when set (how docs/ui/ is refreshed: see docs/ui.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, free_port, http_status, missing_component, wait_for

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless Chromium as root on a closed network (no background connections)."""
STACK_READY_SECONDS = 90.0
"""Five sample processes and the gateway start together: slow on a loaded 2-core machine."""


def chromium_path() -> str:
    path = os.environ.get("CROSSWAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing_component("Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: while Playwright's sync API is
    open, its event loop stays current in this thread and asyncio tests elsewhere could not
    run theirs. (So a module using it holds no async tests.)"""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_component("the playwright package is not installed")
    executable = chromium_path()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Stack:
    """A running quickstart (sample upstreams + Crossway) with some config."""

    proc: subprocess.Popen[bytes]
    url: str
    admin: str
    token: str | None
    data: Path
    env: dict[str, str]

    @property
    def console(self) -> str:
        return self.admin + "/ui"


def start_stack(config: Path, tmp: Path, *, token: str | None) -> Stack:
    """`python -m crossway.quickstart` with `config`, every port free, data under `tmp`."""
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "CROSSWAY_QUICKSTART_CONFIG": str(config),
        "CROSSWAY_PORT": str(port),
        "CROSSWAY_ADMIN_PORT": str(admin),
        "CROSSWAY_DATA_DIR": str(tmp / "data"),
        "SAMPLE_LLM_PORT": str(free_port()),
        "SAMPLE_MCP_PORT": str(free_port()),
        "SAMPLE_POOL_PORTS": f"{free_port()},{free_port()}",
        "SAMPLE_A2A_WRITER_PORT": str(free_port()),
        "SAMPLE_A2A_VISION_PORT": str(free_port()),
    }
    if token is not None:
        env["CROSSWAY_ADMIN_TOKEN"] = token
    log = (tmp / "stack.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway.quickstart"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = Stack(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", token, tmp, env)
    try:
        wait_for(
            lambda: proc.poll() is not None or http_status(stack.admin + "/readyz") == 200,
            timeout=STACK_READY_SECONDS,
            what="the console stack",
        )
    except BaseException:
        stop_stack(stack)
        raise
    if proc.poll() is not None:
        raise RuntimeError((tmp / "stack.log").read_text(errors="replace"))
    return stack


def stop_stack(stack: Stack) -> None:
    if stack.proc.poll() is None:
        os.killpg(stack.proc.pid, signal.SIGTERM)
        try:
            stack.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait()


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """examples/console.yaml (admin token, keys, request log, pins, A2A tasks) on the samples."""
    tmp = tmp_path_factory.mktemp("console")
    stack = start_stack(ROOT / "examples" / "console.yaml", tmp, token=secrets.token_hex(16))
    try:
        yield stack
    finally:
        stop_stack(stack)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 px wide, and its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Any, stack: Stack) -> None:
    """Sign in through the login form with the stack's admin token."""
    page.goto(stack.console + "/")
    assert "/ui/login" in page.url
    page.get_by_label("Admin token").fill(stack.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.console + "/")


def screenshot(page: Any, name: str, tmp: Path, *, full_page: bool = True) -> Path:
    """A PNG of the page in `tmp` (and in `$CROSSWAY_UI_SCREENSHOTS` when set)."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    keep = os.environ.get("CROSSWAY_UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path
