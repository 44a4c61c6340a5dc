"""The downstream sessions one replica holds, and re-attaching to sessions made elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from crossway.errors import ServiceUnavailable
from crossway.mcp.federation import Federation
from crossway.mcp.sealing import SessionSealer
from crossway.mcp.session import Session
from crossway.mcp.upstream.base import ClientHello

logger = logging.getLogger(__name__)

REAP_INTERVAL_SECONDS: Final = 30.0
CLIENT_INFO_META_KEY: Final = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META_KEY: Final = "io.modelcontextprotocol/clientCapabilities"


class SessionStore:
    """Sessions by id. An id this replica does not hold is opened with the shared key and the
    session rebuilt from what it carries (client hello, upstream session tokens)."""

    def __init__(self, federation: Federation, sealer: SessionSealer) -> None:
        self.federation = federation
        self.sealer = sealer
        self.cfg = federation.cfg
        self.sessions: dict[str, Session] = {}
        self._stateless: Session | None = None
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def create(self, hello: ClientHello, *, connect: bool = True) -> Session:
        """A new session; its upstream sessions are opened before its id is sealed."""
        if len(self.sessions) >= self.cfg.max_sessions:
            raise ServiceUnavailable("too many MCP sessions on this replica")
        session = Session(self.federation, None, hello)
        if connect:
            await self.federation.connect_all(session)
        session.id = self.seal(session)
        self.sessions[session.id] = session
        return session

    def seal(self, session: Session) -> str:
        hello = session.hello
        return self.sealer.seal(
            {
                "p": hello.protocol_version,
                "c": hello.capabilities,
                "i": hello.client_info,
                "u": session.resume_tokens(),
                "t": int(time.time()),
            }
        )

    def get(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_used = time.monotonic()
            return session
        state = self.sealer.open(session_id)
        if state is None or len(self.sessions) >= self.cfg.max_sessions:
            return None
        hello = ClientHello(
            protocol_version=str(state.get("p", "")),
            capabilities=_dict(state.get("c")),
            client_info=_dict(state.get("i")),
        )
        tokens = {str(k): str(v) for k, v in _dict(state.get("u")).items()}
        session = Session(self.federation, session_id, hello, resume=tokens)
        self.sessions[session_id] = session
        logger.info("MCP session re-attached on this replica")
        return session

    def stateless(self, meta: dict[str, Any]) -> Session:
        """The session that serves 2026-07-28 requests (they carry no session)."""
        if self._stateless is None:
            hello = ClientHello(
                protocol_version="2026-07-28",
                capabilities=_dict(meta.get(CLIENT_CAPABILITIES_META_KEY)),
                client_info=_dict(meta.get(CLIENT_INFO_META_KEY))
                or {"name": "stateless", "version": "0"},
            )
            self._stateless = Session(self.federation, None, hello)
        return self._stateless

    async def delete(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            session = self.get(session_id)
            if session is None:
                return False
            self.sessions.pop(session_id, None)
        await session.close()
        return True

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        sessions = list(self.sessions.values())
        if self._stateless is not None:
            sessions.append(self._stateless)
        self.sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_SECONDS)
            cutoff = time.monotonic() - self.cfg.session_idle_seconds
            idle = [
                sid
                for sid, s in self.sessions.items()
                if s.last_used < cutoff and not s.inflight and s.stream.queue is None
            ]
            for sid in idle:
                session = self.sessions.pop(sid, None)
                if session is not None:
                    await session.close()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
