"""CORS through a real `crossway serve`: preflights answered before authentication, headers
added for allowed origins (errors included), nothing for others; the upstream never sees a
preflight."""

from __future__ import annotations

import pytest

from crossway.config.policy import CorsConfig
from crossway.policy.cors import CorsPolicy
from crossway.server.context import RequestContext
from tests.helpers import start_gateway
from tests.policy.counting_upstream import call, counting_upstream, http_route_config

KEY = "cors-test-key-0123456789"
# CORS is listed after the API key on purpose: the chain still runs it first.
POLICIES = f"""      - type: api_key
        keys:
          app: {KEY}
      - type: cors
        allow_origins: ["https://app.example.com", "https://*.tools.example.com"]
        allow_credentials: true
        max_age: 120
"""
PREFLIGHT = {
    "origin": "https://app.example.com",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


async def test_cors_through_the_gateway() -> None:
    async with counting_upstream() as up:
        with start_gateway(http_route_config(up.url, POLICIES)) as gw:
            url = gw.url + "/v1/chat/completions"
            # Preflight from an allowed origin, without credentials: answered by Crossway.
            status, headers, body = await call(url, "OPTIONS", headers=PREFLIGHT)
            assert status == 204, body
            assert headers["access-control-allow-origin"] == "https://app.example.com"
            assert headers["access-control-allow-credentials"] == "true"
            assert "POST" in headers["access-control-allow-methods"]
            assert "authorization" in headers["access-control-allow-headers"]
            assert headers["access-control-max-age"] == "120"
            assert "origin" in headers.getall("vary")
            # A wildcard subdomain is allowed too; the origin is echoed back.
            status, headers, _ = await call(
                url, "OPTIONS", headers={**PREFLIGHT, "origin": "https://a.b.tools.example.com"}
            )
            assert status == 204
            assert headers["access-control-allow-origin"] == "https://a.b.tools.example.com"
            # Preflight from another origin: 403, no CORS headers.
            for origin in ("https://evil.example", "https://tools.example.com.evil.example"):
                status, headers, body = await call(
                    url, "OPTIONS", headers={**PREFLIGHT, "origin": origin}
                )
                assert status == 403, origin
                assert body["error"]["code"] == "cors_origin_not_allowed"
                assert not any(h.lower().startswith("access-control-") for h in headers)
            assert up.count == 0

            # The actual request from an allowed origin: CORS headers on the answer...
            auth = {"origin": "https://app.example.com", "authorization": f"Bearer {KEY}"}
            status, headers, body = await call(url, "POST", headers=auth)
            assert status == 200, body
            assert headers["access-control-allow-origin"] == "https://app.example.com"
            assert headers["access-control-allow-credentials"] == "true"
            assert "x-request-id" in headers["access-control-expose-headers"]
            # ...and on an error answer, so the script can read the 401.
            status, headers, body = await call(
                url, "POST", headers={"origin": "https://app.example.com"}
            )
            assert status == 401
            assert headers["access-control-allow-origin"] == "https://app.example.com"
            # Another origin: served (CORS is not access control) but without CORS headers.
            status, headers, _ = await call(
                url, "POST", headers={**auth, "origin": "https://evil.example"}
            )
            assert status == 200
            assert "access-control-allow-origin" not in headers
            # No Origin at all (a server-side client): untouched.
            status, headers, _ = await call(url, "POST", headers={"authorization": f"Bearer {KEY}"})
            assert status == 200
            assert "access-control-allow-origin" not in headers
            assert up.count == 3
            assert all(seen.method == "POST" for seen in up.seen)


def _scope(method: str, headers: dict[str, str]) -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
        "path": "/",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def test_any_origin_and_echoed_lists() -> None:
    policy = CorsPolicy(
        CorsConfig(type="cors", allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    )
    reply = await policy.on_request(
        _scope(
            "OPTIONS",
            {
                "origin": "https://anyone.example",
                "access-control-request-method": "PATCH",
                "access-control-request-headers": "x-custom",
            },
        ),
        RequestContext("r", "b", "1", "/"),
    )
    assert reply is not None
    status, headers, _ = reply
    found = dict(headers)
    assert status == 204
    assert found[b"access-control-allow-origin"] == b"*"  # no credentials: a real wildcard
    assert found[b"access-control-allow-methods"] == b"PATCH"
    assert found[b"access-control-allow-headers"] == b"x-custom"
    assert b"vary" not in found
    # An OPTIONS without Access-Control-Request-Method is an ordinary request.
    ctx = RequestContext("r", "b", "1", "/")
    assert await policy.on_request(_scope("OPTIONS", {"origin": "https://x.example"}), ctx) is None
    assert ctx.response_headers == [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", b"mcp-session-id, x-request-id"),
    ]


def test_config_refuses_bad_origins() -> None:
    for origin in ("https://app.example.com/path", "app.example.com", "https://*"):
        with pytest.raises(ValueError, match="is not an origin"):
            CorsConfig(type="cors", allow_origins=[origin])
    with pytest.raises(ValueError, match="cannot be combined with allow_credentials"):
        CorsConfig(type="cors", allow_origins=["*"], allow_credentials=True)
