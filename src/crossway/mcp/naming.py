"""How federated names and URIs are formed, and read back.

Tool and prompt names: ``<server><separator><name>`` (``everything_echo``). Server names may not
contain ``_``, so splitting at the first separator is unambiguous. When the result would not
match ``^[a-zA-Z0-9_-]{1,64}$`` (a long name, or characters such as ``.`` or ``/``), the invalid
characters become ``-`` and a long name is cut and suffixed with 8 hex digits of the original
name's SHA-256; such names are read back through the table built while listing (`NameTable`).
Both forms are stable: they depend only on the server's and the tool's names.

Resource URIs: ``crossway://<server>/<original uri>`` — the original is appended unchanged, so
templates keep their ``{variables}`` and the mapping reverses by splitting at the first ``/``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

MAX_NAME: Final = 64
URI_PREFIX: Final = "crossway://"
_VALID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INVALID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_LEN: Final = 8


class Naming:
    """Prefixes and un-prefixes names and URIs for one backend."""

    def __init__(self, prefixed: dict[str, bool], separator: str) -> None:
        self.prefixed = prefixed
        """Server name -> whether its names carry the prefix."""
        self.separator = separator
        self.unprefixed = [name for name, on in prefixed.items() if not on]
        # Names that had to be hashed, federated -> (server, original); filled while listing.
        self._hashed: dict[str, tuple[str, str]] = {}

    def name(self, server: str, original: str) -> str:
        """The federated name of a tool or prompt."""
        if not self.prefixed[server]:
            return original
        candidate = f"{server}{self.separator}{original}"
        if _VALID.match(candidate):
            return candidate
        cleaned = _INVALID_CHARS.sub("-", candidate)
        digest = hashlib.sha256(original.encode()).hexdigest()[:_HASH_LEN]
        cleaned = f"{cleaned[: MAX_NAME - _HASH_LEN - 1]}-{digest}"
        self._hashed[cleaned] = (server, original)
        return cleaned

    def split(self, federated: str) -> tuple[str, str] | None:
        """Server and original name of a federated name; None if no server owns it.

        A name without a known prefix belongs to the first unprefixed server (the caller may
        refine that with its listings)."""
        hashed = self._hashed.get(federated)
        if hashed is not None:
            return hashed
        head, sep, tail = federated.partition(self.separator)
        if sep and tail and self.prefixed.get(head):
            return head, tail
        if self.unprefixed:
            return self.unprefixed[0], federated
        return None

    def uri(self, server: str, original: str) -> str:
        """The federated URI of a resource or resource template."""
        if not self.prefixed[server]:
            return original
        return f"{URI_PREFIX}{server}/{original}"

    def split_uri(self, uri: str) -> tuple[str, str] | None:
        """Server and original URI of a federated URI; None if no server owns it."""
        if uri.startswith(URI_PREFIX):
            server, sep, original = uri[len(URI_PREFIX) :].partition("/")
            if sep and self.prefixed.get(server):
                return server, original
        if self.unprefixed:
            return self.unprefixed[0], uri
        return None
