"""Guard checks made by another service: an OpenAI-compatible moderation endpoint, a webhook.

    ModerationCheck   POST {url} {"input": [texts], "model": ...}  ->  results[].flagged/categories
    WebhookCheck      POST {url} {"guard", "detector", "direction", "texts"}
                      ->  {"action": "allow"} | {"action": "block", "reason": "..."}
                          | {"action": "rewrite", "texts": [...]}   (same length and order)

Both send through Crossway's one outbound client (`crossway.proxy.client`: TLS per service,
redirects are answers and never followed, no cookie store) and are bounded as a whole by the
detector's `timeout`. They never raise for the service's sake: a service that is down, slow,
answers a non-2xx status, an answer too large, or anything but the documented JSON gives
`ExternalVerdict(failed=...)`. The verdict is returned *as found*, with the detector's
`fail` mode NOT yet applied; the policy applies it (`verdict.applied(check.fail)` does it
the documented way: `closed` turns a failure into a block, `open` into an allow, and both keep
`failed` set so the decision can be logged and counted).

What a verdict does under the detector's action is the policy's
(`crossway.policy.guardrails`): `blocked` refuses the content when the action is `block`,
`rewritten` is written back into the slots under `block` and `mask`, `log` only records, and
a failure refuses (`fail: closed`) or lets the content through (`fail: open`). Nothing here
logs or returns the texts themselves: a block reason is the service's category names or its
own short reason, cleaned and cut to `MAX_REASON_CHARS`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
import orjson

from crossway.config.common import Timeouts, UpstreamTls
from crossway.config.guardrails import (
    Action,
    DetectorConfig,
    Direction,
    FailMode,
    ModerationDetector,
    WebhookDetector,
)
from crossway.errors import GatewayError, UpstreamTimeout
from crossway.proxy import client
from crossway.proxy.outbound import effective_tls, ssl_context

log = logging.getLogger("crossway.guard.external")

MAX_ANSWER_BYTES: Final = 1024 * 1024
"""Largest answer read from a service, besides the allowance for the content itself
(`ANSWER_BYTES_PER_INPUT_BYTE`); a larger one is a failure, never read whole."""
ANSWER_BYTES_PER_INPUT_BYTE: Final = 2
"""A webhook's rewrite may be longer than what it got (JSON escapes, longer placeholders):
its answer may hold up to this many bytes per byte sent, on top of `MAX_ANSWER_BYTES`."""
ERROR_BODY_BYTES: Final = 4096
"""Most of a non-2xx answer read (and dropped) so the connection can be reused."""
MAX_REASON_CHARS: Final = 200
"""Longest block reason passed on (it reaches the caller's error message)."""
DEFAULT_REASON: Final = "flagged"
CLIENT_TIMER_MARGIN: Final = 1.0
"""Seconds the outbound client's own timers run past a check's `timeout`."""
_JSON_HEADERS: Final = (("content-type", "application/json"), ("accept", "application/json"))


@dataclass(slots=True)
class ExternalVerdict:
    """What a service said about a list of texts. At most one field is set; none: allowed."""

    blocked: str | None = None
    """Why the content is refused (category names, the webhook's reason), never the text."""
    rewritten: list[str] | None = None
    """Replacement texts, as many as were checked and in their order."""
    failed: str | None = None
    """Why the check could not be made (down, slow, an error status, garbage)."""

    def applied(self, fail: FailMode) -> ExternalVerdict:
        """The verdict with a failure resolved by `fail`: `closed` blocks (the reason says the
        check was unavailable), `open` allows. `failed` stays set, for logs and metrics."""
        if self.failed is None:
            return self
        if fail == "closed":
            return ExternalVerdict(blocked="check unavailable", failed=self.failed)
        return ExternalVerdict(failed=self.failed)


class ExternalCheck(Protocol):
    """One configured external check (see the module docstring for the verdicts)."""

    name: str
    fail: FailMode

    def action_for(self, direction: Direction) -> Action: ...

    async def check(
        self, texts: list[str], direction: Direction, *, request_id: str | None = None
    ) -> ExternalVerdict: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Failed(Exception):
    """The service gave no usable answer (the message says why, without content)."""


class _HttpCheck:
    """What both checks share: the POST through the outbound client, bounded and capped."""

    kind: str = "external"

    def __init__(self, config: ModerationDetector | WebhookDetector, guard: str) -> None:
        self.config = config
        self.name = config.name or config.type
        self.guard = guard
        self.url = config.url
        self.fail: FailMode = config.fail
        self.timeout = config.timeout
        self.tls: UpstreamTls | None = config.tls
        # The overall bound is `asyncio.timeout(timeout)`; the client's own timers are set a
        # little later, so the bound is what fires (one message whichever phase was slow).
        phase = config.timeout + CLIENT_TIMER_MARGIN
        self.timeouts = Timeouts(connect=phase, first_byte=phase, idle=phase)
        headers = list(_JSON_HEADERS)
        if config.api_key is not None:
            headers.append(("authorization", f"Bearer {config.api_key.get_secret_value()}"))
        self.headers = headers
        self._failing = False

    def action_for(self, direction: Direction) -> Action:
        return self.config.action_for(direction)

    async def start(self) -> None:
        """Build the outbound client for this service's TLS setting now, so a certificate
        file that cannot be read is reported at load (one error line; every check then fails
        and `fail` decides) rather than at the first request."""
        try:
            if client.engine_for(self.tls) == "reqwest":
                client.get_client(self.tls, self.timeouts)
            else:
                tls = effective_tls(self.tls)
                if tls is not None:
                    ssl_context(tls)
        except GatewayError as exc:
            log.error("guard %s: %s check %s: %s", self.guard, self.kind, self.name, exc.message)

    async def close(self) -> None:
        """Nothing of its own to close: the pooled clients belong to `crossway.proxy.client`
        (closed at worker shutdown)."""

    async def _post(
        self, body: bytes, limit: int, request_id: str | None, extra: list[tuple[str, str]]
    ) -> bytes:
        """POST `body` and return the whole 2xx answer (at most `limit` bytes), or raise
        `_Failed`."""
        headers = [*self.headers, *extra]
        if request_id:
            headers.append(("x-request-id", request_id))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await client.send(
                    "POST", self.url, headers, body, self.timeouts, self.tls, stream=False
                )
                status = resp.status
                if not 200 <= status < 300:
                    await client.read_body(resp, self.timeouts, ERROR_BODY_BYTES)
                    if 300 <= status < 400:
                        raise _Failed(f"answered HTTP {status} (redirects are not followed)")
                    raise _Failed(f"answered HTTP {status}")
                length = resp.content_length
                if length is not None and length > limit:
                    await client.discard(resp)
                    raise _Failed(f"answer larger than {limit} bytes")
                data = await client.read_body(resp, self.timeouts, limit)
        except (TimeoutError, UpstreamTimeout):
            raise _Failed(f"no answer within {self.timeout:g} s") from None
        except GatewayError as exc:
            raise _Failed(exc.message) from None
        except OSError as exc:  # pragma: no cover - the client maps these; belt and braces
            raise _Failed(f"unreachable: {type(exc).__name__}") from None
        if len(data) > limit:
            raise _Failed(f"answer larger than {limit} bytes")
        return data

    def _failure(self, reason: str) -> ExternalVerdict:
        if not self._failing:  # one line per outage, not one per request
            self._failing = True
            log.warning(
                "guard %s: %s check %s failing (fail %s): %s",
                self.guard,
                self.kind,
                self.name,
                self.fail,
                reason,
            )
        return ExternalVerdict(failed=reason)

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("guard %s: %s check %s answers again", self.guard, self.kind, self.name)


# -- OpenAI-compatible moderation ----------------------------------------------------------------


class _ModerationResult(msgspec.Struct):
    flagged: bool
    categories: dict[str, bool | None] = msgspec.field(default_factory=dict)


class _ModerationAnswer(msgspec.Struct):
    results: list[_ModerationResult]


_moderation_answer: Final = msgspec.json.Decoder(_ModerationAnswer)


class ModerationCheck(_HttpCheck):
    """An OpenAI-moderation-compatible endpoint: `POST {url}` (the whole endpoint URL, e.g.
    `https://api.openai.com/v1/moderations`) with `{"input": [texts], "model": ...}` and
    `Authorization: Bearer {api_key}`; the answer's `results` (one per input) decide.

    Without `categories` configured, any `flagged` result blocks; with them, only a result
    whose `categories` has one of them (or a subcategory: `hate` covers `hate/threatening`)
    true. The reason is the names of the categories found true."""

    kind = "moderation"

    def __init__(self, config: ModerationDetector, guard: str) -> None:
        super().__init__(config, guard)
        self.model = config.model
        self.categories = tuple(config.categories) if config.categories is not None else None

    async def check(
        self, texts: list[str], direction: Direction, *, request_id: str | None = None
    ) -> ExternalVerdict:
        inputs = [t for t in texts if t.strip()]
        if not inputs:
            return ExternalVerdict()
        request: dict[str, object] = {"input": inputs}
        if self.model is not None:
            request["model"] = self.model
        try:
            body = orjson.dumps(request)
        except orjson.JSONEncodeError:
            return self._failure("the content cannot be sent as JSON")
        limit = MAX_ANSWER_BYTES + ERROR_BODY_BYTES * len(inputs)
        try:
            data = await self._post(body, limit, request_id, [])
            try:
                answer = _moderation_answer.decode(data)
            except msgspec.DecodeError:
                raise _Failed("answered something that is not a moderation result") from None
            if len(answer.results) != len(inputs):
                raise _Failed(f"answered {len(answer.results)} results for {len(inputs)} inputs")
        except _Failed as exc:
            return self._failure(str(exc))
        self._answered()
        return ExternalVerdict(blocked=self._reason(answer.results))

    def _reason(self, results: list[_ModerationResult]) -> str | None:
        found: list[str] = []
        wanted = self.categories
        blocked = False
        for result in results:
            if wanted is None and not result.flagged:
                continue
            for category, value in result.categories.items():
                if value is not True:
                    continue
                if wanted is None or any(_within(category, w) for w in wanted):
                    blocked = True
                    if category not in found:
                        found.append(category)
            if wanted is None:
                blocked = True
        if not blocked:
            return None
        return _clean(", ".join(found)) or DEFAULT_REASON


def _within(category: str, wanted: str) -> bool:
    return category == wanted or category.startswith(wanted + "/")


# -- the webhook --------------------------------------------------------------------------------


class _Allow(msgspec.Struct, tag_field="action", tag="allow"):
    pass


class _Block(msgspec.Struct, tag_field="action", tag="block"):
    reason: str | None = None


class _Rewrite(msgspec.Struct, tag_field="action", tag="rewrite"):
    texts: list[str]


_webhook_answer: Final = msgspec.json.Decoder(_Allow | _Block | _Rewrite)


class WebhookCheck(_HttpCheck):
    """A webhook with Crossway's contract (docs/guardrails.md, "External checks"):

    request  `POST {url}`, `{"guard": "...", "detector": "...", "direction": "request" |
             "response", "texts": ["...", ...]}`, with `Authorization: Bearer {api_key}` when
             set, the configured `headers`, and `x-request-id`;
    answer   2xx with `{"action": "allow"}`, `{"action": "block", "reason": "..."}` or
             `{"action": "rewrite", "texts": [...]}` (exactly as many texts, in order).

    Anything else (another shape, another number of texts, another status) is a failure."""

    kind = "webhook"

    def __init__(self, config: WebhookDetector, guard: str) -> None:
        super().__init__(config, guard)
        self.extra = [(k, v.get_secret_value()) for k, v in config.headers.items()]

    async def check(
        self, texts: list[str], direction: Direction, *, request_id: str | None = None
    ) -> ExternalVerdict:
        if not texts:
            return ExternalVerdict()
        request = {
            "guard": self.guard,
            "detector": self.name,
            "direction": direction,
            "texts": texts,
        }
        try:
            body = orjson.dumps(request)
        except orjson.JSONEncodeError:
            return self._failure("the content cannot be sent as JSON")
        limit = MAX_ANSWER_BYTES + ANSWER_BYTES_PER_INPUT_BYTE * len(body)
        try:
            data = await self._post(body, limit, request_id, self.extra)
            try:
                answer = _webhook_answer.decode(data)
            except msgspec.DecodeError:
                raise _Failed("answered something that is not allow, block or rewrite") from None
            if isinstance(answer, _Rewrite) and len(answer.texts) != len(texts):
                raise _Failed(f"rewrote {len(answer.texts)} texts for {len(texts)} sent")
        except _Failed as exc:
            return self._failure(str(exc))
        self._answered()
        if isinstance(answer, _Block):
            return ExternalVerdict(blocked=_clean(answer.reason or "") or DEFAULT_REASON)
        if isinstance(answer, _Rewrite) and answer.texts != texts:
            return ExternalVerdict(rewritten=answer.texts)
        return ExternalVerdict()


def _clean(reason: str) -> str:
    """A service's reason made safe for an error message: printable, one line, short."""
    text = " ".join("".join(c if c.isprintable() else " " for c in reason).split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return text


def build_external(config: DetectorConfig, guard: str = "guardrails") -> ExternalCheck | None:
    """The external check for a `moderation` or `webhook` detector of the guard named
    `guard`; None for the local kinds (PII, secrets, ...)."""
    if isinstance(config, ModerationDetector):
        return ModerationCheck(config, guard)
    if isinstance(config, WebhookDetector):
        return WebhookCheck(config, guard)
    return None


__all__ = [
    "ExternalCheck",
    "ExternalVerdict",
    "ModerationCheck",
    "WebhookCheck",
    "build_external",
]
