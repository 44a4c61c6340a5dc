"""Admin API routes for the console (being built)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

Json = dict[str, Any]


def summary_routes(view: Any, probe: Any) -> list[Route]:
    """The routes (none yet)."""
    return []


def summary_paths() -> Json:
    """Their OpenAPI path items."""
    return {}
