"""A request log store filled with many realistic entries (for the console's page timings)."""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from crossway.store.request_log_sqlite import RequestLogFile

MODELS = ("sample-model", "sample-model-mini", "gpt-4o-mini", "claude-haiku")
TOOLS = ("sample_echo", "sample_add", "sample_word_count")
AGENTS = ("writer", "vision")
KEYS = tuple(f"key-{i:03d}" for i in range(40))
TEAMS = ("research", "support", "platform")


_BUILT: dict[tuple[int, float], tuple[Path, float]] = {}
"""Stores already written in this test process: (rows, span) -> (file, when it was written)."""


def fill_request_log(path: Path, rows: int = 100_000, *, span: float = 7 * 86400) -> None:
    """Write `rows` entries spread over the last `span` seconds (LLM, MCP and A2A) to `path`.

    The first store of a size is written once per test process and copied after that, its
    times moved forward by the time since (the same entries, ending now)."""
    built = _BUILT.get((rows, span))
    if built is None:
        master = Path(tempfile.mkdtemp(prefix="crossway-logstore-")) / "request-log.sqlite3"
        _write(master, rows, span)
        built = _BUILT[(rows, span)] = (master, time.time())
    master, written = built
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(master, path)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE request_log SET time = time + ?", (time.time() - written,))
    finally:
        conn.close()


def _write(path: Path, rows: int, span: float) -> None:
    rng = random.Random(14)
    now = time.time()
    store = RequestLogFile(path)
    batch: list[dict[str, Any]] = []
    try:
        for i in range(rows):
            kind = rng.choices(("llm", "mcp", "a2a"), (0.7, 0.2, 0.1))[0]
            status = rng.choices((200, 400, 429, 502), (0.93, 0.03, 0.02, 0.02))[0]
            when = now - span + span * i / rows
            key = rng.choice(KEYS)
            entry: dict[str, Any] = {
                "time": when,
                "request_id": f"req-{i}",
                "trace_id": f"{rng.getrandbits(128):032x}",
                "route": kind,
                "backend": {"llm": "llm", "mcp": "tools", "a2a": "agents"}[kind],
                "kind": kind,
                "method": "POST",
                "path": {"llm": "/v1/chat/completions", "mcp": "/mcp", "a2a": "/a2a/writer/"}[kind],
                "status": status,
                "duration_ms": rng.lognormvariate(4.0, 0.6),
                "key": key,
                "user": f"user-{int(key[-3:]) % 7}",
                "team": TEAMS[int(key[-3:]) % 3],
                "model": rng.choice(MODELS) if kind == "llm" else None,
                "provider": "sample" if kind == "llm" else None,
                "tool": rng.choice(TOOLS) if kind == "mcp" else None,
                "agent": rng.choice(AGENTS) if kind == "a2a" else None,
                "cost": round(rng.uniform(0.00001, 0.002), 6) if kind == "llm" else None,
                "usage": orjson.dumps(
                    {"prompt_tokens": rng.randint(5, 900), "completion_tokens": rng.randint(1, 400)}
                ).decode()
                if kind == "llm"
                else None,
                "request": '{"messages": [{"role": "user", "content": "hello <EMAIL>"}]}',
                "response": '{"content": "hi"}',
                "truncated": 0,
                "guards": orjson.dumps(
                    [
                        {
                            "guard": "pii",
                            "detector": "pii.email",
                            "action": "mask",
                            "direction": "response",
                            "count": 1,
                        }
                    ]
                ).decode()
                if rng.random() < 0.05
                else None,
            }
            batch.append(entry)
            if len(batch) == 5000:
                store.insert(batch)
                batch = []
        if batch:
            store.insert(batch)
    finally:
        store.close()
