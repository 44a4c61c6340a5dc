"""The console's session cookie: a signed, expiring value the browser holds.

A session is stateless (`<payload>.<signature>`, HMAC-SHA256), so it works on every replica
behind a load balancer and survives a restart. With `admin.token` set, the signing key is
derived from the token: rotating the token ends every session. Without one (the open loopback
console) the key is random per process. Each session carries its own CSRF token, which every
state-changing request must echo (a form field or the `X-CSRF-Token` header).

A signed-out session's id is remembered until it would have expired, in this process only: on
other replicas it lasts until its expiry (`SESSION_SECONDS`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Final

import orjson

COOKIE: Final = "__Host-crossway-session"
"""The cookie's name: `__Host-` makes browsers insist on Secure, Path=/ and no Domain."""
SESSION_SECONDS: Final = 8 * 3600
"""How long a signed-in session lasts."""
ANONYMOUS_SECONDS: Final = 3600
"""How long a not-signed-in session (it only carries the login form's CSRF token) lasts."""
_KEY_LABEL: Final = b"crossway-console-session-v1"


@dataclass(frozen=True, slots=True)
class Session:
    """One browser's session: `signed_in` once the admin token was shown (or the console is
    open), `csrf` the token its state changes must carry."""

    sid: str
    csrf: str
    signed_in: bool
    expires: float


class SessionCodec:
    """Issues and checks session cookies with one key."""

    def __init__(self, token: str | None) -> None:
        if token is None:
            self._key = secrets.token_bytes(32)
        else:
            self._key = hmac.new(token.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    def new(self, *, signed_in: bool) -> Session:
        """A fresh session (new id and CSRF token)."""
        lifetime = SESSION_SECONDS if signed_in else ANONYMOUS_SECONDS
        return Session(
            sid=secrets.token_urlsafe(18),
            csrf=secrets.token_urlsafe(24),
            signed_in=signed_in,
            expires=time.time() + lifetime,
        )

    def encode(self, session: Session) -> str:
        payload = orjson.dumps(
            {"s": session.sid, "c": session.csrf, "i": session.signed_in, "e": session.expires}
        )
        body = base64.urlsafe_b64encode(payload).rstrip(b"=")
        return f"{body.decode()}.{self._sign(body)}"

    def decode(self, value: str | None) -> Session | None:
        """The session `value` holds, or None when it is missing, forged, expired or ended."""
        if not value or value.count(".") != 1 or len(value) > 1024:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(body.encode())):
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(
                sid=str(data["s"]),
                csrf=str(data["c"]),
                signed_in=bool(data["i"]),
                expires=float(data["e"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= time.time():
            return None
        with self._lock:
            if session.sid in self._ended:
                return None
        return session

    def end(self, session: Session) -> None:
        """Sign `session` out (in this process; see the module's docstring)."""
        now = time.time()
        with self._lock:
            self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
            self._ended[session.sid] = session.expires

    def _sign(self, body: bytes) -> str:
        digest = hmac.new(self._key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(session: Session, presented: str | None) -> bool:
    """Whether `presented` is `session`'s CSRF token (compared in constant time)."""
    return presented is not None and hmac.compare_digest(presented.encode(), session.csrf.encode())
