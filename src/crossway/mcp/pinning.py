"""Tool-definition pinning ("rug pull" protection) and tool-description scanning.

The first time Crossway sees a tool of an upstream it records a sha256 of the tool's name,
description and input schema. When the upstream later presents a different definition under the
same name, the tool is blocked (hidden from lists, calls refused) or flagged, per config, and the
change is logged. Descriptions are also scanned for text that tries to instruct the model
(prompt injection hidden in tool metadata) and such tools are flagged.

Pins live in memory for lookups; the SQLite store (`crossway.mcp.pin_store`) is read at start,
written in a worker thread, and re-read only for a blocked tool (an operator may have approved
it through the CLI or another process's admin plane), so nothing here blocks the event loop.
The started `ToolPinning` of each backend is registered for this process's admin plane
(`live_pinning`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import orjson

from crossway.config.mcp_security import PinningConfig
from crossway.guard.detectors.injection import HIDDEN_CHARS as _HIDDEN_CHARS
from crossway.guard.detectors.injection import INJECTION_PATTERNS as _INJECTION_PATTERNS
from crossway.mcp.pin_store import (
    PinEntry,
    PinFile,
    PinMismatch,
    PinNotFound,
    PinStatus,
    default_pin_path,
    pin_path,
)

log = logging.getLogger("crossway.mcp.pinning")

_T = TypeVar("_T")

SCAN_CACHE_SIZE: Final = 65536
"""Scan results are remembered per definition fingerprint (definitions rarely change)."""
FLAG_META_KEY: Final = "crossway/pinning"
"""Key under a tool's `_meta` where flags are reported to the client."""
MAX_KEPT_DEFINITIONS_FACTOR: Final = 4
"""Definition texts kept in memory beyond this many per pin are pruned to the pinned and
current ones (an upstream changing its tools constantly cannot grow them without bound)."""
PIN_RECHECK_SECONDS: Final = 1.0
"""While a tool is blocked, tool lists re-read its pin from the shared file at most this often
(a call to the blocked tool always re-reads it)."""


def canonical_definition(tool: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a tool's name, description and input schema (what is pinned)."""
    return orjson.dumps(
        {
            "name": tool.get("name"),
            "description": tool.get("description"),
            "inputSchema": tool.get("inputSchema"),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def tool_fingerprint(tool: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a tool's name, description and input schema."""
    return hashlib.sha256(canonical_definition(tool)).hexdigest()


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


class ToolPinning:
    """Reviews tool lists from upstreams against the recorded pins.

    Use: `await start()`, then `await review(server, tools)` (or the sync `check` hook per
    tool) on every tool list an upstream sends (initial list, re-list after
    `notifications/tools/list_changed`, reconnects), and `is_blocked(server, tool)` before
    forwarding a `tools/call`. `generation` grows whenever pins change from outside the
    listing (an approval, a pin forgotten, a pin adopted from the shared file): verdicts
    cached before are stale then.
    """

    def __init__(self, config: PinningConfig | None = None, *, backend: str = "") -> None:
        self.config = config or PinningConfig()
        self.backend = backend
        self.generation = 0
        self._pins: dict[tuple[str, str], str] = {}
        self._current: dict[tuple[str, str], str] = {}
        """The fingerprint of the definition each upstream listed last."""
        self._blocked: set[tuple[str, str]] = set()
        self._reported: dict[tuple[str, str], str] = {}
        self._reported_scan: dict[tuple[str, str], tuple[str, ...]] = {}
        self._scans: dict[str, tuple[str, ...]] = {}
        self._unsaved: list[tuple[str, str, str]] = []
        self._unsaved_seen: dict[tuple[str, str], str | None] = {}
        self._texts: dict[str, str] = {}
        """Canonical JSON of the pinned and current definitions, by fingerprint."""
        self._unsaved_texts: dict[str, str] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._rechecks: dict[tuple[str, str], asyncio.Task[bool]] = {}
        self._refreshed = 0.0
        self._file: PinFile | None = None
        self._saved: set[tuple[str, str]] = set()
        """Tools whose pin is known to be in the file (a missing row then means forgotten)."""
        self._lock = asyncio.Lock()
        if self.config.mode != "off" and self.config.store == "sqlite":
            self._file = PinFile(pin_path(self.config), backend)

    @property
    def enabled(self) -> bool:
        """Whether anything is checked at all."""
        return self.config.mode != "off" or self.config.scan_descriptions

    @property
    def fail_closed(self) -> bool:
        """Whether a tool may be called only once its current definition was verified: the
        config can block tools (`mode: block`, or `block_suspicious` with scanning on)."""
        return self.config.mode == "block" or (
            self.config.scan_descriptions and self.config.block_suspicious
        )

    @property
    def shared_store(self) -> bool:
        """Whether pins live in a file other processes (workers, the CLI) also change."""
        return self._file is not None

    @property
    def needs_refresh(self) -> bool:
        """Whether tool lists should call `refresh_blocked` (a tool is blocked, and its pin
        may be approved in the shared file by another process)."""
        return self._file is not None and bool(self._blocked)

    async def _in_file(self, fn: Callable[..., _T], *args: Any) -> _T:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    async def start(self) -> None:
        """Load the recorded pins; make this object the one the admin plane reaches."""
        if self._file is not None:
            self._pins = await self._in_file(self._file.load)
            self._saved = set(self._pins)
        if self.backend:
            _LIVE[self.backend] = (self, asyncio.get_running_loop())

    async def close(self) -> None:
        """Save pending pins and close the store."""
        live = _LIVE.get(self.backend)
        if live is not None and live[0] is self:
            del _LIVE[self.backend]
        if self._file is not None:
            await self.flush()
            await self._in_file(self._file.close)

    def is_blocked(self, server: str, tool: str) -> bool:
        """Whether calls to this upstream tool (its upstream name) must be refused."""
        return (server, tool) in self._blocked

    def pinned(self, server: str, tool: str) -> str | None:
        """The recorded fingerprint of a tool, if any."""
        return self._pins.get((server, tool))

    # -- operator decisions ----------------------------------------------------------------

    async def approve(self, server: str, tool: Mapping[str, Any]) -> None:
        """Accept a tool's current definition as the new pin (an operator's decision)."""
        await self._set_pin((server, str(tool.get("name"))), tool_fingerprint(tool))

    async def approve_current(
        self, server: str, tool: str, expected: str | None = None
    ) -> PinEntry:
        """Accept the definition `server` lists now for `tool` as its pin.

        Raises `PinNotFound` when Crossway knows nothing of that tool, `PinMismatch` when
        `expected` is given and is not the current definition's fingerprint."""
        key = (server, tool)
        current = self._current.get(key) or self._pins.get(key)
        if current is None and self._file is not None:
            found = await self._in_file(self._file.row, server, tool)
            if found is not None:
                current = found[1] or found[0]
        if current is None:
            raise PinNotFound(f"no pin for tool {tool!r} of server {server!r}")
        if expected is not None and expected != current:
            raise PinMismatch(
                f"tool {tool!r} of server {server!r} now has definition {current[:12]}, "
                f"not {expected[:12]}"
            )
        await self._set_pin(key, current)
        return self.entry(server, tool)

    async def _set_pin(self, key: tuple[str, str], digest: str) -> None:
        self._pins[key] = digest
        self._blocked.discard(key)  # a suspicious description blocks it again on its next review
        self._reported.pop(key, None)
        self._unsaved_seen.pop(key, None)
        self.generation += 1
        log.warning(
            "mcp tool pin approved: backend=%s server=%s tool=%s pinned=%s",
            self.backend,
            key[0],
            key[1],
            digest[:12],
        )
        if self._file is not None:
            await self._in_file(self._file.put, [(key[0], key[1], digest)], True)
            self._saved.add(key)

    async def forget(self, server: str, tool: str) -> bool:
        """Drop a tool's pin: the definition listed next is pinned anew. Whether one existed."""
        key = (server, tool)
        existed = self._pins.pop(key, None) is not None
        self._saved.discard(key)
        if self._file is not None:
            existed = await self._in_file(self._file.forget, server, tool) or existed
        if existed:
            self._blocked.discard(key)
            self._reported.pop(key, None)
            self.generation += 1
            log.warning("mcp tool pin forgotten: backend=%s server=%s tool=%s", self.backend, *key)
        return existed

    def entry(self, server: str, tool: str) -> PinEntry:
        """One tool's pin, current definition and status as this process knows them."""
        key = (server, tool)
        pinned = self._pins.get(key)
        findings = self._reported_scan.get(key, ())
        current = self._current.get(key, pinned)
        status: PinStatus = "ok"
        if key in self._blocked:
            status = "blocked"
        elif findings or (current is not None and pinned is not None and current != pinned):
            status = "flagged"
        return PinEntry(self.backend, server, tool, pinned, current, status, findings)

    def entries(self) -> list[PinEntry]:
        """Every tool pinned or seen, sorted by server and name."""
        return [self.entry(*key) for key in sorted(self._pins.keys() | self._current.keys())]

    # -- noticing decisions made in other processes -------------------------------------------

    async def recheck(self, server: str, tool: str) -> bool:
        """Re-read a (blocked) tool's pin from the shared file; True when it changed there
        (approved or forgotten through the CLI or another process's admin plane), after which
        the tool must be reviewed again. Concurrent rechecks of one tool share one read."""
        if self._file is None:
            return False
        key = (server, tool)
        task = self._rechecks.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._recheck(key))
            self._rechecks[key] = task
            task.add_done_callback(lambda _: self._rechecks.pop(key, None))
        return await asyncio.shield(task)

    async def _recheck(self, key: tuple[str, str]) -> bool:
        assert self._file is not None
        await self.flush()
        found = await self._in_file(self._file.row, *key)
        stored = None if found is None else found[0]
        if stored == self._pins.get(key):
            return False
        if stored is None:
            if key not in self._saved:
                return False  # never written (a failed save): not a pin forgotten elsewhere
            self._pins.pop(key, None)
            self._saved.discard(key)
        else:
            self._pins[key] = stored
        self._blocked.discard(key)
        self._reported.pop(key, None)
        self.generation += 1
        return True

    async def refresh_blocked(self) -> bool:
        """Recheck every blocked tool against the shared file, at most once per
        `PIN_RECHECK_SECONDS` (tool lists call this while something is blocked)."""
        if self._file is None or not self._blocked:
            return False
        now = time.monotonic()
        if now - self._refreshed < PIN_RECHECK_SECONDS:
            return False
        self._refreshed = now
        changed = await asyncio.gather(*(self.recheck(*key) for key in list(self._blocked)))
        return any(changed)

    # -- reviewing definitions -----------------------------------------------------------------

    def judge(self, server: str, tool: Mapping[str, Any]) -> PinVerdict:
        """Check one tool definition an upstream listed; record it if it is new.

        Updates the in-memory pins and blocked set at once; a new pin is written to the store
        in the background (see `flush`).
        """
        name = str(tool.get("name"))
        key = (server, name)
        mode = self.config.mode
        changed = False
        canonical = canonical_definition(tool)
        digest = hashlib.sha256(canonical).hexdigest()
        self._current[key] = digest
        if mode != "off" and digest not in self._texts:
            self._keep_text(digest, canonical)
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
                    self._unsaved_seen[key] = digest
                    self._schedule_flush()
                    log.warning(
                        "mcp tool definition changed: server=%s tool=%s pinned=%s now=%s action=%s",
                        server,
                        name,
                        known[:12],
                        digest[:12],
                        mode,
                    )
            elif self._reported.pop(key, None) is not None:
                self._unsaved_seen[key] = None  # back to the pinned definition
                self._schedule_flush()
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
            elif not findings:
                self._reported_scan.pop(key, None)
        blocked = (changed and mode == "block") or (bool(findings) and self.config.block_suspicious)
        if blocked:
            self._blocked.add(key)
        else:
            self._blocked.discard(key)
        return PinVerdict(name=name, blocked=blocked, changed=changed, findings=findings)

    def _keep_text(self, digest: str, canonical: bytes) -> None:
        """Remember a definition's text (to show what changed), saved with the next flush."""
        if len(self._texts) > MAX_KEPT_DEFINITIONS_FACTOR * (len(self._pins) + 8):
            wanted = set(self._pins.values()) | set(self._current.values())
            self._texts = {k: v for k, v in self._texts.items() if k in wanted}
        text = canonical.decode()
        self._texts[digest] = text
        if self._file is not None:
            self._unsaved_texts[digest] = text
            self._schedule_flush()

    async def definition(self, digest: str) -> dict[str, Any] | None:
        """The definition (name, description, inputSchema) with that fingerprint, when this
        process or the shared file kept it."""
        text = self._texts.get(digest)
        if text is None and self._file is not None:
            await self.flush()
            text = await self._in_file(self._file.definition, digest)
        if text is None:
            return None
        found = orjson.loads(text)
        return found if isinstance(found, dict) else None

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
        if self._file is None:
            self._unsaved.clear()
            self._unsaved_seen.clear()
            self._unsaved_texts.clear()
            return
        if self._flushing is None or self._flushing.done():
            try:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            except RuntimeError:  # no loop (sync use): saved by the next flush
                pass

    @property
    def _pending(self) -> bool:
        return bool(self._unsaved or self._unsaved_seen or self._unsaved_texts)

    async def _flush(self) -> None:
        while self._file is not None and self._pending:
            rows, self._unsaved = self._unsaved, []
            seen, self._unsaved_seen = self._unsaved_seen, {}
            texts, self._unsaved_texts = self._unsaved_texts, {}
            try:
                earlier = await self._in_file(self._file.put, rows, False) if rows else {}
                if seen:
                    await self._in_file(
                        self._file.set_seen, [(s, t, h) for (s, t), h in seen.items()]
                    )
                if texts:
                    await self._in_file(self._file.keep_definitions, texts)
            except Exception as exc:  # a full disk must not break tool listing
                log.error("could not save tool pins: %s", exc)
                continue
            self._saved.update((s, t) for s, t, _ in rows)
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
                self.generation += 1

    async def flush(self) -> None:
        """Wait until every recorded pin is in the store."""
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        await self._flush()


def live_pinning(backend: str) -> ToolPinning | None:
    """The running `ToolPinning` of `backend` in this process, if it runs on this event loop
    (one process serving both the admin plane and the gateway)."""
    live = _LIVE.get(backend)
    if live is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return live[0] if live[1] is loop else None


_LIVE: dict[str, tuple[ToolPinning, asyncio.AbstractEventLoop]] = {}
"""The started `ToolPinning` of each MCP backend in this process, for the admin plane."""


def _mark(tool: dict[str, Any], verdict: PinVerdict) -> dict[str, Any]:
    """A copy of the tool carrying the verdict in `_meta` (clients may show it)."""
    meta = dict(tool.get("_meta") or {})
    meta[FLAG_META_KEY] = {"changed": verdict.changed, "findings": list(verdict.findings)}
    marked = dict(tool)
    marked["_meta"] = meta
    return marked


__all__ = [
    "FLAG_META_KEY",
    "PinEntry",
    "PinMismatch",
    "PinNotFound",
    "PinReview",
    "PinVerdict",
    "ToolPinning",
    "canonical_definition",
    "default_pin_path",
    "live_pinning",
    "scan_description",
    "tool_fingerprint",
]
