"""In-process cost of the policy chain's pieces (no network): one CEL rule evaluation, the JWT
policy on a token it has seen (the steady state), and a whole chain (JWT + one CEL rule) for one
LLM request, in µs per call. `make bench` runs the end-to-end column (crossway-policy); this
says where its time goes.

    .venv/bin/python -m bench.policy_cel [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from bench.policy_keys import AUDIENCE, ISSUER, KID, _key, token
from crossway.config.policy import AuthorizationConfig, JwtPolicyConfig
from crossway.policy import PolicyChain, build_policy, cel
from crossway.server.context import RequestContext


def _timed(fn: Callable[[], object], iterations: int) -> float:
    """Median µs per call over five batches."""
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        batches.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(batches)


async def _timed_async(fn: Callable[[], Awaitable[object]], iterations: int) -> float:
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            await fn()
        batches.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(batches)


async def measure(iterations: int) -> dict[str, float]:
    rule = cel.compile_rule('jwt.role == "bench" && llm.model == "gpt-4o-mini"')
    variables: dict[str, Any] = {
        "jwt": {"sub": "bench", "role": "bench", "iss": ISSUER},
        "llm": {"model": "gpt-4o-mini", "stream": False},
    }

    def one_rule() -> object:
        return cel.evaluate(rule, cel.activation(variables, rule.reads))

    jwk = jwt.get_algorithm_by_name("RS256").to_jwk(_key().public_key(), as_dict=True)
    jwt_policy = build_policy(
        JwtPolicyConfig(
            type="jwt",
            jwks={"keys": [{**jwk, "kid": KID}]},
            issuer=ISSUER,
            audiences=[AUDIENCE],
        )
    )
    authz = build_policy(
        AuthorizationConfig(
            type="authorization", allow=['jwt.role == "bench" && llm.model == "gpt-4o-mini"']
        )
    )
    chain = PolicyChain([jwt_policy, authz])
    scope = {"type": "http", "headers": [(b"authorization", f"Bearer {token()}".encode())]}

    async def jwt_only() -> None:
        await jwt_policy.on_request(scope, RequestContext("r", "b", "1", "/"))

    async def whole_chain() -> None:
        ctx = RequestContext("r", "b", "1", "/")
        ctx.chain = chain
        await chain.request(scope, ctx)
        ctx.attrs["llm"] = {"model": "gpt-4o-mini", "stream": False, "api": "chat"}
        await chain.parsed(ctx)

    await whole_chain()  # the first call verifies the signature; later ones hit the cache
    return {
        "cel_rule_us": _timed(one_rule, iterations),
        "jwt_cached_us": await _timed_async(jwt_only, iterations),
        "chain_us": await _timed_async(whole_chain, iterations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.iterations))
    print("| what | µs per call |\n|---|---|")
    print(f"| one CEL rule (activation + evaluation) | {figures['cel_rule_us']:.2f} |")
    print(f"| JWT policy, token seen before (cache) | {figures['jwt_cached_us']:.2f} |")
    print(f"| JWT + CEL chain, request and parsed phases | {figures['chain_us']:.2f} |")


if __name__ == "__main__":
    main()
