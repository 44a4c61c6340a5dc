"""Allow or deny callers by their real address (`ctx.client_ip`).

`ctx.client_ip` is the TCP peer, or — only when the peer is one of `listen.trusted_proxies` —
the client `X-Forwarded-For` names; a spoofed header from anyone else changes nothing. Without
it (a server that gives no peer) the address is unknown: it matches no rule, so an `allow`
list refuses it. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are matched as IPv4.

Networks are parsed once, at config load; a decision is kept per address (bounded), so a
caller seen before costs one dict lookup.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from crossway.config.policy import IpFilterConfig
from crossway.errors import Forbidden
from crossway.policy.base import Policy, Reply
from crossway.server.context import RequestContext
from crossway.types import Scope

MAX_REMEMBERED_ADDRESSES: Final = 8192

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(values: list[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


class IpFilterPolicy(Policy):
    """403 for addresses in `deny`, or outside `allow` when `allow` is given."""

    early = True  # cheap, and a refused address should not cost an authentication

    def __init__(self, config: IpFilterConfig) -> None:
        self.allow = _networks(config.allow)
        self.deny = _networks(config.deny)
        self._decided: dict[str, bool] = {}

    def permits(self, address: str) -> bool:
        """Whether a caller at `address` (text form) passes this filter."""
        decided = self._decided.get(address)
        if decided is None:
            decided = self._decide(address)
            if len(self._decided) >= MAX_REMEMBERED_ADDRESSES:
                self._decided.clear()
            self._decided[address] = decided
        return decided

    def _decide(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return not self.allow  # unknown: matches no rule
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.deny):
            return False
        return not self.allow or any(ip in net for net in self.allow)

    async def on_request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        address = ctx.client_ip
        if not address:
            client = scope.get("client")
            address = client[0] if client else ""
        if not self.permits(address):
            raise Forbidden("requests from this address are not allowed", code="ip_not_allowed")
        return None


__all__ = ["IpFilterPolicy"]
