"""Path tricks against key- and CEL-guarded routes (LLM, MCP, plain HTTP), sent on raw sockets
so no client normalises them: dot segments (plain, percent-encoded, mixed case), `//`, and
what must be refused outright (encoded `/` or `\\`, a raw `\\`, overlong UTF-8, `..;`, NUL).

A trick that normalises to a guarded path meets that route's guard (401 / 403); one that cannot
be read one unambiguous way is a 400. Either way the upstream never sees the request."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import start_gateway
from tests.security.support import (
    BACKENDS,
    Answer,
    Servers,
    assert_challenge,
    assert_openai_error,
    assert_rpc_error,
    raw,
    tool_call,
)

KEY = "sk-paths-5b0c7e1d9a2f4e68"

CONFIG = """
routes:
  - name: admin
    match: {path: {prefix: /admin}}
    backend: web
    policies: [{type: api_key, keys: {ops: '@KEY@'}}]
  - name: llm
    match: {path: {prefix: /v1}}
    backend: llm
    policies: [{type: api_key, keys: {ops: '@KEY@'}}]
  - name: mcp
    match: {path: {prefix: /mcp}}
    backend: tools
    policies: [{type: api_key, keys: {ops: '@KEY@'}}]
  - name: public
    match: {path: {prefix: /}}
    backend: web
    policies:
      - type: authorization
        deny: ['request.path.startsWith("/internal")']
""" + BACKENDS.format(upstream="@UP@", mcp="@MCP@")


@dataclass
class Target:
    servers: Servers
    port: int


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    config = (
        CONFIG.replace("@KEY@", KEY)
        .replace("@UP@", servers.upstream.url)
        .replace("@MCP@", servers.mcp.url)
    )
    with start_gateway(config) as gateway:
        yield Target(servers, gateway.port)


# The guarded resources: (route kind, path).
GUARDED = {
    "http_key": "/admin/users",
    "llm_key": "/v1/chat/completions",
    "mcp_key": "/mcp",
    "http_cel": "/internal/secret",
}


def _rest(path: str) -> str:
    return path[1:]


# Tricks that normalise to the guarded path: the guard must see them.
NORMALISED: dict[str, Callable[[str], str]] = {
    "dotdot": lambda p: "/public/.." + p,
    "dotdot_twice": lambda p: "/public/a/../../" + _rest(p),
    "dotdot_above_root": lambda p: "/../../" + _rest(p),
    "dot": lambda p: "/./" + _rest(p),
    "encoded_dotdot": lambda p: "/public/%2e%2e" + p,
    "encoded_dotdot_upper": lambda p: "/public/%2E%2E" + p,
    "encoded_dotdot_mixed_case": lambda p: "/public/%2E%2e" + p,
    "half_encoded_dotdot": lambda p: "/public/.%2e" + p,
    "encoded_dot": lambda p: "/%2e/" + _rest(p),
    "double_slash": lambda p: "/" + p,
    "double_slash_inside": lambda p: (
        p.replace("/", "//", 2) if p.count("/") > 1 else "//" + _rest(p)
    ),
    "triple_slash": lambda p: "//" + p,
    "encoded_first_letter": lambda p: "/%" + f"{ord(p[1]):02x}" + p[2:],
}

# Tricks that cannot be read one unambiguous way: refused before any route sees them.
REFUSED: dict[str, Callable[[str], str]] = {
    "encoded_slash": lambda p: "/public/..%2f" + _rest(p),
    "encoded_slash_upper": lambda p: "/public/..%2F" + _rest(p),
    "encoded_slash_only": lambda p: "/public%2f..%2f" + _rest(p),
    "backslash": lambda p: "/public/..\\" + _rest(p),
    "encoded_backslash": lambda p: "/public/..%5c" + _rest(p),
    "encoded_backslash_upper": lambda p: "/public/..%5C" + _rest(p),
    "overlong_dots": lambda p: "/public/%c0%ae%c0%ae/" + _rest(p),
    "overlong_dots_upper": lambda p: "/public/%C0%AE%C0%AE/" + _rest(p),
    "overlong_slash": lambda p: "/public/..%c0%af" + _rest(p),
    "overlong_3_byte_dot": lambda p: "/public/%e0%80%ae%e0%80%ae/" + _rest(p),
    "dotdot_semicolon": lambda p: "/public/..;/" + _rest(p),
    "encoded_nul": lambda p: "/public/%00/../" + _rest(p),
    "bad_escape": lambda p: "/public/%zz/../" + _rest(p),
}

_ids = itertools.count(1)


async def _send(
    gw: Target, kind: str, path: str, *, key: str | None = None
) -> tuple[Answer, Callable[[], bool]]:
    """The guarded resource's request on a raw socket, with this request path."""
    servers = gw.servers
    auth = f"x-api-key: {key}\r\n".encode() if key else b""
    if kind == "mcp_key":
        marker = f"path-marker-{next(_ids)}"
        body = json.dumps(tool_call("alpha_add", {"a": 1, "b": 2, "note": marker})).encode()
        head = (
            b"POST "
            + path.encode("latin-1")
            + b" HTTP/1.1\r\nHost: gw.test\r\n"
            + auth
            + b"content-type: application/json\r\naccept: application/json, text/event-stream\r\n"
            + b"mcp-protocol-version: 2025-06-18\r\ncontent-length: "
            + str(len(body)).encode()
        )
        answer = await raw(gw.port, head, body)
        return answer, lambda: servers.mcp.saw_marker(marker)
    before = servers.upstream.count()
    if kind == "llm_key":
        body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
        ).encode()
        head = (
            b"POST "
            + path.encode("latin-1")
            + b" HTTP/1.1\r\nHost: gw.test\r\n"
            + auth
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
        )
        answer = await raw(gw.port, head, body)
    else:
        head = b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: gw.test\r\n" + auth
        answer = await raw(gw.port, head)
    return answer, lambda: servers.upstream.count() != before


def _assert_guarded(kind: str, answer: Answer) -> None:
    if kind == "http_cel":
        assert_openai_error(answer, 403, "permission_error", "forbidden")
    elif kind == "mcp_key":
        assert_rpc_error(answer, 401, request_id=7)
        assert_challenge(answer)
    else:
        assert_openai_error(answer, 401, "authentication_error", "missing_api_key")
        assert_challenge(answer)


@pytest.mark.parametrize("kind", list(GUARDED))
async def test_guard_holds_on_the_plain_path(gw: Target, kind: str) -> None:
    """The control: the guarded path itself is refused."""
    answer, reached = await _send(gw, kind, GUARDED[kind])
    _assert_guarded(kind, answer)
    assert not reached()


@pytest.mark.parametrize("kind", list(GUARDED))
@pytest.mark.parametrize("trick", list(NORMALISED))
async def test_path_normalising_to_a_guarded_one_meets_its_guard(
    gw: Target, kind: str, trick: str
) -> None:
    path = NORMALISED[trick](GUARDED[kind])
    answer, reached = await _send(gw, kind, path)
    _assert_guarded(kind, answer)
    assert not reached(), f"the upstream saw {path!r}"


@pytest.mark.parametrize("kind", list(GUARDED))
@pytest.mark.parametrize("trick", list(REFUSED))
async def test_ambiguous_path_is_refused(gw: Target, kind: str, trick: str) -> None:
    path = REFUSED[trick](GUARDED[kind])
    answer, reached = await _send(gw, kind, path)
    assert_openai_error(answer, 400, "invalid_request_error", "invalid_path")
    assert not reached(), f"the upstream saw {path!r}"


@pytest.mark.parametrize("trick", ["dotdot", "encoded_dotdot_mixed_case", "double_slash"])
async def test_authorised_tricky_path_reaches_the_upstream_normalised(
    gw: Target, trick: str
) -> None:
    """With the key, the normalised path is what the upstream gets (so it and the guard agree)."""
    upstream = gw.servers.upstream
    path = NORMALISED[trick](GUARDED["http_key"])
    answer, reached = await _send(gw, "http_key", path, key=KEY)
    assert answer.status == 200, answer
    assert reached()
    assert upstream.seen[-1].path == "/admin/users", upstream.seen[-1]


async def test_double_encoded_dots_are_data_not_dot_segments(gw: Target) -> None:
    """`%252e%252e` is decoded once, to the literal segment `%2e%2e`: the public route serves it
    and the upstream gets it still encoded (never `/internal/...`)."""
    upstream = gw.servers.upstream
    answer, reached = await _send(gw, "http_cel", "/public/%252e%252e/internal/secret")
    assert answer.status == 200, answer
    assert reached()
    assert upstream.seen[-1].path == "/public/%252e%252e/internal/secret", upstream.seen[-1]
