"""The console's mcp page (placeholder until it is built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crossway.ui.render import render

if TYPE_CHECKING:
    from crossway.ui.console import Console


def routes(console: Console) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        return render(request, "placeholder.html", "mcp", note="This page is being built.")

    return [Route("/ui/mcp", page, methods=["GET"])]
