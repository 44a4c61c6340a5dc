"""Fixtures of the attacker's suite: one set of servers (JWKS, counting upstreams) per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.support import Servers


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """The JWKS endpoint, the counting HTTP/LLM upstream and the counting MCP server."""
    started = Servers.start()
    try:
        yield started
    finally:
        started.stop()
