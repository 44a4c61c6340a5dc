"""Session state sealed into the `Mcp-Session-Id` Crossway hands out.

The id is ``cw2.`` + base64url(nonce || AES-256-GCM(JSON state)), with the prefix as associated
data. Any replica holding the same key opens it and re-attaches to the upstream sessions named
inside, so a session does not need sticky routing or a shared store. The AES key is derived
from the configured secret with HKDF-SHA256 under a fixed label; several secrets may be given
for rotation (the first seals, all open). Without a usable secret a random key made once per
process is used.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX: Final = "cw2."
NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
HKDF_INFO: Final = b"crossway mcp session id v2"
"""Fixed HKDF label: a key derived for session ids is good for nothing else."""
MAX_ID_CHARS: Final = 16384

_process_key: bytes | None = None


def derive_key(secret: str) -> bytes:
    """The AES-256 key for session ids sealed under `secret`."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=HKDF_INFO)
    return hkdf.derive(secret.encode())


def process_key() -> bytes:
    """A random key made once per process (kept across config reloads)."""
    global _process_key
    if _process_key is None:
        _process_key = os.urandom(KEY_BYTES)
    return _process_key


class SessionSealer:
    """Seals and opens session state; `secrets` is one secret or several (newest first)."""

    def __init__(self, secrets: str | Sequence[str] | None) -> None:
        given = [secrets] if isinstance(secrets, str) else list(secrets or ())
        keys = [derive_key(s) for s in given if s] or [process_key()]
        self._aeads = [AESGCM(key) for key in keys]

    def seal(self, state: dict[str, Any]) -> str:
        """An opaque, URL-safe session id carrying `state`."""
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._aeads[0].encrypt(nonce, orjson.dumps(state), PREFIX.encode())
        return PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, session_id: str) -> dict[str, Any] | None:
        """The state sealed in `session_id`, or None if it is not ours or was tampered with."""
        if not session_id.startswith(PREFIX) or len(session_id) > MAX_ID_CHARS:
            return None
        text = session_id[len(PREFIX) :]
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
        for aead in self._aeads:
            try:
                plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], PREFIX.encode())
                state = orjson.loads(plain)
            except (ValueError, InvalidTag, orjson.JSONDecodeError):
                continue
            return state if isinstance(state, dict) else None
        return None
