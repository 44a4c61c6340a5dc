"""External authorization through a real `crossway serve`, asking a real local aiohttp
service: allow with identity, 401/403 passed on, fail closed (503) or open, cached answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from crossway.config.policy import ExtAuthzConfig
from crossway.errors import ServiceUnavailable
from crossway.policy.ext_authz import ExtAuthzPolicy
from crossway.server.context import RequestContext
from tests.helpers import free_port, start_gateway
from tests.policy.counting_upstream import call, counting_upstream


@dataclass
class AuthzService:
    url: str
    questions: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "normal"


@asynccontextmanager
async def authz_service() -> AsyncIterator[AuthzService]:
    state: dict[str, AuthzService] = {}

    async def decide(request: web.Request) -> web.StreamResponse:
        service = state["s"]
        question = await request.json()
        question["request_id"] = request.headers.get("x-request-id")
        service.questions.append(question)
        if service.mode == "error":
            return web.Response(status=500, text="boom")
        if service.mode == "slow":
            await asyncio.sleep(2)  # longer than the policy's timeout: the service is late
        auth = question["headers"].get("authorization")
        if question["path"].startswith("/open"):
            return web.Response(status=200)  # allowed, no identity (an empty answer)
        if auth == "Bearer good":
            return web.json_response({"identity": {"sub": "alice", "team": "research"}})
        if auth == "Bearer blocked":
            return web.json_response({"reason": "account suspended"}, status=403)
        return web.json_response({}, status=401)

    app = web.Application()
    app.router.add_post("/check", decide)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["s"] = AuthzService(f"http://127.0.0.1:{port}/check")
    try:
        yield state["s"]
    finally:
        await runner.cleanup()


CONFIG = """
routes:
  - name: closed
    match: {{path: {{prefix: /closed}}}}
    backend: web
    policies:
      - {{type: ext_authz, url: "{authz}", timeout: 0.5, cache_seconds: 60}}
      - type: authorization
        allow: ['identity.sub == "alice" && identity.team == "research"']
  - name: open
    match: {{path: {{prefix: /open}}}}
    backend: web
    policies:
      - {{type: ext_authz, url: "{authz}", cache_seconds: 0}}
  - name: down-closed
    match: {{path: {{prefix: /down-closed}}}}
    backend: web
    policies:
      - {{type: ext_authz, url: "http://127.0.0.1:{dead}/check"}}
  - name: down-open
    match: {{path: {{prefix: /down-open}}}}
    backend: web
    policies:
      - {{type: ext_authz, url: "http://127.0.0.1:{dead}/check", fail_open: true}}
backends:
  web:
    type: http
    url: {upstream}
"""


async def test_ext_authz_through_the_gateway() -> None:
    async with counting_upstream() as up, authz_service() as authz:
        config = CONFIG.format(authz=authz.url, dead=free_port(), upstream=up.url)
        with start_gateway(config) as gw:
            good = {"authorization": "Bearer good"}
            # Allowed, with the service's identity (checked by a CEL rule after it).
            status, _, body = await call(gw.url + "/closed/a?x=1", "POST", headers=good)
            assert status == 200, body
            question = authz.questions[-1]
            assert question["method"] == "POST"
            assert question["path"] == "/closed/a" and question["query"] == "x=1"
            assert question["headers"] == {"authorization": "Bearer good"}
            assert question["source"] == "127.0.0.1" and question["route"] == "closed"
            assert question["request_id"]
            # The credential is consumed: the upstream never sees it.
            assert "authorization" not in up.seen[-1].headers
            # Refusals pass the service's status and reason on; never forwarded.
            status, _, body = await call(
                gw.url + "/closed/a", headers={"authorization": "Bearer blocked"}
            )
            assert status == 403
            assert body["error"]["message"] == "account suspended"
            status, _, body = await call(gw.url + "/closed/a")
            assert status == 401
            assert up.count == 1

            # Cached per question: the same request again asks nothing; another path does.
            asked = len(authz.questions)
            for _ in range(3):
                status, _, _ = await call(gw.url + "/closed/a?x=1", "POST", headers=good)
                assert status == 200
            assert len(authz.questions) == asked
            await call(gw.url + "/closed/b", "POST", headers=good)
            assert len(authz.questions) == asked + 1

            # An empty 2xx allows without an identity.
            status, _, _ = await call(gw.url + "/open/x")
            assert status == 200

            # The service down: 503 (fail closed) or through (fail open).
            before = up.count
            status, _, body = await call(gw.url + "/down-closed/x", headers=good)
            assert status == 503
            assert body["error"]["code"] == "service_unavailable"
            assert up.count == before
            status, _, _ = await call(gw.url + "/down-open/x", headers=good)
            assert status == 200

            # The service answering an error or too late: also "unavailable".
            before = up.count
            for mode, path in (("error", "/open/e"), ("slow", "/closed/slow")):
                authz.mode = mode
                status, _, body = await call(gw.url + path, headers=good)
                assert status == 503, mode
                assert body["error"]["code"] == "service_unavailable"
            assert up.count == before


async def test_errors_are_not_cached_and_questions_in_flight_are_shared() -> None:
    async with authz_service() as authz:
        policy = ExtAuthzPolicy(ExtAuthzConfig(type="ext_authz", url=authz.url))
        try:

            def scope() -> dict[str, Any]:
                return {
                    "type": "http",
                    "method": "GET",
                    "path": "/closed/x",
                    "query_string": b"",
                    "headers": [(b"authorization", b"Bearer good"), (b"cookie", b"not-sent")],
                    "client": ("192.0.2.1", 5000),
                }

            authz.mode = "error"
            for _ in range(2):
                with pytest.raises(ServiceUnavailable):
                    await policy.on_request(scope(), RequestContext("r", "b", "1", "/"))
            assert len(authz.questions) == 2  # errors are never remembered
            authz.mode = "normal"
            ctxs = [RequestContext("r", "b", str(i), "/") for i in range(5)]
            await asyncio.gather(*(policy.on_request(scope(), c) for c in ctxs))
            assert len(authz.questions) == 3  # five identical questions, one call
            assert all(
                c.identity == {"sub": "alice", "method": "ext_authz", "team": "research"}
                for c in ctxs
            )
            assert authz.questions[-1]["headers"] == {"authorization": "Bearer good"}
            assert authz.questions[-1]["source"] == "192.0.2.1"
            assert orjson.dumps(authz.questions[-1]["identity"]) == b"null"
        finally:
            await policy.close()
