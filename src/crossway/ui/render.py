"""Server-rendered console pages: one Jinja environment, one layout, one navigation bar."""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path
from typing import Any, Final

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from crossway import __version__

TEMPLATES: Final = Path(__file__).parent / "templates"
HTMX: Final = "htmx-2.0.11.min.js"
"""The vendored htmx (0BSD licence beside it in static/)."""

NAV: Final = (
    ("overview", "Overview", "/ui/"),
    ("models", "Models", "/ui/models"),
    ("keys", "Keys", "/ui/keys"),
    ("logs", "Logs", "/ui/logs"),
    ("mcp", "MCP", "/ui/mcp"),
    ("a2a", "A2A", "/ui/a2a"),
    ("guardrails", "Guardrails", "/ui/guardrails"),
    ("config", "Config", "/ui/config"),
)
"""Every page: (id, title and `<h1>`, path), in the navigation bar's order."""


def _when(value: Any) -> str:
    """Unix seconds as `2026-12-02 14:03:07Z` (empty for None)."""
    if value is None or value == "":
        return ""
    try:
        stamp = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%SZ")


def _money(value: Any) -> str:
    if value is None:
        return ""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(amount):
        return str(value)
    return f"${amount:,.6f}".rstrip("0").rstrip(".") if amount < 1 else f"${amount:,.2f}"


def _ms(value: Any) -> str:
    if value is None:
        return ""
    try:
        return f"{float(value):,.1f} ms"
    except (TypeError, ValueError):
        return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["money"] = _money
    env.filters["ms"] = _ms
    env.globals["nav"] = NAV
    env.globals["version"] = __version__
    env.globals["htmx"] = HTMX
    return env


ENV: Final = _environment()


def render(
    request: Request, template: str, page: str, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """`template` inside the layout for nav entry `page` (its title is the page's `<h1>`)."""
    title = next((t for key, t, _ in NAV if key == page), page)
    state = request.scope.get("state", {})
    session = state.get("ui_session")
    body = ENV.get_template(template).render(
        request=request,
        page=page,
        title=title,
        mode=state.get("ui_mode", "open"),
        signed_in=state.get("ui_signed_in", False),
        csrf=session.csrf if session is not None else "",
        **context,
    )
    return HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})


def bare_page(title: str, message: str) -> str:
    """A standalone page for refusals (no navigation: the visitor may not use the console)."""
    return ENV.get_template("message.html").render(title=title, message=message)


def escape(text: str) -> str:
    return html.escape(text, quote=True)
