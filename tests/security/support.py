"""What the attacker's suite is built from: real servers on loopback (a JWKS endpoint whose keys
rotate, a counting HTTP/LLM upstream, a counting MCP server), forged tokens, raw requests, and
the checks every case makes (exact status and error body, upstream never reached).

The servers run on an event loop of their own in a background thread, so one set of them (and
one gateway) serves a whole test module whatever loop each test runs in.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import aiohttp
import jwt
import uvicorn
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.helpers import free_port, wait_for

T = TypeVar("T")

ISSUER = "https://idp.security.test"
AUDIENCE = "https://crossway.security.test"
MCP_ACCEPT = "application/json, text/event-stream"
MCP_VERSION = "2025-06-18"


# -- a loop in a thread ---------------------------------------------------------------------------


class Background:
    """An asyncio loop in a daemon thread, for servers shared by a test module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _serve_aiohttp(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


# -- the identity provider ------------------------------------------------------------------------


def _private_key(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Idp:
    """A JWKS endpoint with real RSA and EC keys; a test may rotate them while the gateway runs."""

    url: str = ""
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    hits: int = 0

    def add_key(self, kid: str, alg: str = "RS256", *, publish: bool = True) -> None:
        self.keys[kid] = (_private_key(alg), alg)
        if publish:
            self.published.append(kid)

    def rotate(self, old: str, new: str, alg: str = "RS256") -> None:
        """Publish a new key and drop the old one (what a provider does after a compromise)."""
        self.add_key(new, alg)
        self.published.remove(old)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in list(self.published):
            private, alg = self.keys[kid]
            data = jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True)
            keys.append({**data, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def public_pem(self, kid: str) -> bytes:
        private, _ = self.keys[kid]
        pem: bytes = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def token(
        self, kid: str = "rsa-1", *, headers: Mapping[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token signed with key `kid`; claims default to a valid one (None drops a claim)."""
        private, alg = self.keys[kid]
        return jwt.encode(
            valid_claims(**claims), private, algorithm=alg, headers={"kid": kid, **(headers or {})}
        )


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        **overrides,
    }
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def alg_none_token(kid: str = "rsa-1", **claims: Any) -> str:
    """An unsigned token (`alg: none`, empty signature)."""
    return _compact({"alg": "none", "typ": "JWT", "kid": kid}, valid_claims(**claims)) + "."


def hs256_with_public_key(pem: bytes, kid: str = "rsa-1", **claims: Any) -> str:
    """The key-confusion attack: HS256 with the RSA public key's PEM bytes as the HMAC secret."""
    signing_input = _compact({"alg": "HS256", "typ": "JWT", "kid": kid}, valid_claims(**claims))
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def tampered(token: str, **changes: Any) -> str:
    """The token with claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(_unb64(payload)), **changes}
    return header + "." + _b64(json.dumps(claims).encode()) + "." + signature


# -- the counting upstreams -----------------------------------------------------------------------


@dataclass
class Seen:
    """One request an upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Upstream:
    """A plain HTTP upstream (and OpenAI-compatible LLM) that records every request."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    def count(self) -> int:
        return len(self.seen)


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-security",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _upstream_app(up: Upstream) -> web.Application:
    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(
            request.method,
            request.raw_path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        up.seen.append(seen)
        if request.path.endswith("/chat/completions"):
            parsed = seen.json()
            model = parsed.get("model", "?") if isinstance(parsed, dict) else "?"
            return web.json_response(chat_completion(str(model)))
        if request.path.endswith("/models"):
            return web.json_response({"object": "list", "data": []})
        return web.json_response({"ok": True, "path": request.raw_path})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", record)
    return app


@dataclass
class McpUpstream:
    """A real MCP server (the SDK's notes server over Streamable HTTP) that records every
    request reaching it."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    server: uvicorn.Server | None = None

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON-RPC message POSTed to it."""
        found: list[dict[str, Any]] = []
        for seen in list(self.seen):
            parsed = seen.json()
            for message in parsed if isinstance(parsed, list) else [parsed]:
                if isinstance(message, dict):
                    found.append(message)
        return found

    def tool_calls(self) -> list[dict[str, Any]]:
        """The `params` of every `tools/call` it received."""
        return [m.get("params") or {} for m in self.messages() if m.get("method") == "tools/call"]

    def saw_marker(self, marker: object) -> bool:
        """Whether any request it received carried `marker` (a unique argument value)."""
        needle = json.dumps(marker).encode()
        return any(needle in seen.body for seen in list(self.seen))


def _counting(app: Any, sink: list[Seen]) -> Any:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def counted_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    raw = scope.get("raw_path") or scope["path"].encode()
                    sink.append(Seen(scope["method"], raw.decode(), headers, b"".join(chunks)))
            return message

        await app(scope, counted_receive, send)

    return wrapped


# -- the servers of one module --------------------------------------------------------------------


@dataclass
class Servers:
    """The JWKS endpoint, the HTTP/LLM upstream and the MCP server of one test module."""

    background: Background
    idp: Idp
    upstream: Upstream
    mcp: McpUpstream
    _runners: list[web.AppRunner] = field(default_factory=list)
    _mcp_done: concurrent.futures.Future[None] | None = None

    @classmethod
    def start(cls) -> Servers:
        background = Background()
        idp, upstream, mcp = Idp(), Upstream(), McpUpstream()
        idp.add_key("rsa-1", "RS256")
        idp.add_key("ec-1", "ES256")
        idp.add_key("rot-old", "RS256")
        idp.add_key("unpublished", "RS256", publish=False)
        servers = cls(background, idp, upstream, mcp)

        async def jwks(request: web.Request) -> web.Response:
            idp.hits += 1
            return web.json_response(idp.jwks())

        jwks_app = web.Application()
        jwks_app.router.add_get("/jwks.json", jwks)
        runner, port = background.run(_serve_aiohttp(jwks_app))
        servers._runners.append(runner)
        idp.url = f"http://127.0.0.1:{port}/jwks.json"

        runner, port = background.run(_serve_aiohttp(_upstream_app(upstream)))
        servers._runners.append(runner)
        upstream.url = f"http://127.0.0.1:{port}"

        from tests.mcp.servers.notes import build

        app = _counting(build("alpha").streamable_http_app(), mcp.seen)
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        mcp.server = uvicorn.Server(config)
        servers._mcp_done = asyncio.run_coroutine_threadsafe(mcp.server.serve(), background.loop)
        wait_for(lambda: mcp.server is not None and mcp.server.started, what="MCP test server")
        mcp.url = f"http://127.0.0.1:{port}/mcp"
        return servers

    def stop(self) -> None:
        if self.mcp.server is not None:
            self.mcp.server.should_exit = True
            if self._mcp_done is not None:
                self._mcp_done.result(15)
        for runner in self._runners:
            self.background.run(runner.cleanup())
        self.background.close()


# -- the attacker's client ------------------------------------------------------------------------


@dataclass
class Answer:
    """What the gateway answered."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.headers!r}, {self.body[:600]!r})"


async def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: bytes | None = None,
) -> Answer:
    """One request with aiohttp (paths taken as given, never re-normalised)."""
    from yarl import URL

    async with aiohttp.ClientSession(auto_decompress=True) as http:
        async with http.request(
            method,
            URL(url, encoded=True),
            headers=dict(headers or {}),
            json=json_body,
            data=data,
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)


async def raw(port: int, head: bytes, body: bytes = b"") -> Answer:
    """Bytes exactly as given on a raw socket (the request line and headers, without the blank
    line; `Connection: close` is added), and the whole answer (chunked bodies decoded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    head_part, _, rest = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    return Answer(status, headers, rest)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


# -- MCP ------------------------------------------------------------------------------------------


def initialize_message(request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "attacker", "version": "1"},
        },
    }


def tool_call(name: str, arguments: Mapping[str, Any], request_id: int = 7) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": dict(arguments)},
    }


def mcp_headers(
    extra: Mapping[str, str] | None = None, session: str | None = None
) -> dict[str, str]:
    headers = {
        "accept": MCP_ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": MCP_VERSION,
    }
    if session:
        headers["mcp-session-id"] = session
    return {**headers, **(extra or {})}


def rpc_message(answer: Answer) -> dict[str, Any]:
    """The JSON-RPC message of an answer (a JSON body, or the first `data:` of an SSE body)."""
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        for line in answer.body.decode().splitlines():
            if line.startswith("data:") and line[5:].strip():
                message: dict[str, Any] = json.loads(line[5:])
                return message
        raise AssertionError(f"no data in the event stream: {answer!r}")
    parsed: dict[str, Any] = answer.json()
    return parsed


async def mcp_session(url: str, auth: Mapping[str, str]) -> str:
    """Open an MCP session through the gateway as a well-behaved client; its session id."""
    answer = await send("POST", url, headers=mcp_headers(auth), json_body=initialize_message())
    assert answer.status == 200, answer
    assert "result" in rpc_message(answer), answer
    session = answer.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    done = await send("POST", url, headers=mcp_headers(auth, session), json_body=note)
    assert done.status == 202, done
    return session


async def mcp_call(
    url: str, auth: Mapping[str, str], message: Mapping[str, Any], session: str | None = None
) -> Answer:
    return await send("POST", url, headers=mcp_headers(auth, session), json_body=message)


# -- the checks -----------------------------------------------------------------------------------


def assert_openai_error(
    answer: Answer, status: int, error_type: str, code: str | set[str] | None = None
) -> dict[str, Any]:
    """The answer is `status` with an OpenAI error body `{"error": {message, type, param, code}}`
    of this `type` (and `code`, when given: one value or a set of acceptable ones)."""
    assert answer.status == status, answer
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    body = answer.json()
    assert isinstance(body, dict) and set(body) == {"error"}, answer
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), answer
    assert isinstance(error["message"], str) and error["message"], answer
    assert "Traceback" not in error["message"], answer
    assert error["type"] == error_type, answer
    if isinstance(code, str):
        assert error["code"] == code, answer
    elif code is not None:
        assert error["code"] in code, answer
    else:
        assert error["code"] is None or isinstance(error["code"], str), answer
    return error


def assert_anthropic_error(answer: Answer, status: int, error_type: str) -> dict[str, Any]:
    """The answer is `status` with an Anthropic error body `{"type": "error", "error": {type,
    message}}` of this `type`."""
    assert answer.status == status, answer
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    body = answer.json()
    assert isinstance(body, dict) and body.get("type") == "error", answer
    error: dict[str, Any] = body["error"]
    assert error.get("type") == error_type, answer
    assert isinstance(error.get("message"), str) and error["message"], answer
    return error


def assert_challenge(answer: Answer, *, resource_metadata: str | None = None) -> str:
    """A 401 carries a `WWW-Authenticate: Bearer ...` challenge (RFC 9110 §15.5.2)."""
    challenge = answer.headers.get("www-authenticate", "")
    assert challenge == "Bearer" or challenge.startswith("Bearer "), answer
    if resource_metadata is not None:
        assert f'resource_metadata="{resource_metadata}"' in challenge, answer
    return challenge


def assert_rpc_error(
    answer: Answer, status: int, code: int | None = None, request_id: object = None
) -> dict[str, Any]:
    """The answer is `status` with a JSON-RPC error body (`id` the request's, or null when the
    request was refused before it was read)."""
    assert answer.status == status, answer
    message = rpc_message(answer)
    assert message.get("jsonrpc") == "2.0", answer
    assert "result" not in message, answer
    error: dict[str, Any] = message.get("error")  # type: ignore[assignment]
    assert isinstance(error, dict), answer
    assert isinstance(error.get("code"), int), answer
    assert isinstance(error.get("message"), str) and error["message"], answer
    assert message.get("id") in (request_id, None), answer
    if code is not None:
        assert error["code"] == code, answer
    return error


BACKENDS: Final = """backends:
  llm:
    type: llm
    providers:
      up: {{type: openai_compatible, base_url: '{upstream}/v1'}}
    models:
      - {{name: gpt-4o-mini, targets: [{{provider: up}}]}}
      - {{name: gpt-4o, targets: [{{provider: up}}]}}
  tools:
    type: mcp
    servers:
      alpha: {{type: streamable_http, url: '{mcp}'}}
  web:
    type: http
    url: '{upstream}'
"""
"""The backends every security module attacks (a `str.format` template: `upstream`, `mcp`):
an OpenAI-compatible LLM backend, an MCP backend and a plain HTTP backend on the recording
upstreams."""
