"""Policies: small objects with one interface, applied the same way to LLM, MCP and A2A traffic."""

from crossway.policy.base import (
    Policy,
    PolicyChain,
    Reply,
    build_chain,
    build_policy,
    parsed,
    visible,
)

__all__ = ["Policy", "PolicyChain", "Reply", "build_chain", "build_policy", "parsed", "visible"]
