"""Session state sealed into the `Mcp-Session-Id` Crossway hands out.

The id is ``cw1.`` + base64url(nonce || AES-256-GCM(JSON state)). Any replica holding the same
key opens it and re-attaches to the upstream sessions named inside, so a session does not need
sticky routing or a shared store. The key is SHA-256 of the configured secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX: Final = "cw1."
NONCE_BYTES: Final = 12


class SessionSealer:
    """Seals and opens session state."""

    def __init__(self, secret: str | None) -> None:
        key = hashlib.sha256(secret.encode()).digest() if secret else os.urandom(32)
        self._aead = AESGCM(key)

    def seal(self, state: dict[str, Any]) -> str:
        """An opaque, URL-safe session id carrying `state`."""
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._aead.encrypt(nonce, orjson.dumps(state), PREFIX.encode())
        return PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, session_id: str) -> dict[str, Any] | None:
        """The state sealed in `session_id`, or None if it is not ours or was tampered with."""
        if not session_id.startswith(PREFIX) or len(session_id) > 16384:
            return None
        text = session_id[len(PREFIX) :]
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], PREFIX.encode())
            state = orjson.loads(plain)
        except (binascii.Error, ValueError, InvalidTag, orjson.JSONDecodeError):
            return None
        return state if isinstance(state, dict) else None
