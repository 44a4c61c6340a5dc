"""Keys for the policy-chain column: an RSA key whose JWKS the gateway reads from a file, and
the token the load generator sends (valid for a day, so it outlives any run)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Final

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER: Final = "https://bench.idp.test"
AUDIENCE: Final = "crossway-bench"
KID: Final = "bench-1"


@functools.cache
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path) -> Path:
    """Write the public JWKS to `path` and return it."""
    jwk = jwt.get_algorithm_by_name("RS256").to_jwk(_key().public_key(), as_dict=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"keys": [{**jwk, "kid": KID, "use": "sig"}]}))
    return path


@functools.cache
def token() -> str:
    """The bearer token every request of the policy column carries."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "role": "bench", "exp": now + 86400}
    return jwt.encode(claims, _key(), algorithm="RS256", headers={"kid": KID})
