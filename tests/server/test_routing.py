"""Route matching: host, path (prefix / exact / regex), method and headers."""

from __future__ import annotations

from typing import Any

from crossway.config import parse_config
from crossway.server.routing import RouteTable, compile_route


class _Backend:
    async def __call__(self, *args: Any) -> None: ...


def table(routes_yaml: str) -> RouteTable:
    cfg = parse_config(
        "routes:\n" + routes_yaml + "backends:\n  b:\n    type: http\n    url: http://x\n", env={}
    )
    return RouteTable([compile_route(r, _Backend(), ()) for r in cfg.routes])  # type: ignore[arg-type]


def scope(path: str, method: str = "GET", host: str = "a.test", **headers: str) -> dict[str, Any]:
    hs = [(b"host", host.encode())] + [
        (k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()
    ]
    return {"type": "http", "path": path, "method": method, "headers": hs}


def name(t: RouteTable, s: dict[str, Any]) -> str | None:
    found = t.match(s)
    return found[0].name if found else None


def test_prefix_respects_segment_boundary_and_strip() -> None:
    t = table(
        "  - name: v1\n    backend: b\n    strip_prefix: true\n    match:\n      path:\n        prefix: /v1\n"
    )
    assert t.match(scope("/v1/chat")) is not None
    assert t.match(scope("/v1/chat"))[1] == "/chat"  # type: ignore[index]
    assert t.match(scope("/v1"))[1] == "/"  # type: ignore[index]
    assert t.match(scope("/v10")) is None


def test_exact_regex_method_host_headers() -> None:
    t = table(
        "  - name: exact\n    backend: b\n    match:\n      path:\n        exact: /health\n"
        "  - name: regex\n    backend: b\n    match:\n      path:\n        regex: /items/[0-9]+\n      methods: [POST]\n"
        "  - name: host\n    backend: b\n    match:\n      host: '*.example.com'\n"
        "  - name: header\n    backend: b\n    match:\n      headers:\n        X-Tenant: blue\n"
    )
    assert name(t, scope("/health")) == "exact"
    assert name(t, scope("/health/x")) is None
    assert name(t, scope("/items/12", "POST")) == "regex"
    assert name(t, scope("/items/12", "GET")) is None
    assert name(t, scope("/items/x1", "POST")) is None
    assert name(t, scope("/any", host="api.example.com:8080")) == "host"
    assert name(t, scope("/any", host="example.org")) is None
    assert name(t, scope("/any", x_tenant="blue")) == "header"
    assert name(t, scope("/any", x_tenant="red")) is None


def test_first_match_wins() -> None:
    t = table(
        "  - name: first\n    backend: b\n    match:\n      path:\n        prefix: /\n"
        "  - name: second\n    backend: b\n    match:\n      path:\n        prefix: /v1\n"
    )
    assert name(t, scope("/v1/x")) == "first"
