"""JWT validation against a JWKS served by a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from crossway.config.policy import JwtConfig, JwtPolicyConfig
from crossway.errors import Unauthenticated
from crossway.policy.jwt import JwtValidator, bearer_token

ISSUER = "https://issuer.test"
AUDIENCE = "https://gateway.test/mcp"


def _jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    data: dict[str, Any] = algo.to_jwk(private.public_key(), as_dict=True)
    data.update(kid=kid, alg=alg, use="sig")
    return data


@dataclass
class Idp:
    """A tiny identity provider: a JWKS endpoint whose keys the test can rotate."""

    url: str
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    hits: int = 0
    fail: bool = False
    delay: float = 0.0

    def add_key(self, kid: str, alg: str = "RS256", publish: bool = True) -> None:
        private = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg.startswith(("RS", "PS"))
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.keys[kid] = (private, alg)
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_jwk(self.keys[k][0], k, self.keys[k][1]) for k in self.published]}

    def token(self, kid: str = "k1", **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        private, alg = self.keys[kid]
        return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    state: dict[str, Idp] = {}

    async def jwks(request: web.Request) -> web.Response:
        provider = state["idp"]
        provider.hits += 1
        if provider.delay:
            await asyncio.sleep(provider.delay)
        if provider.fail:
            return web.Response(status=503)
        return web.json_response(provider.jwks())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    provider = Idp(url=f"http://127.0.0.1:{port}/jwks")
    provider.add_key("k1")
    state["idp"] = provider
    yield provider
    await runner.cleanup()


async def _validator(idp: Idp, **overrides: Any) -> JwtValidator:
    config = JwtConfig(jwks_url=idp.url, issuer=ISSUER, audiences=[AUDIENCE], **overrides)
    validator = JwtValidator(config)
    await validator.start()
    return validator


async def test_valid_token_returns_claims(idp: Idp) -> None:
    validator = await _validator(idp)
    claims = await validator.validate(idp.token(groups=["eng"]))
    assert claims["sub"] == "alice" and claims["groups"] == ["eng"]
    assert idp.hits == 1
    await validator.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "token expired"),
        ({"aud": "https://other.test"}, "audience not accepted"),
        ({"iss": "https://evil.test"}, "issuer not accepted"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"exp": None}, "lacks the 'exp' claim"),
    ],
)
async def test_claim_checks(idp: Idp, overrides: dict[str, Any], message: str) -> None:
    validator = await _validator(idp)
    with pytest.raises(Unauthenticated, match=message) as info:
        await validator.validate(idp.token(**overrides))
    assert info.value.code == "invalid_token"
    await validator.close()


async def test_clock_skew_is_tolerated(idp: Idp) -> None:
    validator = await _validator(idp, clock_skew=120)
    assert await validator.validate(idp.token(exp=int(time.time()) - 60))
    strict = await _validator(idp, clock_skew=0)
    with pytest.raises(Unauthenticated, match="expired"):
        await strict.validate(idp.token(exp=int(time.time()) - 60))
    await validator.close()
    await strict.close()


async def test_bad_signature_and_garbage(idp: Idp) -> None:
    validator = await _validator(idp)
    forged = idp.token()
    header, _, signature = forged.split(".")
    payload = idp.token(sub="mallory").split(".")[1]
    with pytest.raises(Unauthenticated, match="signature invalid"):
        await validator.validate(f"{header}.{payload}.{signature}")
    with pytest.raises(Unauthenticated, match="malformed"):
        await validator.validate("not-a-jwt")
    unsigned = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(Unauthenticated, match="algorithm 'none'"):
        await validator.validate(unsigned)
    await validator.close()


async def test_unknown_kid_refreshes_jwks_once(idp: Idp) -> None:
    validator = await _validator(idp, jwks_min_refresh=0)
    idp.add_key("k2")  # the provider rotates keys
    idp.delay = 0.05
    tokens = [idp.token("k2", sub=f"user{i}") for i in range(20)]
    results = await asyncio.gather(*(validator.validate(t) for t in tokens))
    assert [r["sub"] for r in results] == [f"user{i}" for i in range(20)]
    assert idp.hits == 2  # one at start, one shared by all twenty waiting requests
    await validator.close()


async def test_unknown_kid_refresh_is_rate_limited(idp: Idp) -> None:
    validator = await _validator(idp, jwks_min_refresh=3600)
    idp.add_key("ghost", publish=False)
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="no key"):
            await validator.validate(idp.token("ghost"))
    assert idp.hits == 1
    await validator.close()


async def test_jwks_down_at_start_recovers(idp: Idp) -> None:
    idp.fail = True
    validator = await _validator(idp, jwks_min_refresh=0)
    with pytest.raises(Unauthenticated, match="no key"):
        await validator.validate(idp.token())
    idp.fail = False
    assert (await validator.validate(idp.token()))["sub"] == "alice"
    await validator.close()


async def test_stale_keys_refresh_in_background_and_keep_serving(idp: Idp) -> None:
    validator = await _validator(idp, jwks_ttl=60, jwks_min_refresh=0)
    idp.fail = True
    validator._fetched_at -= 120  # the keys are now older than their TTL
    hits = idp.hits
    assert (await validator.validate(idp.token(sub="a")))["sub"] == "a"
    # The refresh started in the background; the old keys kept serving while it failed.
    assert validator._refresh is not None
    await validator._refresh
    assert idp.hits == hits + 1
    assert (await validator.validate(idp.token(sub="b")))["sub"] == "b"
    await validator.close()


async def test_static_jwks_and_ec_keys(idp: Idp) -> None:
    idp.add_key("ec1", alg="ES256")
    validator = JwtValidator(JwtConfig(jwks=idp.jwks(), audiences=[AUDIENCE]))
    await validator.start()
    assert (await validator.validate(idp.token("ec1")))["sub"] == "alice"
    assert (await validator.validate(idp.token("k1")))["sub"] == "alice"
    assert idp.hits == 0
    await validator.close()


SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"


async def test_hmac_secret() -> None:
    validator = JwtValidator(JwtConfig(secret=SECRET, algorithms=["HS256"], audiences=["gw"]))
    claims = {"sub": "svc", "aud": "gw", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert (await validator.validate(token))["sub"] == "svc"
    wrong = jwt.encode(claims, "another-secret-another-secret-xx", algorithm="HS256")
    with pytest.raises(Unauthenticated, match="signature"):
        await validator.validate(wrong)


async def test_hs_tokens_are_refused_when_algorithms_leave_them_out(idp: Idp) -> None:
    """Hole 6: a configured secret used to let HS256 tokens in whatever `algorithms` said."""
    with pytest.raises(ValueError, match="no HS256"):
        JwtConfig(jwks=idp.jwks(), secret=SECRET, audiences=[AUDIENCE])
    validator = JwtValidator(JwtConfig(jwks=idp.jwks(), audiences=[AUDIENCE]))
    forged = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(Unauthenticated, match="algorithm 'HS256' is not accepted"):
        await validator.validate(forged)


async def test_hs256_signed_with_the_rsa_public_key_is_refused(idp: Idp) -> None:
    from cryptography.hazmat.primitives import serialization

    private = idp.keys["k1"][0]
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60}
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    import base64
    import hashlib
    import hmac as hmac_lib

    import orjson

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(orjson.dumps(header)) + b"." + b64(orjson.dumps(body))
    signature = b64(hmac_lib.new(pem, signing_input, hashlib.sha256).digest())
    token = (signing_input + b"." + signature).decode()
    validator = JwtValidator(JwtConfig(jwks=idp.jwks(), audiences=[AUDIENCE]))
    with pytest.raises(Unauthenticated, match="not accepted"):
        await validator.validate(token)


def test_an_audience_is_required() -> None:
    """Hole 6: `audiences: []` used to skip the audience check."""
    with pytest.raises(ValueError, match="set audiences"):
        JwtPolicyConfig(type="jwt", jwks_url="http://127.0.0.1:1/jwks")
    with_resource = JwtPolicyConfig(
        type="jwt",
        jwks_url="http://127.0.0.1:1/jwks",
        protected_resource={
            "resource": "https://gw.test/mcp",
            "authorization_servers": ["https://idp.test"],
        },
    )
    assert with_resource.audiences == []


async def test_validator_always_checks_the_audience(idp: Idp) -> None:
    validator = JwtValidator(JwtConfig(jwks=idp.jwks(), audiences=["https://other.test"]))
    with pytest.raises(Unauthenticated, match="audience"):
        await validator.validate(idp.token("k1"))
    no_aud = JwtValidator(JwtConfig(jwks=idp.jwks()), audiences=[])
    with pytest.raises(Unauthenticated):
        await no_aud.validate(idp.token("k1"))


def test_config_requires_keys_and_refuses_none() -> None:
    with pytest.raises(ValueError, match="jwks_url, jwks, jwks_file or secret"):
        JwtConfig()
    with pytest.raises(ValueError, match="'none'"):
        JwtConfig(secret=SECRET, algorithms=["none", "HS256"])


def test_bearer_token_parsing() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc.def")]) == "abc.def"
    assert bearer_token([(b"authorization", b"bearer   abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic Zm9v")]) is None
    assert bearer_token([(b"x-api-key", b"k")]) is None
