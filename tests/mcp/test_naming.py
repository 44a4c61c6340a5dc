"""Federated names and URIs are valid, stable and reversible; sealed session ids resist tampering."""

from __future__ import annotations

import re

from crossway.mcp.naming import Naming
from crossway.mcp.sealing import SessionSealer

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_names_round_trip_and_stay_valid() -> None:
    naming = Naming({"everything": True, "gh": True, "main": False}, "_")
    for server, tool in [
        ("everything", "echo"),
        ("everything", "get-sum"),
        ("gh", "repos.list"),
        ("gh", "x" * 80),
        ("gh", "with/slash and space"),
    ]:
        federated = naming.name(server, tool)
        assert VALID.match(federated), federated
        assert naming.split(federated) == (server, tool)
        assert (
            Naming({"everything": True, "gh": True, "main": False}, "_").name(server, tool)
            == federated
        )
    assert naming.name("everything", "echo") == "everything_echo"
    assert naming.name("main", "echo") == "echo"
    assert naming.split("echo") == ("main", "echo")
    assert naming.split("unknown_tool") == ("main", "unknown_tool")


def test_without_unprefixed_servers_unknown_names_are_unowned() -> None:
    naming = Naming({"a": True}, "__")
    assert naming.name("a", "t") == "a__t"
    assert naming.split("a__t") == ("a", "t")
    assert naming.split("b__t") is None
    assert naming.split_uri("file:///x") is None


def test_uris_round_trip() -> None:
    naming = Naming({"ev": True, "plain": False}, "_")
    for uri in ["demo://resource/static/1", "file:///tmp/a b", "test://template/{id}/data"]:
        federated = naming.uri("ev", uri)
        assert federated == f"crossway://ev/{uri}"
        assert naming.split_uri(federated) == ("ev", uri)
    assert naming.uri("plain", "notes://x") == "notes://x"
    assert naming.split_uri("notes://x") == ("plain", "notes://x")


def test_sealed_ids_open_only_with_the_same_key_and_untampered() -> None:
    one, same, other = SessionSealer("k1"), SessionSealer("k1"), SessionSealer("k2")
    state = {"p": "2025-11-25", "u": {"weather": '{"s": "abc"}'}}
    sealed = one.seal(state)
    assert re.fullmatch(r"[\x21-\x7e]+", sealed)  # visible ASCII, as Mcp-Session-Id requires
    assert same.open(sealed) == state
    assert other.open(sealed) is None
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert one.open(flipped) is None
    assert one.open("not-ours") is None
    assert one.seal(state) != sealed  # fresh nonce each time
    assert SessionSealer(None).open(sealed) is None  # a random per-process key
