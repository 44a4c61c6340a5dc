"""Admin API routes for the console (being built)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

Json = dict[str, Any]


def validate_routes(view: Any, probe: Any) -> list[Route]:
    """The routes (none yet)."""
    return []


def validate_paths() -> Json:
    """Their OpenAPI path items."""
    return {}
