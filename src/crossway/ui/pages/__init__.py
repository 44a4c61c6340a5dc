"""The console's pages, one module each (the order of `NAV` in `crossway.ui.render`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from crossway.ui.console import Console


def page_routes(console: Console) -> list[BaseRoute]:
    """Every page's routes."""
    from crossway.ui.pages import a2a, config, guardrails, keys, logs, mcp, models, overview

    routes: list[BaseRoute] = []
    for module in (overview, models, keys, logs, mcp, a2a, guardrails, config):
        routes.extend(module.routes(console))
    return routes
