"""Policies: small objects with one interface, applied the same way to LLM, MCP and A2A traffic."""

from crossway.policy.base import Policy, build_policy

__all__ = ["Policy", "build_policy"]
