"""The request log (issue 10, opt-in): what each request carried — LLM prompts and completions,
MCP arguments and results, A2A messages — redacted, bounded and written to the embedded store
off the request path.

Two halves:

- **Capture** (on the request path, cheap): the observers that want it (`RequestLogObserver`,
  and `AccessLogObserver` for the MCP method and tool) open one `Capture` per request in a
  context variable; backends hand it what they already hold (`note_request(raw)`,
  `note_response(body)`, `tap_stream(stream)`, `Capture.wrap_mcp`). Without an observer each call
  site costs one context-variable read. Contents are only referenced, never copied or parsed
  here; streams keep their chunks up to the entry bound.
- **Writing** (`RequestLogWriter`, one thread): entries wait in a bounded queue (full: dropped,
  counted, logged once), and are parsed, redacted (`crossway.telemetry.redaction`), cut at
  `max_entry_bytes` and inserted in batches into `$CROSSWAY_DATA_DIR/request-log.sqlite3`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import orjson

from crossway.config.telemetry_logs import RedactionConfig, RequestLogConfig
from crossway.telemetry.redaction import Redactor

if TYPE_CHECKING:
    from crossway.server.context import RequestContext
    from crossway.types import Scope

log = logging.getLogger("crossway.request_log")

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

TRUNCATED_MARK: Final = "...[truncated]"
"""Appended to contents cut at `max_entry_bytes`."""
PRUNE_INTERVAL_SECONDS: Final = 30.0
"""How often the writer deletes entries beyond `max_rows` / `max_age`."""
_STOP: Final = object()


# -- capture ------------------------------------------------------------------------------------


class Capture:
    """What one request carried, as the backends noted it (references, not copies)."""

    __slots__ = (
        "calls",
        "chunk_bytes",
        "chunks",
        "contents",
        "limit",
        "mcp_method",
        "mcp_tool",
        "request",
        "response",
        "trace_id",
        "truncated",
        "users",
    )

    def __init__(self) -> None:
        self.users = 0
        self.contents = False
        """Whether contents are kept (the request log is on), not only the MCP method/tool."""
        self.limit = 0
        self.trace_id: str | None = None
        self.request: Any = None
        self.response: Any = None
        self.chunks: list[bytes] | None = None
        self.chunk_bytes = 0
        self.truncated = False
        self.calls: list[dict[str, Any]] | None = None
        self.mcp_method: str | None = None
        self.mcp_tool: str | None = None

    @property
    def has_content(self) -> bool:
        return self.request is not None or self.response is not None or bool(self.calls)

    def chunk(self, data: bytes) -> None:
        """One streamed chunk of the response, kept up to the entry bound."""
        if self.chunks is None:
            self.chunks = []
        room = self.limit - self.chunk_bytes
        if room <= 0:
            self.truncated = True
            return
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self.chunks.append(data)
        self.chunk_bytes += len(data)

    def wrap_mcp(self, method: str, handler: _F) -> _F:
        """`handler` (an MCP request handler called as `(federation, session, params, call)`)
        with its method, tool, arguments and result noted here."""

        async def noted(federation: Any, session: Any, params: Any, call: Any) -> Any:
            return await self.mcp_call(method, params, handler(federation, session, params, call))

        return cast(_F, noted)

    async def mcp_call(self, method: str, params: dict[str, Any], call: Awaitable[_T]) -> _T:
        """Await one MCP request's handler, noting its method, tool, arguments and result."""
        if self.mcp_method is None:
            self.mcp_method = method
            if method == "tools/call":
                name = params.get("name")
                self.mcp_tool = name if isinstance(name, str) else None
        if not self.contents or self.users == 0:
            return await call
        entry: dict[str, Any] = {"method": method, "params": params}
        if self.calls is None:
            self.calls = []
        self.calls.append(entry)
        try:
            result = await call
        except BaseException as exc:
            entry["error"] = str(exc) or type(exc).__name__
            raise
        entry["result"] = result
        return result


_CURRENT: Final[contextvars.ContextVar[Capture | None]] = contextvars.ContextVar(
    "crossway_capture", default=None
)


def current() -> Capture | None:
    """This request's capture, or None when nothing captures."""
    return _CURRENT.get()


def join_capture(contents: bool, limit: int = 0) -> Capture:
    """This request's capture, opened by the first observer that asks (in `begin`); each
    caller releases it in `end`. A capture left by an earlier request of the same task is
    finished (no users) and replaced."""
    cap = _CURRENT.get()
    if cap is None or cap.users == 0:
        cap = Capture()
        cap.trace_id = current_trace_id()
        _CURRENT.set(cap)
    cap.users += 1
    if contents:
        cap.contents = True
        cap.limit = max(cap.limit, limit)
    return cap


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), when tracing runs; OpenTelemetry is only
    asked if something else imported it already (tracing off: never imported)."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    try:
        context = otel.get_current_span().get_span_context()
    except Exception:
        return None
    return format(context.trace_id, "032x") if context.is_valid else None


def note_request(body: Any) -> None:
    """The request's body (bytes or a decoded JSON value) as the client sent it."""
    cap = _CURRENT.get()
    if cap is not None and cap.contents and cap.users:
        cap.request = body


def note_response(body: Any) -> None:
    """The response body (bytes or a JSON value) as the client got it."""
    cap = _CURRENT.get()
    if cap is not None and cap.contents and cap.users:
        cap.response = body


def tap_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks` (a response stream), also kept in the capture up to its bound; `chunks`
    itself when nothing captures."""
    cap = _CURRENT.get()
    if cap is None or not cap.contents or not cap.users:
        return chunks
    return _tapped(chunks, cap)


async def _tapped(chunks: AsyncIterator[bytes], cap: Capture) -> AsyncIterator[bytes]:
    try:
        async for data in chunks:
            cap.chunk(data)
            yield data
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


# -- entries ------------------------------------------------------------------------------------


GUARD_DECISIONS: Final = "guard.decisions"
"""`ctx.attrs` key where the guardrails policy lists its decisions (kept in the log store)."""


@dataclass(slots=True)
class Entry:
    """One request's metadata and captured contents, queued for the writer."""

    time: float
    request_id: str | None
    trace_id: str | None
    route: str
    backend: str | None
    kind: str
    method: str
    path: str
    status: int
    duration_ms: float
    key: str | None
    user: str | None
    team: str | None
    model: str | None
    provider: str | None
    tool: str | None
    agent: str | None
    cost: float | None
    usage: dict[str, Any] | None
    request: Any
    response: Any
    chunks: list[bytes] | None
    truncated: bool
    guards: list[dict[str, Any]] | None = None
    """The guard decisions (guard, detector, action, direction, count), never the text."""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def request_facts(ctx: RequestContext | None) -> dict[str, Any]:
    """Who called what, from the request context: key, user, team, model, tool, agent."""
    if ctx is None:
        return {}
    attrs = ctx.attrs
    key = ctx.key or {}
    identity = ctx.identity or {}
    a2a = attrs.get("a2a") or {}
    mcp = attrs.get("mcp") or {}
    tool = mcp.get("tool") if isinstance(mcp, dict) else None
    return {
        "key": _text(key.get("name")),
        "user": _text(key.get("user")) or _text(identity.get("user")),
        "team": _text(key.get("team")) or _text(identity.get("team")),
        "model": _text(attrs.get("llm.model")),
        "provider": _text(attrs.get("llm.provider")),
        "tool": _text(tool.get("name")) if isinstance(tool, dict) else None,
        "agent": _text(a2a.get("agent")) if isinstance(a2a, dict) else None,
        "a2a_method": _text(a2a.get("method")) if isinstance(a2a, dict) else None,
    }


def _kind(facts: dict[str, Any], cap: Capture) -> str:
    if facts.get("model"):
        return "llm"
    if cap.calls or cap.mcp_method:
        return "mcp"
    if facts.get("agent"):
        return "a2a"
    return "http"


# -- the observer -------------------------------------------------------------------------------


class RequestLogObserver:
    """Opens each request's capture and queues what it caught for the writer."""

    def __init__(self, config: RequestLogConfig, redaction: RedactionConfig | None = None) -> None:
        self.config = config
        self.writer = RequestLogWriter(config, redaction or RedactionConfig())

    def begin(self, scope: Scope) -> Capture:
        return join_capture(True, self.config.max_entry_bytes)

    def end(
        self,
        state: Any,
        scope: Scope,
        ctx: RequestContext | None,
        route: str,
        status: int,
        seconds: float,
    ) -> None:
        cap: Capture = state
        cap.users -= 1
        if not cap.has_content and cap.chunks is None:
            return
        facts = request_facts(ctx)
        tool = facts["tool"] or cap.mcp_tool
        calls = cap.calls
        request: Any = cap.request
        response: Any = cap.response
        if calls:
            request = [{"method": c["method"], "params": c["params"]} for c in calls]
            response = [{k: v for k, v in c.items() if k in ("result", "error")} for c in calls]
            if len(calls) == 1:
                request, response = request[0], response[0]
        entry = Entry(
            time=time.time() - seconds,
            request_id=ctx.request_id if ctx is not None else None,
            trace_id=cap.trace_id,
            route=route,
            backend=ctx.backend if ctx is not None else None,
            kind=_kind(facts, cap),
            method=str(scope.get("method", "")),
            path=str(scope.get("path", "")),
            status=status,
            duration_ms=round(seconds * 1000.0, 3),
            key=facts["key"],
            user=facts["user"],
            team=facts["team"],
            model=facts["model"],
            provider=facts["provider"],
            tool=tool,
            agent=facts["agent"],
            cost=ctx.attrs.get("llm.cost") if ctx is not None else None,
            usage=ctx.attrs.get("llm.usage") if ctx is not None else None,
            request=request,
            response=response,
            chunks=cap.chunks,
            truncated=cap.truncated,
            guards=ctx.attrs.get(GUARD_DECISIONS) if ctx is not None else None,
        )
        self.writer.put(entry)

    async def close(self) -> None:
        await self.writer.close()


# -- the writer ---------------------------------------------------------------------------------


def default_request_log_path() -> Path:
    """`$CROSSWAY_DATA_DIR/request-log.sqlite3`, the data dir defaulting to `./.crossway`."""
    from crossway.store.request_log_sqlite import default_path

    return default_path()


class RequestLogWriter:
    """A bounded queue and one thread writing its entries to SQLite in batches."""

    def __init__(self, config: RequestLogConfig, redaction: RedactionConfig) -> None:
        self.config = config
        self.redactor = Redactor(redaction.patterns, redaction.fields)
        self.path = Path(config.path) if config.path else default_request_log_path()
        self.dropped = 0
        """Entries dropped because the queue was full."""
        self.written = 0
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._warned_full = False
        self._warned_error = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, entry: Entry) -> None:
        """Queue one entry (never blocks: a full queue drops it)."""
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "request log: the write queue is full (%d entries); dropping entries "
                    "until it drains (counted; logged once)",
                    self.config.queue_size,
                )

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="crossway-request-log", daemon=True
                )
                self._thread.start()

    async def close(self) -> None:
        """Write what is queued, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(thread.join)
        self._thread = None

    def _run(self) -> None:
        from crossway.store.request_log_sqlite import RequestLogFile

        store = RequestLogFile(self.path)
        pruned = 0.0
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                batch: list[Entry] = []
                taken = 1
                if first is _STOP:
                    stopping = True
                else:
                    batch.append(first)
                deadline = time.monotonic() + self.config.flush_interval
                while not stopping and len(batch) < self.config.batch_size:
                    wait = deadline - time.monotonic()
                    try:
                        item = (
                            self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                        )
                    except queue.Empty:
                        break
                    taken += 1
                    if item is _STOP:
                        stopping = True
                    else:
                        batch.append(item)
                try:
                    if batch:
                        store.insert([self.row(e) for e in batch])
                        self.written += len(batch)
                    now = time.monotonic()
                    if stopping or now - pruned > PRUNE_INTERVAL_SECONDS:
                        pruned = now
                        store.prune(self.config.max_rows, time.time() - self.config.max_age)
                except Exception as exc:
                    self.failed += len(batch)
                    if not self._warned_error:
                        self._warned_error = True
                        log.error(
                            "request log: cannot write to %s: %s (entries are dropped; logged "
                            "once)",
                            self.path,
                            exc,
                        )
                finally:
                    for _ in range(taken):
                        self._queue.task_done()
        finally:
            store.close()

    # -- one entry, made storable (in the writer thread) ------------------------------------

    def row(self, e: Entry) -> dict[str, Any]:
        """The entry as the store's columns: contents decoded, redacted and cut to the bound."""
        redact = self.redactor
        request = redact.value(_decoded(e.request))
        response: Any
        if e.chunks is not None:
            response = _stream(b"".join(e.chunks))
        else:
            response = _decoded(e.response)
        response = redact.value(response)
        request_text = orjson.dumps(request)
        response_text = orjson.dumps(response)
        limit = self.config.max_entry_bytes
        truncated = e.truncated
        if len(request_text) + len(response_text) > limit:
            truncated = True
            request_text, response_text = _cut(request_text, response_text, limit)
        return {
            "time": e.time,
            "request_id": e.request_id,
            "trace_id": e.trace_id,
            "route": e.route,
            "backend": e.backend,
            "kind": e.kind,
            "method": e.method,
            "path": redact.text(e.path),
            "status": e.status,
            "duration_ms": e.duration_ms,
            "key": e.key,
            "user": e.user,
            "team": e.team,
            "model": e.model,
            "provider": e.provider,
            "tool": e.tool,
            "agent": e.agent,
            "cost": e.cost if isinstance(e.cost, (int, float)) else None,
            "usage": orjson.dumps(e.usage).decode() if e.usage else None,
            "request": request_text.decode(),
            "response": response_text.decode(),
            "truncated": int(truncated),
            "guards": orjson.dumps(e.guards).decode() if e.guards else None,
        }


def _decoded(value: Any) -> Any:
    """Bytes as the JSON they hold, else as text; anything else as is."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return data.decode("utf-8", "replace")
    return value


def _stream(raw: bytes) -> dict[str, Any]:
    """A streamed response: the text its events carried (OpenAI Chat, Responses, Anthropic)
    when it could be assembled, and the raw events otherwise."""
    text: list[str] = []
    for line in raw.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            piece = _delta_text(event)
            if piece:
                text.append(piece)
    if text:
        return {"stream": True, "text": "".join(text)}
    return {"stream": True, "events": raw.decode("utf-8", "replace")}


def _delta_text(event: dict[str, Any]) -> str | None:
    choices = event.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            return str(delta["content"])
        return None
    kind = event.get("type")
    if kind == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("text"), str):
            return str(delta["text"])
    if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
        return str(event["delta"])
    return None


def _cut(request: bytes, response: bytes, limit: int) -> tuple[bytes, bytes]:
    """Both contents within `limit` bytes together: the request keeps at most half unless the
    response needs less; a cut one is its first bytes (no longer JSON) + `TRUNCATED_MARK`."""
    mark = TRUNCATED_MARK.encode()
    room = max(limit - 2 * len(mark), 0)
    req_room = max(room // 2, room - len(response))
    res_room = room - min(len(request), req_room)

    def cut(data: bytes, n: int) -> bytes:
        if len(data) <= n:
            return data
        return data[:n].decode("utf-8", "ignore").encode() + mark

    return cut(request, req_room), cut(response, res_room)


__all__ = [
    "Capture",
    "Entry",
    "RequestLogObserver",
    "RequestLogWriter",
    "current",
    "current_trace_id",
    "join_capture",
    "note_request",
    "note_response",
    "request_facts",
    "tap_stream",
]
