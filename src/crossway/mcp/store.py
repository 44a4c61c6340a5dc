"""The downstream sessions one replica holds, and re-attaching to sessions made elsewhere.

A session id is a capability, so every use of one is checked here, in this order:

- it opens under one of the session keys (`crossway.mcp.sealing`);
- it was issued to the same caller (`caller_subject`, sealed in at `initialize`): another
  caller's request gets the same 404 as an unknown id, and is logged;
- it is younger than `session_max_seconds` (its issue time is sealed in, so every replica
  agrees);
- this replica has not seen it idle for `session_idle_seconds` (idle time is known only where
  the session was served: a replica that never held it accepts it until its maximum age);
- it was not ended by `DELETE` (or an ended legacy SSE stream): ended ids are revoked in the
  configured store, in memory or in Redis, for as long as they could still have lived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from crossway.errors import ServiceUnavailable
from crossway.mcp.federation import Federation
from crossway.mcp.sealing import SessionSealer
from crossway.mcp.session import Session
from crossway.mcp.upstream.base import ClientHello
from crossway.store.revocations import MemoryRevocations, RevocationStore

if TYPE_CHECKING:
    from crossway.server.context import RequestContext

logger = logging.getLogger(__name__)

REAP_INTERVAL_SECONDS: Final = 30.0
CLIENT_INFO_META_KEY: Final = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
REVOKED_NAMESPACE: Final = "crossway:mcp:revoked:"
"""Prefix of the revocation store's keys for MCP session ids."""
REVOCATION_ID_CHARS: Final = 32


def caller_subject(ctx: RequestContext | None) -> str | None:
    """Who is calling, as sealed into the session ids they are given; None when anonymous.

    The one place that decides what "the same caller" means: how they authenticated, the
    issuer (for JWTs) and the subject.
    """
    identity = ctx.identity if ctx is not None else None
    if not identity:
        return None
    method = identity.get("auth") or identity.get("method")
    return orjson.dumps([method, identity.get("iss"), identity.get("sub")]).decode()


def revocation_id(session_id: str) -> str:
    """The key a session id is revoked under (a hash: the store never holds usable ids)."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:REVOCATION_ID_CHARS]


class SessionStore:
    """Sessions by id. An id this replica does not hold is opened with the shared key and the
    session rebuilt from what it carries (client hello, upstream session tokens)."""

    def __init__(
        self,
        federation: Federation,
        sealer: SessionSealer,
        revocations: RevocationStore | None = None,
    ) -> None:
        self.federation = federation
        self.sealer = sealer
        self.cfg = federation.cfg
        self.revocations: RevocationStore = revocations or MemoryRevocations()
        self.sessions: dict[str, Session] = {}
        self._went_idle = MemoryRevocations()
        """Ids this replica ended for idleness: not revoked everywhere (another replica may
        be serving them), but never re-attached here."""
        self._stateless: Session | None = None
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def create(
        self, hello: ClientHello, subject: str | None = None, *, connect: bool = True
    ) -> Session:
        """A new session for `subject`; its upstream sessions are opened before its id is
        sealed."""
        if len(self.sessions) >= self.cfg.max_sessions:
            raise ServiceUnavailable("too many MCP sessions on this replica")
        session = Session(self.federation, None, hello)
        session.subject = subject
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
                "t": round(session.issued_at, 3),
                "s": session.subject,
            }
        )

    async def get(
        self, session_id: str, subject: str | None, *, attach: bool = True
    ) -> Session | None:
        """The live session `session_id` names for the caller `subject`, or None (the caller
        answers 404). `attach=False` only looks at sessions held here. Raises
        `StoreUnavailable` if the revocation store cannot be asked."""
        session = self.sessions.get(session_id)
        if session is not None:
            if session.subject != subject:
                _refuse_other_caller(session_id)
                return None
            if self._expired(session.issued_at) or self._idle(session):
                await self._end_here(session)
                return None
            key = session.revocation_key
            if key is None:
                key = session.revocation_key = revocation_id(session_id)
            if await self.revocations.is_revoked(key):
                await self._end_here(session)  # ended on another replica
                return None
            session.last_used = time.monotonic()
            return session
        if not attach:
            return None
        state = self.sealer.open(session_id)
        if state is None:
            return None
        if state.get("s") != subject:
            _refuse_other_caller(session_id)
            return None
        issued_at = state.get("t")
        if not isinstance(issued_at, int | float) or self._expired(float(issued_at)):
            return None
        rid = revocation_id(session_id)
        if self._went_idle.revoked_now(rid) or await self.revocations.is_revoked(rid):
            return None
        if len(self.sessions) >= self.cfg.max_sessions:
            raise ServiceUnavailable("too many MCP sessions on this replica")
        hello = ClientHello(
            protocol_version=str(state.get("p", "")),
            capabilities=_dict(state.get("c")),
            client_info=_dict(state.get("i")),
        )
        tokens = {str(k): str(v) for k, v in _dict(state.get("u")).items()}
        session = Session(self.federation, session_id, hello, resume=tokens)
        session.issued_at = float(issued_at)
        session.subject = subject
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

    async def delete(self, session_id: str, subject: str | None) -> bool:
        """End the session for good (`DELETE`): False if the caller cannot see it."""
        session = await self.get(session_id, subject)
        if session is None:
            return False
        await self.end(session)
        return True

    async def end(self, session: Session) -> None:
        """Close `session` and revoke its id on every replica sharing the store."""
        self.sessions.pop(session.id or "", None)
        await session.close()
        if session.id is not None:
            rid = revocation_id(session.id)
            ttl = self._time_left(session.issued_at)
            self._went_idle.revoke_now(rid, ttl)  # refused here even if the store is down
            await self.revocations.revoke(rid, ttl)

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
        await self.revocations.close()

    # -- expiry ---------------------------------------------------------------------------------

    def _time_left(self, issued_at: float) -> float:
        return self.cfg.session_max_seconds - (time.time() - issued_at)

    def _expired(self, issued_at: float) -> bool:
        return self._time_left(issued_at) <= 0

    def _idle(self, session: Session) -> bool:
        cutoff = time.monotonic() - self.cfg.session_idle_seconds
        return session.last_used < cutoff and not session.inflight and session.stream.queue is None

    async def _end_here(self, session: Session) -> None:
        """Drop an expired session from this replica; an idle one is never re-attached here."""
        if session.id is not None:
            self.sessions.pop(session.id, None)
            if not self._expired(session.issued_at):
                self._went_idle.revoke_now(
                    revocation_id(session.id), self._time_left(session.issued_at)
                )
        await session.close()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_SECONDS)
            ended = [
                s for s in self.sessions.values() if self._expired(s.issued_at) or self._idle(s)
            ]
            for session in ended:
                try:
                    await self._end_here(session)
                except Exception:
                    logger.debug("closing an expired session failed", exc_info=True)


def _refuse_other_caller(session_id: str) -> None:
    logger.warning(
        "MCP session id presented by another caller than the one it was issued to; refused "
        "(session %s)",
        revocation_id(session_id)[:12],
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
