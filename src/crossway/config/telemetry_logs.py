"""Config of access logs (`telemetry.access_log`), the request log store
(`telemetry.request_log`) and the redaction rules both apply (`telemetry.redaction`).

```yaml
telemetry:
  access_log:
    path: /var/log/crossway/access.log      # unset: stdout
    max_bytes: 104857600                    # rotate at 100 MiB, keep 5 old files
    backups: 5
    fields:                                 # extra fields: CEL over the attribute model
      user_agent: 'request.headers["user-agent"]'
      slow: 'response.duration_ms > 1000.0'
    filter: 'response.status >= 400 || request.path.startsWith("/v1")'
  request_log:
    enabled: true                           # $CROSSWAY_DATA_DIR/request-log.sqlite3
    max_entry_bytes: 65536
    max_rows: 100000
    max_age: 604800                         # seconds (7 days)
  redaction:
    patterns: ['\\b\\d{3}-\\d{2}-\\d{4}\\b']  # regular expressions, masked in every string
    fields: ['messages.*.content', '**.email']  # JSON field paths, masked whole
```
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import Field, field_validator

from crossway.config.base import StrictModel

DEFAULT_ACCESS_LOG_MAX_BYTES: Final = 100 * 1024 * 1024
DEFAULT_ACCESS_LOG_BACKUPS: Final = 5
DEFAULT_ACCESS_LOG_QUEUE: Final = 10_000
DEFAULT_MAX_ENTRY_BYTES: Final = 64 * 1024
DEFAULT_MAX_ROWS: Final = 100_000
DEFAULT_MAX_AGE_SECONDS: Final = 7 * 24 * 3600.0
DEFAULT_REQUEST_LOG_QUEUE: Final = 1_000
DEFAULT_BATCH_SIZE: Final = 200
DEFAULT_FLUSH_INTERVAL_SECONDS: Final = 0.2


class RedactionConfig(StrictModel):
    """Rules applied to everything logged, stored or captured, on top of the built-in ones
    (which always mask `Authorization`, `x-api-key`, cookies, passwords, `sk-...` keys, bearer
    tokens and JWTs)."""

    patterns: list[str] = Field(default_factory=list)
    """Regular expressions (Python syntax); every match inside any string is replaced by
    `**********`."""
    fields: list[str] = Field(default_factory=list)
    """JSON field paths whose whole value is replaced by `**********`: dotted keys
    (case-insensitive), `*` for any one key or list index, `**` for any depth:
    `messages.*.content`, `params.arguments.password`, `**.email`."""

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return patterns

    @field_validator("fields")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        from crossway.telemetry.redaction import check_path

        for path in paths:
            check_path(path)
        return paths


class AccessLogConfig(StrictModel):
    """One structured JSON line per request."""

    path: str | None = None
    """File the lines are appended to; unset: the process's stdout."""
    max_bytes: int = Field(default=DEFAULT_ACCESS_LOG_MAX_BYTES, ge=0)
    """Rotate the file once it would grow past this many bytes (0: never rotate)."""
    backups: int = Field(default=DEFAULT_ACCESS_LOG_BACKUPS, ge=0)
    """Rotated files kept (`access.log.1` is the newest); 0: the file is emptied instead."""
    fields: dict[str, str] = Field(default_factory=dict)
    """Extra fields by name: CEL expressions over `request`, `jwt`, `key`, `identity`, `llm`,
    `mcp`, `a2a` and `response` (`status`, `duration_ms`). An expression that fails for a
    request logs null (and one warning per expression, ever)."""
    filter: str | None = None
    """A CEL boolean over the same variables: only requests it is true for are logged (one
    that fails to evaluate is logged, with one warning)."""
    queue_size: int = Field(default=DEFAULT_ACCESS_LOG_QUEUE, ge=1)
    """Lines held for the writer thread; when full, new lines are dropped and counted."""

    @field_validator("fields")
    @classmethod
    def _fields_compile(cls, fields: dict[str, str]) -> dict[str, str]:
        from crossway.telemetry.access_log import compile_expression

        for name, source in fields.items():
            try:
                compile_expression(source)
            except ValueError as exc:
                raise ValueError(f"field {name!r}: invalid CEL {source!r}: {exc}") from None
        return fields

    @field_validator("filter")
    @classmethod
    def _filter_compiles(cls, source: str | None) -> str | None:
        from crossway.telemetry.access_log import compile_expression

        if source is not None:
            try:
                compile_expression(source, boolean=True)
            except ValueError as exc:
                raise ValueError(f"invalid CEL filter {source!r}: {exc}") from None
        return source


class RequestLogConfig(StrictModel):
    """Stored request and response contents (opt-in): LLM prompts and completions, MCP
    arguments and results, A2A messages — redacted, bounded, queryable at the admin API's
    `GET /logs`."""

    enabled: bool = False
    """Store contents; off unless set."""
    path: str | None = None
    """SQLite file. Unset: `$CROSSWAY_DATA_DIR/request-log.sqlite3` (data dir `./.crossway`)."""
    max_entry_bytes: int = Field(default=DEFAULT_MAX_ENTRY_BYTES, ge=256)
    """The most bytes of one request's captured contents (request and response together);
    longer contents are cut there and the entry is marked `truncated`."""
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1)
    """Entries kept; the oldest are pruned beyond it."""
    max_age: float = Field(default=DEFAULT_MAX_AGE_SECONDS, gt=0)
    """Seconds an entry is kept."""
    queue_size: int = Field(default=DEFAULT_REQUEST_LOG_QUEUE, ge=1)
    """Entries waiting to be written; when full, new ones are dropped (counted, logged once)."""
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    """Most entries written in one transaction."""
    flush_interval: float = Field(default=DEFAULT_FLUSH_INTERVAL_SECONDS, gt=0)
    """Seconds the writer waits to gather a batch (a full batch goes at once)."""
