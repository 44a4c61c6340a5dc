"""HTTP Basic authentication against an htpasswd file with bcrypt entries.

bcrypt is slow on purpose (50-250 ms at cost 10-12), so it never runs on the event loop: a
check runs in a worker thread (bcrypt releases the GIL), at most `MAX_CONCURRENT_CHECKS` at
a time, and identical checks in flight share one run. A successful check is remembered for
`cache_seconds`, keyed by an HMAC of `user:password` under a per-process random key (the cache
never holds anything an attacker could brute-force offline faster than bcrypt), so a client
that sends the same credentials on every request pays one dict lookup. Failed checks are not
cached. A user the file does not name costs a bcrypt run too, so timing does not tell which
users exist.

The htpasswd file is read when the policy is built (config load and reload) and again when
its modification time changes (polled every `HTPASSWD_POLL_SECONDS`, off the request path);
a new file empties the cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Final

import bcrypt

from crossway.config.policy import BasicAuthConfig
from crossway.errors import Unauthenticated
from crossway.policy.authn import AuthnPolicy, consume, set_identity
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.types import Scope

log = logging.getLogger("crossway.policy.basic_auth")

BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX_PASSWORD_BYTES: Final = 72
"""bcrypt reads at most this many bytes of a password (`htpasswd -B` truncates there too)."""
MAX_CACHED_CREDENTIALS: Final = 10_000
MAX_CONCURRENT_CHECKS: Final = 4
"""bcrypt runs at once per policy (each holds a thread of the default executor)."""
HTPASSWD_POLL_SECONDS: Final = 2.0
DEFAULT_BCRYPT_COST: Final = 10
_BCRYPT_ALPHABET: Final = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class HtpasswdError(ValueError):
    """An htpasswd file that cannot be used (unreadable, malformed, or not bcrypt)."""


def read_htpasswd(path: str) -> dict[str, bytes]:
    """Parse an htpasswd file into user -> bcrypt hash; raise `HtpasswdError` naming the line
    of an entry that is not bcrypt (MD5 `$apr1$`, SHA `{SHA}`, crypt, plain text)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HtpasswdError(f"cannot read htpasswd file {path}: {exc}") from None
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise HtpasswdError(f"{path} line {number}: expected 'user:hash'")
        if not hashed.startswith(BCRYPT_PREFIXES) or len(hashed) != 60:
            raise HtpasswdError(
                f"{path} line {number}: user {user!r} is not a bcrypt entry; only bcrypt "
                "($2y$/$2b$/$2a$) is accepted: create it with `htpasswd -B`"
            )
        if user in users:
            raise HtpasswdError(f"{path} line {number}: user {user!r} is listed twice")
        users[user] = hashed.encode("ascii")
    return users


def dummy_hash(users: dict[str, bytes]) -> bytes:
    """A well-formed bcrypt hash nobody's password matches, at the cost of the file's first
    entry: checking an unknown user then takes as long as checking a known one."""
    cost = int(next(iter(users.values()))[4:6]) if users else DEFAULT_BCRYPT_COST
    digest = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31))
    return bcrypt.gensalt(cost) + digest.encode("ascii")


def _check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD_BYTES], hashed)
    except ValueError:
        return False  # a hash bcrypt cannot read: never a match


class BasicAuthPolicy(AuthnPolicy):
    """`Authorization: Basic <base64 user:password>` checked against an htpasswd file."""

    method = "basic"

    def __init__(self, config: BasicAuthConfig) -> None:
        super().__init__(config.mode)
        self.path = config.htpasswd
        self.users = read_htpasswd(config.htpasswd)
        self._dummy = dummy_hash(self.users)
        self._mtime = _mtime(config.htpasswd)
        realm = config.realm.replace("\\", "\\\\").replace('"', '\\"')
        self._challenge = {"www-authenticate": f'Basic realm="{realm}", charset="UTF-8"'}
        self._forward = config.forward
        self._ttl = config.cache_seconds
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Task[bool]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._watch: asyncio.Task[None] | None = None
        self._generation = 0

    async def start(self) -> None:
        self._watch = asyncio.ensure_future(self._watch_file())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def missing(self, scope: Scope) -> Unauthenticated:
        return Unauthenticated(
            "this endpoint needs a user name and password (HTTP Basic)",
            code="missing_credentials",
            headers=dict(self._challenge),
        )

    def _invalid(self, message: str = "invalid user name or password") -> Unauthenticated:
        return Unauthenticated(message, code="invalid_credentials", headers=dict(self._challenge))

    async def authenticate(self, scope: Scope, ctx: RequestContext) -> bool:
        consumed = ctx.attrs.get(CONSUMED_HEADERS)
        if consumed is not None and b"authorization" in consumed:
            return False  # an earlier policy took the Authorization header
        encoded = _basic_credentials(scope)
        if encoded is None:
            return False
        try:
            user_b, sep, password = base64.b64decode(encoded, validate=True).partition(b":")
            user = user_b.decode("utf-8")
        except (binascii.Error, ValueError):
            raise self._invalid("malformed Basic credentials") from None
        if not sep or not user:
            raise self._invalid("malformed Basic credentials")
        key = hmac.digest(self._cache_key, user_b + b":" + password, hashlib.sha256)
        if not await self._verify(key, user, password):
            raise self._invalid()
        set_identity(ctx, user, self.method)
        if not self._forward:
            consume(ctx, b"authorization")
        return True

    async def _verify(self, key: bytes, user: str, password: bytes) -> bool:
        hit = self._verified.get(key)
        if hit is not None:
            if hit[1] > time.monotonic():
                return True
            del self._verified[key]
        # One bcrypt run per distinct credential in flight, in its own task: a caller that
        # goes away does not cancel it for the others waiting on it.
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._check(key, user, password))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._forget_pending(key, done))
        return await asyncio.shield(task)

    async def _check(self, key: bytes, user: str, password: bytes) -> bool:
        hashed = self.users.get(user)
        generation = self._generation
        async with self._slots:
            ok = await asyncio.to_thread(_check, password, hashed or self._dummy)
        if not ok or hashed is None:
            return False
        if self._ttl > 0 and generation == self._generation:  # not a file replaced meanwhile
            self._remember(key, user, time.monotonic() + self._ttl)
        return True

    def _forget_pending(self, key: bytes, done: asyncio.Task[bool]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]

    def _remember(self, key: bytes, user: str, expires: float) -> None:
        self._verified[key] = (user, expires)
        while len(self._verified) > MAX_CACHED_CREDENTIALS:
            self._verified.popitem(last=False)

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(HTPASSWD_POLL_SECONDS)
            mtime = await asyncio.to_thread(_mtime, self.path)
            if mtime is None or mtime == self._mtime:
                continue
            try:
                users = await asyncio.to_thread(read_htpasswd, self.path)
            except HtpasswdError as exc:
                log.error("htpasswd changed but cannot be used, keeping the previous: %s", exc)
                self._mtime = mtime
                continue
            self._mtime = mtime
            self.users = users
            self._dummy = dummy_hash(users)
            self._verified.clear()
            self._generation += 1
            log.info("htpasswd %s reloaded: %d users", self.path, len(users))


def _basic_credentials(scope: Scope) -> bytes | None:
    value: bytes
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value[:6].lower() == b"basic ":
                return value[6:].strip()
            return None
    return None


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None


__all__ = ["BasicAuthPolicy", "HtpasswdError", "read_htpasswd"]
