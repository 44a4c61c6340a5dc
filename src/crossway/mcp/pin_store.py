"""The SQLite file that keeps tool pins across restarts, workers and the `crossway pins` CLI.

One row per (backend, server, tool): the pinned fingerprint and, when the upstream now lists a
different definition, the fingerprint of that definition (`seen_sha256`). The definitions
themselves (the canonical JSON the fingerprint is taken of) are kept by fingerprint in
`mcp_tool_definitions`, for as long as a pin or a seen definition refers to them, so the admin
plane can show what changed. The gateway writes
rows off the request path (`crossway.mcp.pinning` calls these methods in a worker thread); the
admin plane and the CLI use the same methods to list pins and to approve or forget them, and a
worker re-reads a blocked tool's row before refusing it, so an approval made elsewhere counts
without a restart.

Files written before pins were kept per backend (table `tool_pins`) are imported once per
backend that opens them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from crossway.config.mcp_security import DEFAULT_PIN_DB, PinningConfig

DATA_DIR_ENV: Final = "CROSSWAY_DATA_DIR"
DEFAULT_DATA_DIR: Final = ".crossway"
BUSY_TIMEOUT_MS: Final = 5000
"""How long a write waits for another process (worker, CLI) holding the file's write lock."""

PinStatus = Literal["ok", "flagged", "blocked"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS mcp_tool_pins ("
    " backend TEXT NOT NULL, server TEXT NOT NULL, tool TEXT NOT NULL,"
    " sha256 TEXT NOT NULL, seen_sha256 TEXT,"
    " first_seen REAL NOT NULL, updated REAL NOT NULL,"
    " PRIMARY KEY (backend, server, tool))",
    "CREATE TABLE IF NOT EXISTS mcp_tool_pins_imported (backend TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS mcp_tool_definitions ("
    " sha256 TEXT PRIMARY KEY, definition TEXT NOT NULL)",
)
_UNREFERENCED: Final = (
    "DELETE FROM mcp_tool_definitions WHERE sha256 NOT IN"
    " (SELECT sha256 FROM mcp_tool_pins UNION ALL"
    " SELECT seen_sha256 FROM mcp_tool_pins WHERE seen_sha256 IS NOT NULL)"
)


class PinNotFound(LookupError):
    """No pin is recorded for that tool."""


class PinMismatch(ValueError):
    """The definition to approve is not the one the upstream currently lists."""


@dataclass(frozen=True, slots=True)
class PinEntry:
    """One tool as the admin API and the CLI show it."""

    backend: str
    server: str
    tool: str
    pinned_sha256: str | None
    """The approved definition's fingerprint (None: never pinned, or forgotten)."""
    current_sha256: str | None
    """The fingerprint of the definition the upstream lists now, as far as Crossway saw."""
    status: PinStatus
    """`blocked`: calls refused and the tool hidden; `flagged`: served with a warning."""
    findings: tuple[str, ...] = ()
    """Suspicious patterns found in the description (known to the process that saw it)."""

    @property
    def changed(self) -> bool:
        """Whether the upstream lists another definition than the pinned one."""
        return self.current_sha256 is not None and self.current_sha256 != self.pinned_sha256

    def to_json(self) -> dict[str, Any]:
        """The entry as the admin API answers it."""
        return {
            "backend": self.backend,
            "server": self.server,
            "tool": self.tool,
            "pinned_sha256": self.pinned_sha256,
            "current_sha256": self.current_sha256,
            "status": self.status,
            "changed": self.changed,
            "findings": list(self.findings),
        }


def default_pin_path() -> Path:
    """`$CROSSWAY_DATA_DIR/mcp-pins.sqlite3`, the data dir defaulting to `./.crossway`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / DEFAULT_PIN_DB


def pin_path(config: PinningConfig) -> Path:
    """The SQLite file a backend's pins are kept in."""
    return Path(config.path) if config.path else default_pin_path()


def status_of(pinned: str | None, seen: str | None, config: PinningConfig) -> PinStatus:
    """A stored row's status under `config` (without the scan findings, which are not stored)."""
    if seen is None or seen == pinned or config.mode == "off":
        return "ok"
    return "blocked" if config.mode == "block" else "flagged"


class PinFile:
    """Blocking access to the pin file; the gateway calls it from a worker thread."""

    def __init__(self, path: Path, backend: str) -> None:
        self.path = path
        self.backend = backend
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._import_legacy(conn)
            self._conn = conn
        return self._conn

    def _import_legacy(self, conn: sqlite3.Connection) -> None:
        legacy = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tool_pins'"
        ).fetchone()
        if legacy is None:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM mcp_tool_pins_imported WHERE backend = ?", (self.backend,)
            ).fetchone()
            if done is None:
                conn.execute(
                    "INSERT OR IGNORE INTO mcp_tool_pins"
                    " SELECT ?, server, tool, sha256, NULL, first_seen, first_seen FROM tool_pins",
                    (self.backend,),
                )
                conn.execute(
                    "INSERT INTO mcp_tool_pins_imported (backend) VALUES (?)", (self.backend,)
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def load(self) -> dict[tuple[str, str], str]:
        """Every pin of this backend: (server, tool) -> fingerprint."""
        rows = self._db().execute(
            "SELECT server, tool, sha256 FROM mcp_tool_pins WHERE backend = ?", (self.backend,)
        )
        return {(s, t): h for s, t, h in rows.fetchall()}

    def put(self, rows: list[tuple[str, str, str]], replace: bool) -> dict[tuple[str, str], str]:
        """Record first-seen pins (keeping existing ones unless `replace`); returns the pins
        already stored that differ from the rows given (another process pinned them first)."""
        db = self._db()
        now = time.time()
        action = (
            "UPDATE SET sha256 = excluded.sha256, seen_sha256 = NULL, updated = excluded.updated"
            if replace
            else "NOTHING"
        )
        db.executemany(
            "INSERT INTO mcp_tool_pins (backend, server, tool, sha256, seen_sha256, first_seen,"
            " updated) VALUES (?, ?, ?, ?, NULL, ?, ?)"
            f" ON CONFLICT (backend, server, tool) DO {action}",
            [(self.backend, s, t, h, now, now) for s, t, h in rows],
        )
        stored: dict[tuple[str, str], str] = {}
        for server, tool, digest in rows:
            found = self.row(server, tool)
            if found is not None and found[0] != digest:
                stored[(server, tool)] = found[0]
        return stored

    def set_seen(self, rows: list[tuple[str, str, str | None]]) -> None:
        """Record the definition each tool's upstream lists now (None: the pinned one)."""
        now = time.time()
        self._db().executemany(
            "UPDATE mcp_tool_pins SET seen_sha256 = ?, updated = ?"
            " WHERE backend = ? AND server = ? AND tool = ?",
            [(seen, now, self.backend, s, t) for s, t, seen in rows],
        )

    def keep_definitions(self, definitions: dict[str, str]) -> None:
        """Store definitions (fingerprint -> canonical JSON), dropping those no pin refers to."""
        db = self._db()
        db.executemany(
            "INSERT OR IGNORE INTO mcp_tool_definitions (sha256, definition) VALUES (?, ?)",
            list(definitions.items()),
        )
        db.execute(_UNREFERENCED)

    def definition(self, sha256: str) -> str | None:
        """The canonical JSON of the definition with that fingerprint, when it was kept."""
        if self._conn is None and not self.path.exists():
            return None
        found = (
            self._db()
            .execute("SELECT definition FROM mcp_tool_definitions WHERE sha256 = ?", (sha256,))
            .fetchone()
        )
        return None if found is None else str(found[0])

    def row(self, server: str, tool: str) -> tuple[str, str | None] | None:
        """(pinned, seen) of one tool, or None."""
        found = (
            self._db()
            .execute(
                "SELECT sha256, seen_sha256 FROM mcp_tool_pins"
                " WHERE backend = ? AND server = ? AND tool = ?",
                (self.backend, server, tool),
            )
            .fetchone()
        )
        return None if found is None else (str(found[0]), found[1])

    def entries(self, config: PinningConfig) -> list[PinEntry]:
        """Every pin of this backend, with its status under `config`."""
        if self._conn is None and not self.path.exists():
            return []
        rows = self._db().execute(
            "SELECT server, tool, sha256, seen_sha256 FROM mcp_tool_pins WHERE backend = ?"
            " ORDER BY server, tool",
            (self.backend,),
        )
        return [
            PinEntry(self.backend, s, t, h, seen or h, status_of(h, seen, config))
            for s, t, h, seen in rows.fetchall()
        ]

    def approve(self, server: str, tool: str, expected: str | None = None) -> str:
        """Make the definition the upstream lists now the pin; returns the new pin.

        `expected` (a fingerprint) guards against approving a definition that changed again
        since the operator looked at it."""
        if self._conn is None and not self.path.exists():
            raise PinNotFound(f"no pin for tool {tool!r} of server {server!r}")
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            found = self.row(server, tool)
            if found is None:
                raise PinNotFound(f"no pin for tool {tool!r} of server {server!r}")
            current = found[1] or found[0]
            if expected is not None and expected != current:
                raise PinMismatch(
                    f"tool {tool!r} of server {server!r} now has definition {current[:12]}, "
                    f"not {expected[:12]}"
                )
            db.execute(
                "UPDATE mcp_tool_pins SET sha256 = ?, seen_sha256 = NULL, updated = ?"
                " WHERE backend = ? AND server = ? AND tool = ?",
                (current, time.time(), self.backend, server, tool),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return current

    def forget(self, server: str, tool: str) -> bool:
        """Delete a tool's pin (its next listing is pinned anew); whether there was one."""
        if self._conn is None and not self.path.exists():
            return False
        cursor = self._db().execute(
            "DELETE FROM mcp_tool_pins WHERE backend = ? AND server = ? AND tool = ?",
            (self.backend, server, tool),
        )
        return cursor.rowcount > 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


__all__ = [
    "PinEntry",
    "PinFile",
    "PinMismatch",
    "PinNotFound",
    "PinStatus",
    "default_pin_path",
    "pin_path",
    "status_of",
]
