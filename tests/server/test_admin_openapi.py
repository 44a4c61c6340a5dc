"""The admin plane's `GET /openapi.json`: valid OpenAPI 3.1 (openapi-spec-validator), and it
describes exactly the admin app's routes — every Starlette route with the methods it serves,
and nothing else — checked both from the route table and by calling every path with every
method through a real HTTP server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Route

from crossway.a2a.tasks import STATES
from crossway.config import load_config
from crossway.server import admin_openapi
from crossway.server.admin import ConfigView, create_admin_app
from crossway.server.admin_keys import ROUTE_METHODS
from crossway.store.accounting import GROUPS
from tests.helpers import free_port

CONFIG = "routes: []\n"
METHODS = ("get", "post", "put", "patch", "delete")


@asynccontextmanager
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Starlette]]:
    """The admin app under uvicorn on a free loopback port, with a tmp data dir."""
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "crossway.yaml"
    path.write_text(CONFIG)
    app = create_admin_app(ConfigView(str(path), load_config(str(path))), None)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "the admin server stopped before it started"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await task


async def _document(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/openapi.json") as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("application/json")
        doc: dict[str, Any] = await resp.json()
        return doc


def _routes(app: Starlette) -> dict[str, set[str]]:
    """Each route's path and the methods it accepts (lower case, without HEAD)."""
    out: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        methods = {m.lower() for m in (route.methods or ())} - {"head"}
        out.setdefault(route.path, set()).update(methods)
    return out


def _documented(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {m for m in item if m in METHODS} for path, item in doc["paths"].items()}


async def test_document_is_valid_openapi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(tmp_path, monkeypatch) as (url, _):
        doc = await _document(url)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on anything that is not valid OpenAPI
    op_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids)), "operationIds must be unique"
    for path, item in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert declared == templated, f"{method.upper()} {path}: path parameters"
            assert op["responses"], f"{method.upper()} {path}: no responses"


async def test_every_route_is_documented_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as (url, app):
        doc = await _document(url)
    routes, documented = _routes(app), _documented(doc)
    assert set(routes) == set(documented), (
        f"undocumented: {sorted(set(routes) - set(documented))}; "
        f"documented but not served: {sorted(set(documented) - set(routes))}"
    )
    catch_all = {m.lower() for m in ROUTE_METHODS} - {"head"}
    for path, methods in routes.items():
        assert documented[path] <= methods, f"{path}: documents methods it does not accept"
        if methods != catch_all:  # the key routes take every method and answer 405 in JSON
            assert documented[path] == methods, f"{path}: {methods} served"


async def test_documented_methods_are_served_and_others_are_405(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path with every method over HTTP: a documented one answers a documented status,
    any other is 405 — so the key routes, which accept every method, are documented exactly
    too."""
    async with served(tmp_path, monkeypatch) as (url, _):
        doc = await _document(url)
        async with aiohttp.ClientSession() as session:
            for path, methods in _documented(doc).items():
                concrete = re.sub(r"{kind}", "key", path)
                concrete = re.sub(r"{\w+}", "x", concrete)
                for method in METHODS:
                    async with session.request(method.upper(), url + concrete) as resp:
                        await resp.read()
                        if method in methods:
                            answers = doc["paths"][path][method]["responses"]
                            assert str(resp.status) in answers, (
                                f"{method.upper()} {path}: {resp.status} is not documented"
                            )
                        else:
                            assert resp.status == 405, f"{method.upper()} {path}: {resp.status}"


def test_names_match_the_code() -> None:
    """The document's spend groups and task states are the code's own."""
    assert admin_openapi.GROUPS == GROUPS
    assert set(admin_openapi.TASK_STATES) == set(STATES)


def test_sensitive_routes_declare_the_admin_token() -> None:
    doc = admin_openapi.build_document()
    assert "adminToken" in doc["components"]["securitySchemes"]
    for path in ("/keys", "/spend", "/pins", "/a2a/tasks"):
        for op in doc["paths"][path].values():
            assert {"adminToken": []} in op["security"], path
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in doc["paths"][path]["get"], path
