"""External authorization: ask an HTTP service (a team's own policy engine) per request.

Crossway POSTs one JSON object describing the request:

```json
{"method": "POST", "path": "/v1/chat/completions", "query": "", "route": "llm",
 "source": "10.1.2.3", "headers": {"authorization": "Bearer ..."}, "identity": null}
```

(`headers` holds only the configured `headers`; `identity` is what earlier policies
established.) A 2xx answer allows; when it is a JSON object whose `identity` is an object with
a `sub`, that becomes the caller's identity (`method: "ext_authz"`). 401 and 403 refuse with
that status (a string `reason` in a JSON answer is passed on). Anything else — another status,
a timeout, a refused connection, an oversized answer — is an error: refused with 503
`service_unavailable`, or let through with `fail_open`.

Decisions (allow and deny, not errors) are cached for `cache_seconds`, keyed by the SHA-256 of
the JSON sent — exactly the facts the service decided on (credential headers, method, path,
query, source, identity) — and identical questions in flight share one call. The call goes
through the one outbound client factory (`crossway.proxy.outbound`): no redirects, no cookies.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Final

import aiohttp
import orjson

from crossway.config.policy import ExtAuthzConfig
from crossway.errors import Forbidden, GatewayError, ServiceUnavailable, Unauthenticated
from crossway.policy.authn import consume, set_identity
from crossway.policy.base import Policy, Reply
from crossway.proxy.outbound import OutboundClient
from crossway.server.context import RequestContext
from crossway.types import Scope

log = logging.getLogger("crossway.policy.ext_authz")

MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_CACHED_DECISIONS: Final = 10_000
MAX_REASON_CHARS: Final = 200
_JSON_HEADERS: Final = {"content-type": "application/json", "accept": "application/json"}

Decision = tuple[int, dict[str, Any] | None, str | None]
"""(status: 200 allow / 401 / 403, identity or None, reason or None)."""


class AuthzUnavailable(Exception):
    """The service gave no decision (down, timed out, answered an error)."""


class ExtAuthzPolicy(Policy):
    """Allow or refuse each request by asking `url`; fail closed (503) unless `fail_open`."""

    method = "ext_authz"

    def __init__(self, config: ExtAuthzConfig) -> None:
        self.url = config.url
        self.fail_open = config.fail_open
        self.ttl = config.cache_seconds
        self.forward = config.forward
        self.headers = tuple(h.lower().encode("latin-1") for h in config.headers)
        self.client = OutboundClient(
            tls=config.tls,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
        )
        self._cache: OrderedDict[bytes, tuple[Decision, float]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Task[Decision]] = {}

    async def close(self) -> None:
        await self.client.close()

    def _question(self, scope: Scope, ctx: RequestContext) -> tuple[bytes, list[bytes]]:
        sent: dict[str, str] = {}
        present: list[bytes] = []
        wanted = self.headers
        for name, value in scope["headers"]:
            if name in wanted:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                sent[key] = f"{sent[key]}, {text}" if key in sent else text
                present.append(name)
        client = scope.get("client")
        source = ctx.client_ip or (client[0] if client else "")
        body = orjson.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "query": scope.get("query_string", b"").decode("latin-1"),
                "route": ctx.route,
                "source": source,
                "headers": sent,
                "identity": ctx.identity,
            },
            default=str,
        )
        return body, present

    async def on_request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        body, present = self._question(scope, ctx)
        key = hashlib.sha256(body).digest()
        try:
            status, identity, reason = await self._decide(key, body, ctx.request_id)
        except AuthzUnavailable as exc:
            if not self.fail_open:
                raise ServiceUnavailable(
                    "the authorization service is unavailable", code="service_unavailable"
                ) from None
            log.warning("route %s: ext_authz failing open: %s", ctx.route, exc)
            return None
        if status == 401:
            raise Unauthenticated(reason or "not authenticated", code="unauthorized")
        if status == 403:
            raise Forbidden(reason or "not allowed", code="forbidden")
        if identity is not None:
            extra = {k: v for k, v in identity.items() if k not in ("sub", "method")}
            set_identity(ctx, str(identity["sub"]), self.method, **extra)
        if not self.forward:
            for name in present:
                consume(ctx, name)
        return None

    async def _decide(self, key: bytes, body: bytes, request_id: str) -> Decision:
        if self.ttl > 0:
            hit = self._cache.get(key)
            if hit is not None:
                if hit[1] > time.monotonic():
                    return hit[0]
                del self._cache[key]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask(key, body, request_id))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._forget_pending(key, done))
        return await asyncio.shield(task)

    def _forget_pending(self, key: bytes, done: asyncio.Task[Decision]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure nobody awaited is not "lost"

    async def _ask(self, key: bytes, body: bytes, request_id: str) -> Decision:
        headers = {**_JSON_HEADERS, "x-request-id": request_id}
        try:
            async with self.client.post(self.url, data=body, headers=headers) as response:
                status = response.status
                answer = await response.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, GatewayError, OSError) as exc:
            raise AuthzUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if len(answer) > MAX_ANSWER_BYTES:
            raise AuthzUnavailable(f"{self.url}: answer larger than {MAX_ANSWER_BYTES} bytes")
        if 200 <= status < 300:
            decision: Decision = (200, _identity(answer), None)
        elif status in (401, 403):
            decision = (status, None, _reason(answer))
        else:
            raise AuthzUnavailable(f"{self.url} answered {status}")
        if self.ttl > 0:
            self._cache[key] = (decision, time.monotonic() + self.ttl)
            while len(self._cache) > MAX_CACHED_DECISIONS:
                self._cache.popitem(last=False)
        return decision


def _json_object(answer: bytes) -> dict[str, Any] | None:
    if not answer:
        return None
    try:
        value = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _identity(answer: bytes) -> dict[str, Any] | None:
    data = _json_object(answer)
    identity = data.get("identity") if data is not None else None
    if isinstance(identity, dict) and isinstance(identity.get("sub"), (str, int)):
        return identity
    return None


def _reason(answer: bytes) -> str | None:
    data = _json_object(answer)
    reason = data.get("reason") if data is not None else None
    return reason[:MAX_REASON_CHARS] if isinstance(reason, str) and reason else None


__all__ = ["ExtAuthzPolicy"]
