"""Tool-definition pinning ("rug pull" protection) and tool-description scanning.

The first time Crossway sees a tool of an upstream it records a sha256 of the tool's name,
description and input schema. When the upstream later presents a different definition under the
same name, the tool is blocked (hidden from lists, calls refused) or flagged, per config, and the
change is logged. Descriptions are also scanned for text that tries to instruct the model
(prompt injection hidden in tool metadata) and such tools are flagged.

Pins live in memory for lookups; the SQLite store is only read at start and written in a worker
thread, so nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from crossway.config.mcp_security import DEFAULT_PIN_DB, PinningConfig

log = logging.getLogger("crossway.mcp.pinning")

DATA_DIR_ENV: Final = "CROSSWAY_DATA_DIR"
DEFAULT_DATA_DIR: Final = ".crossway"
SCAN_CACHE_SIZE: Final = 65536
"""Scan results are remembered per definition fingerprint (definitions rarely change)."""
FLAG_META_KEY: Final = "crossway/pinning"
"""Key under a tool's `_meta` where flags are reported to the client."""

_INJECTION_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (label, re.compile(pattern, re.IGNORECASE))
    for label, pattern in (
        (
            "ignore-instructions",
            r"\b(ignore|disregard|forget|override)\b[\w\s,]{0,30}\b(previous|prior|above|earlier|all|system|other)\b[\w\s]{0,20}\b(instructions?|prompts?|rules|directives)\b",
        ),
        ("important-tag", r"<\s*/?\s*(important|system|instructions?|secret|hidden)\s*>"),
        (
            "conceal-from-user",
            r"\b(do\s*n[o']t|never|must\s+not|without)\b[\w\s]{0,20}\b(tell|telling|inform|informing|mention|mentioning|show|showing|reveal|revealing|notify|notifying|alert|alerting)\b[\w\s]{0,15}\b(user|human|them)\b",
        ),
        (
            "exfiltration",
            r"\b(read|send|upload|post|forward|include|pass|leak|exfiltrate|copy)(s|es|ing)?\b[\w\s]{0,40}(~/\.ssh|id_rsa|\.env\b|mcp\.json|credentials|api[_\s-]?keys?|private\s+keys?|passwords?|secrets?|access\s+tokens?)",
        ),
        (
            "tool-shadowing",
            r"\b(before|instead\s+of|when)\b[\w\s]{0,20}\b(using|calling|invoking)\b[\w\s]{0,20}\b(any\s+other|other|the)\s+tools?\b",
        ),
        (
            "role-override",
            r"\b(you\s+are\s+now|act\s+as|new\s+instructions?\s*:|system\s+prompt\s*:)",
        ),
    )
)

_HIDDEN_CHARS: Final = re.compile(
    "[\U000e0000-\U000e007f"  # unicode tag characters (invisible ASCII smuggling)
    "\u200b-\u200f"  # zero-width spaces / joiners, LRM/RLM
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # bidi isolates
    "\ufeff]"  # zero-width no-break space
)


def tool_fingerprint(tool: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a tool's name, description and input schema."""
    canonical = orjson.dumps(
        {
            "name": tool.get("name"),
            "description": tool.get("description"),
            "inputSchema": tool.get("inputSchema"),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def _schema_texts(schema: Any, depth: int = 0) -> Iterable[str]:
    """Every `description`/`title` string inside a JSON schema (where injections also hide)."""
    if depth > 16:
        return
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key in ("description", "title") and isinstance(value, str):
                yield value
            else:
                yield from _schema_texts(value, depth + 1)
    elif isinstance(schema, list):
        for item in schema:
            yield from _schema_texts(item, depth + 1)


def scan_description(tool: Mapping[str, Any]) -> list[str]:
    """Labels of the suspicious patterns found in a tool's description and schema texts."""
    texts = [t for t in (tool.get("description"), tool.get("title")) if isinstance(t, str)]
    texts.extend(_schema_texts(tool.get("inputSchema")))
    found: list[str] = []
    for text in texts:
        if _HIDDEN_CHARS.search(text) and "hidden-unicode" not in found:
            found.append("hidden-unicode")
        normalized = unicodedata.normalize("NFKC", _HIDDEN_CHARS.sub("", text))
        for label, pattern in _INJECTION_PATTERNS:
            if label not in found and pattern.search(normalized):
                found.append(label)
    return found


@dataclass(frozen=True, slots=True)
class PinVerdict:
    """What pinning decided for one tool."""

    name: str
    blocked: bool = False
    changed: bool = False
    findings: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        """Whether the client should be warned about this tool."""
        return self.changed or bool(self.findings)


@dataclass(slots=True)
class PinReview:
    """The outcome of reviewing one upstream's tool list."""

    tools: list[dict[str, Any]]
    """The tools to expose: blocked ones removed, flagged ones marked in `_meta`."""
    verdicts: dict[str, PinVerdict] = field(default_factory=dict)
    """Per tool name, only for tools that were blocked or flagged."""

    @property
    def blocked(self) -> set[str]:
        """Names of the tools that were withheld."""
        return {name for name, v in self.verdicts.items() if v.blocked}


class _SqlitePins:
    """Pins in a SQLite file; every call runs in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _open_sync(self) -> dict[tuple[str, str], str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tool_pins ("
            " server TEXT NOT NULL, tool TEXT NOT NULL, sha256 TEXT NOT NULL,"
            " first_seen REAL NOT NULL,"
            " PRIMARY KEY (server, tool))"
        )
        self._conn = conn
        rows = conn.execute("SELECT server, tool, sha256 FROM tool_pins").fetchall()
        return {(s, t): h for s, t, h in rows}

    async def load(self) -> dict[tuple[str, str], str]:
        async with self._lock:
            return await asyncio.to_thread(self._open_sync)

    def _put_sync(
        self, rows: list[tuple[str, str, str]], replace: bool
    ) -> dict[tuple[str, str], str]:
        assert self._conn is not None
        now = time.time()
        conflict = "DO UPDATE SET sha256 = excluded.sha256" if replace else "DO NOTHING"
        self._conn.executemany(
            "INSERT INTO tool_pins (server, tool, sha256, first_seen) VALUES (?, ?, ?, ?)"
            f" ON CONFLICT (server, tool) {conflict}",
            [(*row, now) for row in rows],
        )
        # Another process sharing the file may have pinned a tool first: its pin wins.
        stored: dict[tuple[str, str], str] = {}
        for server, tool, digest in rows:
            found = self._conn.execute(
                "SELECT sha256 FROM tool_pins WHERE server = ? AND tool = ?", (server, tool)
            ).fetchone()
            if found is not None and found[0] != digest:
                stored[(server, tool)] = found[0]
        return stored

    async def put(
        self, rows: list[tuple[str, str, str]], *, replace: bool = False
    ) -> dict[tuple[str, str], str]:
        """Record first-seen pins (keeping existing ones unless `replace`); returns the pins
        already stored that differ from the rows given."""
        async with self._lock:
            return await asyncio.to_thread(self._put_sync, rows, replace)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await asyncio.to_thread(self._conn.close)
                self._conn = None


def default_pin_path() -> Path:
    """`$CROSSWAY_DATA_DIR/mcp-pins.sqlite3`, the data dir defaulting to `./.crossway`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / DEFAULT_PIN_DB


class ToolPinning:
    """Reviews tool lists from upstreams against the recorded pins.

    Use: `await start()`, then `await review(server, tools)` on every tool list an upstream sends
    (initial list, re-list after `notifications/tools/list_changed`, reconnects), and
    `is_blocked(server, tool)` before forwarding a `tools/call`.
    """

    def __init__(self, config: PinningConfig | None = None) -> None:
        self.config = config or PinningConfig()
        self._pins: dict[tuple[str, str], str] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._reported: dict[tuple[str, str], str] = {}
        self._reported_scan: dict[tuple[str, str], tuple[str, ...]] = {}
        self._scans: dict[str, tuple[str, ...]] = {}
        self._unsaved: list[tuple[str, str, str]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._store: _SqlitePins | None = None
        if self.config.mode != "off" and self.config.store == "sqlite":
            path = Path(self.config.path) if self.config.path else default_pin_path()
            self._store = _SqlitePins(path)

    @property
    def enabled(self) -> bool:
        """Whether anything is checked at all."""
        return self.config.mode != "off" or self.config.scan_descriptions

    async def start(self) -> None:
        """Load the recorded pins."""
        if self._store is not None:
            self._pins = await self._store.load()

    async def close(self) -> None:
        """Save pending pins and close the store."""
        if self._store is not None:
            await self.flush()
            await self._store.close()

    def is_blocked(self, server: str, tool: str) -> bool:
        """Whether calls to this upstream tool (its upstream name) must be refused."""
        return (server, tool) in self._blocked

    def pinned(self, server: str, tool: str) -> str | None:
        """The recorded fingerprint of a tool, if any."""
        return self._pins.get((server, tool))

    async def approve(self, server: str, tool: Mapping[str, Any]) -> None:
        """Accept a tool's current definition as the new pin (an operator's decision)."""
        key = (server, str(tool.get("name")))
        digest = tool_fingerprint(tool)
        self._pins[key] = digest
        self._blocked.discard(key)
        if self._store is not None:
            await self._store.put([(key[0], key[1], digest)], replace=True)

    def judge(self, server: str, tool: Mapping[str, Any]) -> PinVerdict:
        """Check one tool definition an upstream listed; record it if it is new.

        Updates the in-memory pins and blocked set at once; a new pin is written to the store
        in the background (see `flush`).
        """
        name = str(tool.get("name"))
        key = (server, name)
        mode = self.config.mode
        changed = False
        digest = tool_fingerprint(tool)
        if mode != "off":
            known = self._pins.get(key)
            if known is None:
                self._pins[key] = digest
                self._unsaved.append((server, name, digest))
                self._schedule_flush()
            elif known != digest:
                changed = True
                if key not in self._reported or self._reported[key] != digest:
                    self._reported[key] = digest
                    log.warning(
                        "mcp tool definition changed: server=%s tool=%s pinned=%s now=%s action=%s",
                        server,
                        name,
                        known[:12],
                        digest[:12],
                        mode,
                    )
        findings: tuple[str, ...] = ()
        if self.config.scan_descriptions:
            cached = self._scans.get(digest)
            if cached is None:
                if len(self._scans) >= SCAN_CACHE_SIZE:
                    self._scans.clear()
                cached = self._scans[digest] = tuple(scan_description(tool))
            findings = cached
            if findings and self._reported_scan.get(key) != findings:
                self._reported_scan[key] = findings
                log.warning(
                    "mcp tool description looks like a prompt injection: server=%s tool=%s findings=%s",
                    server,
                    name,
                    ",".join(findings),
                )
        blocked = (changed and mode == "block") or (bool(findings) and self.config.block_suspicious)
        if blocked:
            self._blocked.add(key)
        else:
            self._blocked.discard(key)
        return PinVerdict(name=name, blocked=blocked, changed=changed, findings=findings)

    def check(self, server: str, tool: dict[str, Any]) -> Literal["ok", "blocked", "flagged"]:
        """The gateway's pinning hook (`crossway.mcp.hooks.ToolPinning`).

        A flagged tool is marked in place under `_meta["crossway/pinning"]` so clients can
        show the warning.
        """
        verdict = self.judge(server, tool)
        if verdict.blocked:
            return "blocked"
        if verdict.flagged:
            meta = tool.get("_meta")
            if not isinstance(meta, dict):
                meta = tool["_meta"] = {}
            meta[FLAG_META_KEY] = {"changed": verdict.changed, "findings": list(verdict.findings)}
            return "flagged"
        return "ok"

    async def review(self, server: str, tools: list[dict[str, Any]]) -> PinReview:
        """Check one upstream's whole tool list (see `judge`) and wait for new pins to be saved.

        `tools` are tool objects as the upstream sent them (upstream names). The returned list
        keeps the order, omits blocked tools and marks flagged tools (copies) under
        `_meta["crossway/pinning"]`.
        """
        if not self.enabled:
            return PinReview(tools=tools)
        out: list[dict[str, Any]] = []
        verdicts: dict[str, PinVerdict] = {}
        for tool in tools:
            verdict = self.judge(server, tool)
            if verdict.flagged or verdict.blocked:
                verdicts[verdict.name] = verdict
                if not verdict.blocked:
                    out.append(_mark(tool, verdict))
            else:
                out.append(tool)
        await self.flush()
        return PinReview(tools=out, verdicts=verdicts)

    def _schedule_flush(self) -> None:
        if self._store is None:
            self._unsaved.clear()
            return
        if self._flushing is None or self._flushing.done():
            try:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            except RuntimeError:  # no loop (sync use): saved by the next flush
                pass

    async def _flush(self) -> None:
        while self._unsaved and self._store is not None:
            rows, self._unsaved = self._unsaved, []
            try:
                earlier = await self._store.put(rows)
            except Exception as exc:  # a full disk must not break tool listing
                log.error("could not save tool pins: %s", exc)
                continue
            for key, digest in earlier.items():
                # Pinned first by another worker or replica sharing the file: adopt its pin;
                # the next listing of that tool is judged against it.
                log.warning(
                    "mcp tool pin for server=%s tool=%s was recorded elsewhere with another "
                    "definition; using it",
                    key[0],
                    key[1],
                )
                self._pins[key] = digest

    async def flush(self) -> None:
        """Wait until every recorded pin is in the store."""
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        await self._flush()


def _mark(tool: dict[str, Any], verdict: PinVerdict) -> dict[str, Any]:
    """A copy of the tool carrying the verdict in `_meta` (clients may show it)."""
    meta = dict(tool.get("_meta") or {})
    meta[FLAG_META_KEY] = {"changed": verdict.changed, "findings": list(verdict.findings)}
    marked = dict(tool)
    marked["_meta"] = meta
    return marked


__all__ = [
    "FLAG_META_KEY",
    "PinReview",
    "PinVerdict",
    "ToolPinning",
    "default_pin_path",
    "scan_description",
    "tool_fingerprint",
]
