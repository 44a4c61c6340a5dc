"""A2A agent cards across versions: a v0.3 or v1.0 card as canonical v1.0 JSON, and back.

Part of the version bridge (`crossway.a2a.bridge` re-exports both functions). A v0.3 card has a
single `url` plus `additionalInterfaces`; a v1.0 card lists `supportedInterfaces`, each with
its protocol version. Conversion goes through a2a-sdk's compat layer (`bridge_codec`); a card
whose agent lists only v1.0 interfaces still gets a v0.3 form, since Crossway bridges for
v0.3 clients. A malformed card (which comes from an agent) is `INVALID_AGENT_RESPONSE`.
"""

from __future__ import annotations

from typing import Any, Final

from crossway.a2a.bridge_codec import (
    json_object,
    proto_from_json,
    proto_to_json,
    pydantic_from_json,
    pydantic_to_json,
    quote_json,
    run_conversion,
)
from crossway.a2a.errors import INVALID_AGENT_RESPONSE, VERSION_NOT_SUPPORTED, A2aError
from crossway.a2a.model import Version

V03_PROTOCOL_VERSION: Final = "0.3.0"
"""The `protocolVersion` of a v0.3 card made from a card without v0.3 interfaces."""


def card_to_canonical(card: Any) -> tuple[dict[str, Any], Version]:
    """An agent card as v1.0 JSON, and the version the agent speaks.

    A card with `supportedInterfaces` is v1.0 (its v0.3 compatibility fields, which a2a-sdk
    adds, are ignored); the version is 1.0 if any interface speaks 1.x, else 0.3. A card
    with a single `url` (and `protocolVersion` 0.x) is v0.3 and converted.
    """
    what = "agent card"
    code = INVALID_AGENT_RESPONSE
    obj = json_object(card, what, code)
    from a2a.types import a2a_pb2 as pb

    if "supportedInterfaces" in obj:
        parsed = proto_from_json(obj, pb.AgentCard(), what, code)
        if not parsed.supported_interfaces:
            raise A2aError(code, f"{what} lists no supportedInterfaces")
        speaks_10 = any(
            (i.protocol_version or "1.0").split(".")[0] == "1" for i in parsed.supported_interfaces
        )
        return proto_to_json(parsed), "1.0" if speaks_10 else "0.3"
    if "url" not in obj:
        raise A2aError(code, f"{what} has neither supportedInterfaces (v1.0) nor url (v0.3)")
    protocol = obj.get("protocolVersion")
    if protocol is not None and not (isinstance(protocol, str) and protocol.startswith("0.")):
        raise A2aError(
            VERSION_NOT_SUPPORTED,
            f"{what}: protocolVersion {quote_json(protocol)} without supportedInterfaces",
        )
    from a2a.compat.v0_3 import conversions as conv
    from a2a.compat.v0_3 import types as t03

    model = pydantic_from_json(t03.AgentCard, obj, what, code)
    return proto_to_json(run_conversion(conv.to_core_agent_card, model, what, code)), "0.3"


def card_from_canonical(version: Version, card: Any) -> dict[str, Any]:
    """A v1.0 card as a client speaking `version` reads it.

    For v0.3 the card's 0.3 interfaces become `url`/`additionalInterfaces` (JSON-RPC first);
    a card without any (a v1.0-only agent) offers all its interfaces as 0.3 ones, since
    Crossway translates for such clients.
    """
    what = "agent card"
    code = INVALID_AGENT_RESPONSE
    obj = json_object(card, what, code)
    if version == "1.0":
        return obj
    from a2a.compat.v0_3 import conversions as conv
    from a2a.compat.v0_3.versions import is_legacy_version
    from a2a.types import a2a_pb2 as pb

    parsed = proto_from_json(obj, pb.AgentCard(), what, code)
    interfaces = list(parsed.supported_interfaces)
    if not interfaces:
        raise A2aError(code, f"{what} lists no supportedInterfaces")
    legacy = [i for i in interfaces if is_legacy_version(i.protocol_version)]
    if not legacy:
        legacy = [
            pb.AgentInterface(
                url=i.url,
                protocol_binding=i.protocol_binding,
                protocol_version=V03_PROTOCOL_VERSION,
            )
            for i in interfaces
        ]
    # The primary interface is JSON-RPC where there is one (v0.3's default transport).
    legacy.sort(key=lambda i: i.protocol_binding != "JSONRPC")
    del parsed.supported_interfaces[:]
    parsed.supported_interfaces.extend(legacy)
    return pydantic_to_json(run_conversion(conv.to_compat_agent_card, parsed, what, code))


__all__ = ["V03_PROTOCOL_VERSION", "card_from_canonical", "card_to_canonical"]
