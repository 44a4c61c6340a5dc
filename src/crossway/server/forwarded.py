"""Who the client is: the TCP peer, unless the peer is a proxy the operator trusts.

`X-Forwarded-For`, `-Proto` and `-Host` are believed only from peers inside
`listen.trusted_proxies`. From such a peer the client is the right-most `X-Forwarded-For` hop
that is not itself a trusted proxy (hops left of it were written by the client and prove
nothing); from any other peer the headers are ignored and the peer is the client. Backends
that forward requests replace the client's own `X-Forwarded-*` with what is computed here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from crossway.server.context import RequestContext
from crossway.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED: Final = "gateway.forwarded"
"""`ctx.attrs` key: a `Forwarded` value, set only when the peer is a trusted proxy."""

CLIENT_FORWARDING_HEADERS: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
"""Request headers a client can spoof; never forwarded as the client sent them."""

_PROTOS: Final = frozenset({"http", "https"})
PEER_CACHE_SIZE: Final = 4096
"""Peers whose trust was decided, remembered per worker (parsing an address costs microseconds;
the peers in front of a gateway are few and repeat)."""

_peer_trust: dict[str, bool] = {}
_peer_trust_for: object = None


@dataclass(slots=True, frozen=True)
class Forwarded:
    """What a trusted proxy told us, to hand on upstream.

    Attributes:
        chain: `X-Forwarded-For` to send: the client, the trusted proxies after it, the peer.
        proto: the scheme the client used at the proxy, if it said so (`http` or `https`).
        host: the `Host` the client used at the proxy, if it said so.
    """

    chain: str
    proto: str | None
    host: str | None


def set_client(scope: Scope, ctx: RequestContext, trusted: Sequence[IPNetwork]) -> None:
    """Set `ctx.client_ip` (and `ctx.attrs[FORWARDED]` behind a trusted proxy)."""
    client = scope.get("client")
    peer: str = client[0] if client else ""
    ctx.client_ip = peer
    if not trusted:
        return
    if not _peer_is_trusted(peer, trusted):
        return
    hops: list[str] = []
    proto = host = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            hops.extend(h.strip() for h in value.decode("latin-1").split(","))
        elif name == b"x-forwarded-proto" and proto is None:
            proto = value.decode("latin-1").strip().lower()
        elif name == b"x-forwarded-host" and host is None:
            host = value.decode("latin-1").strip()
    chain = [peer]
    for hop in reversed(hops):
        hop_address = _parse(hop)
        if hop_address is None:
            break  # garbage: believe nothing further left
        chain.append(str(hop_address))
        if not _is_trusted(hop_address, trusted):
            break
    chain.reverse()
    ctx.client_ip = chain[0]
    ctx.attrs[FORWARDED] = Forwarded(
        ", ".join(chain), proto if proto in _PROTOS else None, host or None
    )


def _peer_is_trusted(peer: str, trusted: Sequence[IPNetwork]) -> bool:
    global _peer_trust_for
    if trusted is not _peer_trust_for:  # another config: forget what the last one decided
        _peer_trust.clear()
        _peer_trust_for = trusted
    known = _peer_trust.get(peer)
    if known is None:
        if len(_peer_trust) >= PEER_CACHE_SIZE:
            _peer_trust.clear()
        address = _parse(peer)
        known = _peer_trust[peer] = address is not None and _is_trusted(address, trusted)
    return known


def _parse(text: str) -> IPAddress | None:
    """An address from a peer or an `X-Forwarded-For` hop (`1.2.3.4`, `1.2.3.4:80`,
    `[::1]:80`, `::1`), or None."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)
