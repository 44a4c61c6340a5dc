"""JWT bearer-token validation against a JWKS or static keys (protocol-agnostic).

`JwtValidator.validate(token)` returns the token's claims or raises
`crossway.errors.Unauthenticated` (code `invalid_token`). Keys come from an inline JWKS, a
shared secret, and/or a JWKS URL. The URL is fetched with aiohttp at start, trusted for
`jwks_ttl` seconds (then refreshed in the background while the old keys keep serving), and
re-fetched at once when a token names a `kid` Crossway has not seen (at most once per
`jwks_min_refresh` seconds, and one fetch at a time however many requests wait for it).
Validated tokens are remembered briefly so a client sending the same token on every request
pays for the signature check once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import jwt

from crossway.config.policy import HMAC_ALGORITHMS, JwtConfig
from crossway.errors import Unauthenticated
from crossway.proxy.outbound import OutboundClient

log = logging.getLogger("crossway.policy.jwt")

TOKEN_CACHE_SIZE: Final = 4096
TOKEN_CACHE_SECONDS: Final = 60.0
_KTY_FOR_ALG_PREFIX: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, code="invalid_token")


def parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """Usable keys of a JWKS document by `kid` (keys without a kid get a synthetic one).

    Keys that cannot be used (unknown type, encryption keys) are skipped with a log line.
    """
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("JWKS document has no 'keys' list")
    parsed: dict[str, jwt.PyJWK] = {}
    for index, data in enumerate(keys):
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(data)
        except jwt.PyJWTError as exc:
            log.info("skipping JWKS key %s: %s", data.get("kid", index), exc)
            continue
        parsed[str(data.get("kid") or f"#{index}")] = key
    return parsed


def _read_jwks_file(path: str) -> dict[str, jwt.PyJWK]:
    """The keys of a JWKS file (read when the policy is built, i.e. at load and reload)."""
    import orjson

    try:
        with open(path, "rb") as handle:
            document = orjson.loads(handle.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"cannot read JWKS file {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"JWKS file {path} is not a JSON object")
    return parse_jwks(document)


class JwtValidator:
    """Validates bearer tokens per one `JwtConfig`. Create, `await start()`, use, `await close()`."""

    def __init__(self, config: JwtConfig, *, audiences: list[str] | None = None) -> None:
        self.config = config
        # Accepted `aud` values: never empty, so the audience is always checked.
        self.audiences = list(audiences if audiences is not None else config.audiences)
        self._algorithms = frozenset(config.algorithms)
        self._static: dict[str, jwt.PyJWK] = parse_jwks(config.jwks) if config.jwks else {}
        if config.jwks_file:
            self._static.update(_read_jwks_file(config.jwks_file))
        self._fetched: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._last_attempt = -float("inf")
        self._refresh: asyncio.Task[None] | None = None
        self._http: OutboundClient | None = None
        self._tokens: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._secret = config.secret.get_secret_value().encode() if config.secret else None

    async def start(self) -> None:
        """Fetch the JWKS once; a failure is logged and retried when a token needs it."""
        if self.config.jwks_url:
            await self._refresh_keys()

    async def close(self) -> None:
        """Stop a background refresh and close the HTTP session."""
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- keys ---------------------------------------------------------------------------------

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        assert self.config.jwks_url is not None
        if self._http is None:
            self._http = OutboundClient(  # no redirects: the keys come from this URL only
                timeout=aiohttp.ClientTimeout(total=self.config.jwks_timeout)
            )
        async with self._http.get(
            self.config.jwks_url, headers={"accept": "application/json"}
        ) as response:
            if response.status != 200:
                raise ValueError(f"JWKS endpoint answered HTTP {response.status}")
            document = await response.json(content_type=None)
        if not isinstance(document, dict):
            raise ValueError("JWKS document is not a JSON object")
        return parse_jwks(document)

    async def _do_refresh(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            keys = await self._fetch()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.config.jwks_url, exc)
            return
        if self._fetched.keys() - keys.keys():
            # A key was rotated out: tokens it signed must not live on in the cache.
            self._tokens.clear()
        self._fetched = keys
        self._fetched_at = time.monotonic()

    async def _refresh_keys(self) -> None:
        """Fetch the JWKS, joining a fetch already under way instead of starting another."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._do_refresh())
        await asyncio.shield(self._refresh)

    def _maybe_refresh_in_background(self) -> None:
        if not self.config.jwks_url:
            return
        now = time.monotonic()
        stale = now - self._fetched_at > self.config.jwks_ttl
        if stale and now - self._last_attempt > self.config.jwks_min_refresh:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self._do_refresh())

    def _candidates(self, kid: str | None, alg: str) -> list[Any]:
        if alg in HMAC_ALGORITHMS:
            return [self._secret] if self._secret is not None else []
        pool = {**self._static, **self._fetched}
        if kid is not None:
            key = pool.get(kid)
            return [key] if key is not None else []
        kty = _KTY_FOR_ALG_PREFIX.get(alg[:2])
        return [k for k in pool.values() if k.key_type == kty]

    async def _keys_for(self, kid: str | None, alg: str) -> list[Any]:
        self._maybe_refresh_in_background()
        keys = self._candidates(kid, alg)
        if keys or alg in HMAC_ALGORITHMS or not self.config.jwks_url:
            return keys
        # An unknown kid: the provider may have rotated keys. Re-fetch, but not too often.
        if time.monotonic() - self._last_attempt >= self.config.jwks_min_refresh or (
            self._refresh is not None and not self._refresh.done()
        ):
            await self._refresh_keys()
            keys = self._candidates(kid, alg)
        return keys

    # -- tokens -------------------------------------------------------------------------------

    async def validate(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises `Unauthenticated` (code `invalid_token`)."""
        now = time.time()
        cached = self._tokens.get(token)
        if cached is not None:
            if cached[0] > now:
                self._tokens.move_to_end(token)
                return cached[1]
            del self._tokens[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _invalid(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        keys = await self._keys_for(kid if isinstance(kid, str) else None, alg)
        if not keys:
            raise _invalid("no key to verify the token" + (f" (kid {kid!r})" if kid else ""))
        claims = self._decode(token, alg, keys)
        self._remember(token, claims, now)
        return claims

    def _decode(self, token: str, alg: str, keys: list[Any]) -> dict[str, Any]:
        config = self.config
        if not self.audiences:
            raise _invalid("no audience configured")  # config validation makes this unreachable
        options: Any = {"require": list(config.required_claims), "verify_aud": True}
        error: jwt.PyJWTError | None = None
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audiences,
                    issuer=config.issuer,
                    leeway=config.clock_skew,
                    options=options,
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                error = exc  # maybe the next key (tokens without a kid)
            except jwt.ExpiredSignatureError:
                raise _invalid("token expired") from None
            except jwt.ImmatureSignatureError:
                raise _invalid("token not yet valid") from None
            except jwt.InvalidAudienceError:
                raise _invalid("token audience not accepted") from None
            except jwt.InvalidIssuerError:
                raise _invalid("token issuer not accepted") from None
            except jwt.MissingRequiredClaimError as exc:
                raise _invalid(f"token lacks the {exc.claim!r} claim") from None
            except jwt.PyJWTError as exc:
                error = exc
        if isinstance(error, jwt.InvalidSignatureError):
            raise _invalid("token signature invalid")
        raise _invalid(f"invalid token: {error}")

    def _remember(self, token: str, claims: dict[str, Any], now: float) -> None:
        until = now + TOKEN_CACHE_SECONDS
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            until = min(until, float(exp) + self.config.clock_skew)
        self._tokens[token] = (until, claims)
        if len(self._tokens) > TOKEN_CACHE_SIZE:
            self._tokens.popitem(last=False)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer ...` header in raw ASGI headers, if any."""
    for name, value in headers:
        if name == b"authorization":
            value = value.strip()
            if value[:7].lower() != b"bearer ":
                return None
            token = value[7:].strip()
            return token.decode("latin-1") if token else None
    return None


__all__ = ["JwtValidator", "bearer_token", "parse_jwks"]
