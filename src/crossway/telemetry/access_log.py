"""Access logs (issue 10): one JSON line per request, to stdout or a rotated file.

A line holds (keys absent when they do not apply):

    time, request_id, trace_id, method, path, route, backend, status, duration_ms, client_ip,
    identity {sub, method}, key {name, user, team}, team, user,
    llm {model, provider, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost},
    mcp {method, tool}, a2a {agent, method}

plus the configured `fields` (CEL over `request`, `jwt`, `key`, `identity`, `llm`, `mcp`,
`a2a` and `response`), when the configured `filter` is true.

The request path only builds a small dict (and evaluates the configured expressions); the line
is serialized (orjson), redacted and written by one writer thread. The queue between them is
bounded: when it is full, lines are dropped and counted (logged once). `path` never includes
the query string; every string passes the redaction rules; key material is never read.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson
from cel_expr_python import cel as _cel

from crossway.config.telemetry_logs import AccessLogConfig, RedactionConfig
from crossway.policy.cel import VARIABLES
from crossway.server.context import RequestContext
from crossway.telemetry.redaction import Redactor
from crossway.telemetry.request_log import GUARD_DECISIONS, Capture, join_capture, request_facts
from crossway.types import Scope

log = logging.getLogger("crossway.access_log")

WRITE_INTERVAL_SECONDS: Final = 0.05
"""How often the writer thread writes what was queued (a line is on disk within this time)."""
WAKE_AT_LINES: Final = 512
"""A queue this long wakes the writer at once."""

FIELD_VARIABLES: Final = (*VARIABLES, "response")
"""What `fields` and `filter` see: the attribute model plus `response` (`status`,
`duration_ms`)."""
_DYN_MAP: Final = _cel.Type.Map(_cel.Type.STRING, _cel.Type.DYN)
_ENV: Final = _cel.NewEnv(variables={name: _DYN_MAP for name in FIELD_VARIABLES})
_EMPTY: Final[Mapping[str, Any]] = {}


@dataclass(frozen=True, slots=True)
class Expression:
    """One compiled `fields` or `filter` expression."""

    name: str
    source: str
    program: Any


def compile_expression(source: str, *, boolean: bool = False, name: str = "") -> Expression:
    """Compile a field (any type) or filter (`boolean`) expression; `ValueError` if invalid."""
    try:
        program = _ENV.compile(source)
    except RuntimeError as exc:
        raise ValueError(str(exc).removeprefix("INVALID_ARGUMENT: ").strip()) from None
    if boolean:
        returns = program.return_type()
        if returns != _cel.Type.BOOL and returns != _cel.Type.DYN:
            raise ValueError(f"the filter must return a bool, not {returns.name()}")
    return Expression(name, source, program)


class _Failed(Exception):
    """An expression failed at run time (the message is CEL's)."""


def _evaluate(expr: Expression, bound: Any) -> Any:
    try:
        result = expr.program.eval(bound)
    except Exception as exc:
        raise _Failed(str(exc)) from None
    if result.type() == _cel.Type.ERROR:
        raise _Failed(str(result.value()))
    return result.plain_value()


# -- the writer ---------------------------------------------------------------------------------


class LineWriter:
    """One thread writing queued records as JSON lines to stdout or a rotated file."""

    def __init__(
        self,
        path: str | None,
        max_bytes: int,
        backups: int,
        queue_size: int,
        redactor: Redactor,
    ) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = max_bytes
        self.backups = backups
        self.queue_size = queue_size
        self.redactor = redactor
        self.dropped = 0
        """Lines dropped because the queue was full."""
        self._pending: deque[dict[str, Any] | None] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._warned_full = False
        self._warned_error = False
        self._file: IO[bytes] | None = None
        self._size = 0
        self._thread = threading.Thread(target=self._run, name="crossway-access-log", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        """Queue one record (never blocks; a full queue drops it)."""
        if len(self._pending) >= self.queue_size:
            self.dropped += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "access log: the write queue is full (%d lines); dropping lines until it "
                    "drains (counted; logged once)",
                    self.queue_size,
                )
            return
        self._idle.clear()
        pending = self._pending
        pending.append(record)
        # The writer wakes itself every WRITE_INTERVAL_SECONDS; waking it per line would cost a
        # lock, a notify and a thread switch per request. A long queue wakes it early.
        if len(pending) >= WAKE_AT_LINES and not self._wake.is_set():
            self._wake.set()

    def close(self) -> None:
        """Write what is queued and stop (blocking: call from a thread)."""
        self._pending.append(None)
        self._wake.set()
        self._thread.join()

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until the queue is written (tests)."""
        self._wake.set()
        return self._idle.wait(timeout)

    def _run(self) -> None:
        pending = self._pending
        stopping = False
        while not stopping:
            self._wake.wait(WRITE_INTERVAL_SECONDS)
            self._wake.clear()
            lines: list[bytes] = []
            while pending:
                record = pending.popleft()
                if record is None:
                    stopping = True
                    break
                try:
                    lines.append(self._line(record))
                except Exception as exc:  # never let one odd value stop the log
                    self._error(f"cannot serialize a line: {exc}")
            if lines:
                self._write(lines)
            if not pending:
                self._idle.set()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._idle.set()

    def _line(self, record: dict[str, Any]) -> bytes:
        when = datetime.datetime.fromtimestamp(record["time"], datetime.UTC)
        record["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record["path"] = self.redactor.text(record["path"])
        fields = record.pop("_fields", None)
        if fields:
            record.update(self.redactor.value(fields))
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE, default=str)

    def _write(self, lines: list[bytes]) -> None:
        try:
            if self.path is None:
                out = sys.stdout.buffer
                out.write(b"".join(lines))
                out.flush()
                return
            self._reopen_if_moved()
            for line in lines:
                self._write_file(line)
            assert self._file is not None
            self._file.flush()
        except Exception as exc:
            self._error(f"cannot write to {self.path or 'stdout'}: {exc}")

    def _reopen_if_moved(self) -> None:
        """Another worker process rotated the file: write to the new one, from its size."""
        if self._file is None or self.path is None:
            return
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            self._file.close()
            self._file = None
        else:
            self._size = os.fstat(self._file.fileno()).st_size

    def _write_file(self, line: bytes) -> None:
        assert self.path is not None
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
            assert self._file is not None
        self._file.write(line)
        self._size += len(line)

    def _rotate(self) -> None:
        """`path` -> `path.1` -> ... -> `path.<backups>` (the oldest goes); then a new file."""
        assert self.path is not None and self._file is not None
        self._file.close()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self._file = self.path.open("ab")
        else:
            self._file = self.path.open("wb")
        self._size = 0

    def _error(self, message: str) -> None:
        if not self._warned_error:
            self._warned_error = True
            log.error("access log: %s (logged once)", message)


# -- the observer -------------------------------------------------------------------------------


class AccessLogObserver:
    """Writes one JSON line per request."""

    def __init__(self, config: AccessLogConfig, redaction: RedactionConfig | None = None) -> None:
        self.config = config
        rules = redaction or RedactionConfig()
        self.fields = tuple(
            compile_expression(source, name=name) for name, source in config.fields.items()
        )
        self.filter = (
            compile_expression(config.filter, boolean=True, name="filter")
            if config.filter is not None
            else None
        )
        names: set[str] = set()
        for expr in (*self.fields, *([self.filter] if self.filter else [])):
            names.update(v for v in FIELD_VARIABLES if v in expr.source)
        self._reads = tuple(sorted(names))
        self._warned: set[str] = set()
        self.writer = LineWriter(
            config.path,
            config.max_bytes,
            config.backups,
            config.queue_size,
            Redactor(rules.patterns, rules.fields),
        )

    def begin(self, scope: Scope) -> Capture:
        return join_capture(False)

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
        try:
            record = self._record(cap, scope, ctx, route, status, seconds)
            if self._reads and not self._expressions(record, scope, ctx, status, seconds):
                return
        except Exception:  # an observer never fails a request
            log.exception("access log: cannot build the line")
            return
        self.writer.put(record)

    def _record(
        self,
        cap: Capture,
        scope: Scope,
        ctx: RequestContext | None,
        route: str,
        status: int,
        seconds: float,
    ) -> dict[str, Any]:
        client = scope.get("client")
        record: dict[str, Any] = {
            "time": time.time() - seconds,  # formatted by the writer
            "request_id": ctx.request_id if ctx is not None else _header_id(scope),
            "trace_id": cap.trace_id,
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "route": route,
            "backend": ctx.backend if ctx is not None else None,
            "status": status,
            "duration_ms": round(seconds * 1000.0, 3),
            "client_ip": (ctx.client_ip if ctx is not None else "")
            or (client[0] if client else None),
        }
        if ctx is None:
            return record
        identity = ctx.identity
        if identity:
            record["identity"] = {"sub": identity.get("sub"), "method": identity.get("method")}
        facts = request_facts(ctx)
        if facts["key"] or facts["user"] or facts["team"]:
            if facts["key"]:
                record["key"] = {"name": facts["key"]}
            record["user"] = facts["user"]
            record["team"] = facts["team"]
        attrs = ctx.attrs
        model = facts["model"]
        if model:
            llm: dict[str, Any] = {"model": model, "provider": facts["provider"]}
            usage = attrs.get("llm.usage")
            if usage:
                for kind in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
                    llm[kind] = usage.get(kind)
            cost = attrs.get("llm.cost")
            if cost is not None:
                llm["cost"] = cost
            cached = attrs.get("llm.cache")
            if cached:  # answered from the response cache (kind, similarity, saved tokens)
                llm["cache"] = cached
            endpoint = attrs.get("inference.endpoint")
            if endpoint is not None:  # an inference pool's pick, and the scores behind it
                llm["endpoint"] = endpoint
                llm["picked_by"] = attrs.get("inference.picked_by")
                llm["scores"] = attrs.get("inference.scores")
            record["llm"] = llm
        if cap.mcp_method:
            record["mcp"] = {"method": cap.mcp_method, "tool": facts["tool"] or cap.mcp_tool}
        if facts["agent"]:
            record["a2a"] = {"agent": facts["agent"], "method": facts["a2a_method"]}
        guards = attrs.get(GUARD_DECISIONS)
        if guards:  # what the guardrails decided (never the matched text)
            record["guards"] = guards
        return record

    def _expressions(
        self,
        record: dict[str, Any],
        scope: Scope,
        ctx: RequestContext | None,
        status: int,
        seconds: float,
    ) -> bool:
        """Evaluate `filter` and `fields` into the record; False when the filter says no."""
        variables = self._variables(record, scope, ctx, status, seconds)
        try:
            bound = _ENV.Activation({name: variables.get(name) or _EMPTY for name in self._reads})
        except Exception as exc:
            self._warn("activation", f"the request's attributes cannot be evaluated: {exc}")
            bound = None
        if self.filter is not None and bound is not None:
            try:
                if _evaluate(self.filter, bound) is False:
                    return False
            except _Failed as exc:
                self._warn(
                    "filter", f"the filter {self.filter.source!r} failed: {exc}; logging the line"
                )
        values: dict[str, Any] = {}
        for expr in self.fields:
            value = None
            if bound is not None:
                try:
                    value = _evaluate(expr, bound)
                except _Failed as exc:
                    self._warn(
                        expr.name,
                        f"field {expr.name!r} ({expr.source!r}) failed: {exc}; it is null",
                    )
            values[expr.name] = value
        if values:
            record["_fields"] = values
        return True

    def _variables(
        self,
        record: dict[str, Any],
        scope: Scope,
        ctx: RequestContext | None,
        status: int,
        seconds: float,
    ) -> dict[str, Any]:
        from crossway.policy.authorization import request_attributes

        response = {"status": status, "duration_ms": record["duration_ms"]}
        if ctx is None:
            return {"request": _bare_request(scope), "response": response}
        attrs = ctx.attrs
        llm = dict(attrs.get("llm") or {})
        for name in ("model", "provider", "stream", "api", "usage", "cost"):
            value = attrs.get("llm." + name)
            if value is not None:
                llm[name] = value
        mcp = dict(attrs.get("mcp") or {})
        if "mcp" in record:
            mcp.setdefault("method", record["mcp"]["method"])
            tool = record["mcp"]["tool"]
            if tool and "tool" not in mcp:
                mcp["tool"] = {"name": tool}
        return {
            "request": request_attributes(scope, ctx),
            "jwt": ctx.jwt,
            "key": ctx.key,
            "identity": ctx.identity,
            "llm": llm,
            "mcp": mcp,
            "a2a": attrs.get("a2a"),
            "response": response,
        }

    def _warn(self, name: str, message: str) -> None:
        """Once per expression, not per request."""
        if name not in self._warned:
            self._warned.add(name)
            log.warning("access log: %s (logged once per expression)", message)

    async def close(self) -> None:
        import asyncio

        await asyncio.to_thread(self.writer.close)


def _header_id(scope: Scope) -> str | None:
    from crossway.server.asgi import client_request_id

    return client_request_id(scope)


def _bare_request(scope: Scope) -> dict[str, Any]:
    """CEL's `request` for a request no route matched."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    client = scope.get("client") or ("", 0)
    return {
        "method": scope.get("method", ""),
        "path": scope.get("path", ""),
        "host": headers.get("host", ""),
        "scheme": scope.get("scheme", "http"),
        "headers": headers,
        "source": {"address": client[0], "port": client[1]},
    }


__all__ = ["FIELD_VARIABLES", "AccessLogObserver", "LineWriter", "compile_expression"]
