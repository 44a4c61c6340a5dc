"""A small real REST service (aiohttp) matching tests/mcp/fixtures/petstore.yaml."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

SPEC = Path(__file__).parent / "fixtures" / "petstore.yaml"
SEEN: web.AppKey[list[dict[str, Any]]] = web.AppKey("seen", list)
# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def create_app() -> web.Application:
    pets: dict[int, dict[str, Any]] = {
        1: {"id": 1, "name": "Rex", "tag": "dog"},
        2: {"id": 2, "name": "Tom", "tag": "cat"},
    }
    seen: list[dict[str, Any]] = []

    async def list_pets(request: web.Request) -> web.Response:
        tags = request.query.getall("tags", [])
        limit = int(request.query.get("limit", "100"))
        found = [p for p in pets.values() if not tags or p["tag"] in tags][:limit]
        return web.json_response(found)

    async def create_pet(request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return web.json_response({"error": "name is required"}, status=400)
        pet = {"id": max(pets) + 1, "name": body["name"], "tag": body.get("tag")}
        pets[pet["id"]] = pet
        return web.json_response(pet, status=201)

    async def get_pet(request: web.Request) -> web.Response:
        pet = pets.get(int(request.match_info["petId"]))
        if pet is None:
            return web.json_response({"error": "no such pet"}, status=404)
        return web.json_response(pet)

    async def delete_pet(request: web.Request) -> web.Response:
        seen.append({"reason": request.headers.get("X-Reason")})
        pets.pop(int(request.match_info["petId"]), None)
        return web.Response(status=204)

    async def put_tags(request: web.Request) -> web.Response:
        tags = await request.json()
        return web.json_response({"petId": int(request.match_info["petId"]), "tags": tags})

    async def create_category(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    async def who_am_i(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "authorization": request.headers.get("Authorization"),
                "api_key": request.headers.get("X-Api-Key"),
            }
        )

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app[SEEN] = seen
    app.router.add_get("/api/pets", list_pets)
    app.router.add_post("/api/pets", create_pet)
    app.router.add_get("/api/pets/{petId}", get_pet)
    app.router.add_delete("/api/pets/{petId}", delete_pet)
    app.router.add_put("/api/pets/{petId}/tags", put_tags)
    app.router.add_post("/api/categories", create_category)
    app.router.add_get("/api/me", who_am_i)
    app.router.add_get("/api/photo", photo)
    return app


@asynccontextmanager
async def running_petstore() -> AsyncIterator[tuple[str, web.Application]]:
    """Serve the pet store on a free loopback port; yields (base URL `.../api`, app)."""
    app = create_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/api", app
    finally:
        await runner.cleanup()


def main() -> None:
    """`python -m tests.mcp.petstore PORT`: serve it in its own process."""
    import sys

    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
