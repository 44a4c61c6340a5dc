"""The path normaliser: dot segments, decoding once, and the paths it refuses."""

from __future__ import annotations

import pytest

from crossway.errors import BadRequest
from crossway.server.paths import encode_path, normalize_path, normalize_scope


@pytest.mark.parametrize(
    "raw",
    [b"/", b"/v1/chat/completions", b"/a/b/", b"/a/b.c/d.json", b"/a-b_c~d", b"*"],
)
def test_clean_paths_are_left_alone(raw: bytes) -> None:
    path = raw.decode()
    scope = {"path": path, "raw_path": raw}
    normalize_scope(scope)
    assert scope["path"] is path and scope["raw_path"] is raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/public/../admin/users", "/admin/users"),
        (b"/public/%2e%2e/admin/users", "/admin/users"),
        (b"/public/%2E%2e/admin/users", "/admin/users"),
        (b"/public/.%2E/admin", "/admin"),
        (b"/public/%2e/admin", "/public/admin"),
        (b"/a/./b/../c", "/a/c"),
        (b"/a/b/..", "/a/"),
        (b"/a/b/.", "/a/b/"),
        (b"/../../..", "/"),
        (b"/..", "/"),
        (b"/../a", "/a"),
        (b"//a///b//", "/a/b/"),
        (b"/a/.b/..c/...", "/a/.b/..c/..."),  # only exact '.' and '..' are dot segments
        (b"/a%20b", "/a b"),
        (b"/caf%C3%A9", "/café"),
        ("/café".encode(), "/café"),
        (b"/a%252e%252e", "/a%2e%2e"),  # decoded once: '%25' is a literal '%'
        (b"/a/b%40c", "/a/b@c"),
    ],
)
def test_normalised(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/a%2fb",
        b"/a%2Fb",
        b"/a/..%2f..%2fadmin",
        b"/a%5cb",
        b"/a%5C..%5Cb",
        b"/a\\b",
        b"/a%00b",
        b"/a%0d%0aSet-Cookie:x",
        b"/a%7f",
        b"/a%c0%ae%c0%ae/b",  # overlong '.'
        b"/a%c0%af",  # overlong '/'
        b"/a%e0%80%ae",  # 3-byte overlong '.'
        b"/a%ed%a0%80",  # a UTF-16 surrogate
        b"/a%ff",
        b"/a/\xff",
        b"/a%zz",
        b"/a%2",
        b"/a%",
        b"/a/..;/admin",
        b"/a/.;x/b",
        b"/a/%2e%2e;jsessionid=1/b",
        b"/api;x/things",  # Tomcat/Jetty/Spring read `/api/things`: a guard on /api would miss it
        b"/api%3bx/things",
        b"/admin;/users",
    ],
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        normalize_path(raw)
    assert info.value.status_code == 400


def test_encode_path_decodes_once_downstream() -> None:
    assert encode_path("/a%2e%2e/b c/é") == "/a%252e%252e/b%20c/%C3%A9"
    assert encode_path("/a/b;c=d:e@f") == "/a/b;c=d:e@f"
    assert encode_path("/a?b#c") == "/a%3Fb%23c"


def test_normalize_scope_updates_path_and_raw_path() -> None:
    scope = {"path": "/p/../a b", "raw_path": b"/p/%2e%2e/a%20b"}
    normalize_scope(scope)
    assert scope == {"path": "/a b", "raw_path": b"/a%20b"}
    # Decoded but not changed by normalising: the client's own encoding is forwarded.
    kept = {"path": "/a@b/%2e", "raw_path": b"/a%40b/%252e"}
    normalize_scope(kept)
    assert kept == {"path": "/a@b/%2e", "raw_path": b"/a%40b/%252e"}
    # A server that gives no raw path: its path is decoded already and is not decoded again.
    no_raw = {"path": "/a/%2e%2e/b"}
    normalize_scope(no_raw)
    assert no_raw == {"path": "/a/%2e%2e/b"}
    dotted = {"path": "/a/../b"}
    normalize_scope(dotted)
    assert dotted == {"path": "/b", "raw_path": b"/b"}
    with pytest.raises(BadRequest):
        normalize_scope({"path": "/a\\b"})
