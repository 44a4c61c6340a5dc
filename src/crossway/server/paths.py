"""Request-path normalisation, done once before routing.

Routes are matched on the normalised, percent-decoded path, and backends forward that same
path, so a route's guard and the upstream always agree on which resource is asked for:
`/public/../admin` and `/public/%2e%2e/admin` are `/admin` for the route table and for the
upstream alike.

Rules (RFC 3986 §5.2.4 `remove_dot_segments`, plus what proxies disagree on):
- `.` and `..` segments are removed, also percent-encoded and in any case (`%2E%2e`); `..` above
  the root stays at the root; empty segments (`//`) are merged.
- Refused with 400, because servers behind us read them differently: an encoded `/` (`%2F`) or
  `\\` (`%5C`), a raw `\\`, NUL and other control characters, a malformed percent-escape
  (`%zz`), bytes that are not UTF-8 once decoded (including overlong forms such as `%c0%ae`),
  and `;` path parameters, raw or encoded (`/api;x/things` and `..;` are read as `/api/things`
  and `..` by Tomcat and others).
- Percent-escapes are decoded exactly once; the path handed on is re-encoded (`%` itself as
  `%25`), so an upstream's own decoding cannot decode a second time.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from crossway.errors import BadRequest
from crossway.types import Scope

PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
"""Characters a re-encoded path keeps as they are (RFC 3986 `pchar` and `/`, without `%`)."""

_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_REFUSED_ESCAPE: Final = re.compile(rb"%(?:2[Ff]|5[Cc])")
_CONTROL: Final = re.compile("[\x00-\x1f\x7f]")
_PERCENT: Final = ord("%")


def normalize_path(raw: bytes) -> str:
    """The normalised, decoded form of a raw request path.

    Raises `BadRequest` for a path that cannot be read one unambiguous way.
    """
    return _decode_and_normalize(raw)[1]


def _decode_and_normalize(raw: bytes) -> tuple[str, str]:
    """`(decoded, normalised)`: the path decoded once, and then with dot segments removed."""
    if b"\\" in raw:
        raise BadRequest("invalid request path: '\\' is not allowed", code="invalid_path")
    if b"%" in raw:
        if _BAD_ESCAPE.search(raw) is not None:
            raise BadRequest("invalid request path: malformed percent-escape", code="invalid_path")
        if _REFUSED_ESCAPE.search(raw) is not None:
            raise BadRequest("invalid request path: encoded '/' or '\\'", code="invalid_path")
        raw = unquote_to_bytes(raw)
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid request path: not UTF-8", code="invalid_path") from None
    if _CONTROL.search(path) is not None:
        raise BadRequest("invalid request path: control character", code="invalid_path")
    if ";" in path:
        # `/api;x/things` is `/api/things` to Tomcat, Jetty and Spring: a route guard on
        # `/api` would not see it. Matrix parameters have no use on an agent gateway's APIs.
        raise BadRequest(
            "invalid request path: ';' path parameters are not allowed", code="invalid_path"
        )
    return path, remove_dot_segments(path)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on a decoded path, with `//` merged and `..` clamped at the root; the
    result always starts with `/`."""
    segments = path.split("/")
    out: list[str] = []
    for segment in segments:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        if segment[0] == "." and segment.partition(";")[0] in (".", ".."):
            raise BadRequest(
                "invalid request path: parameter on a dot segment", code="invalid_path"
            )
        out.append(segment)
    result = "/" + "/".join(out)
    if out and segments[-1] in ("", ".", ".."):
        result += "/"
    return result


def encode_path(path: str) -> str:
    """Percent-encode a decoded path for the request line (UTF-8; `%` becomes `%25`)."""
    return quote(path, safe=PATH_SAFE)


def normalize_scope(scope: Scope) -> None:
    """Normalise `scope["path"]` in place before routing, and `scope["raw_path"]` with it when
    normalising changed the path (so a backend that forwards the raw path forwards the
    normalised one; otherwise the client's own encoding is kept).

    A clean path costs a few tests of two short strings: ASCII, no `%`, and no `\\`, `//` or
    `/.`. Raises `BadRequest` for a refused path.
    """
    path: str = scope["path"]
    raw: bytes | None = scope.get("raw_path")
    if raw is None:  # a server that gives no raw path: its path is decoded already
        raw = encode_path(path).encode("ascii")
    elif (
        _PERCENT not in raw  # int look-ups: much cheaper than `b"%" in raw`
        and raw.isascii()
        and len(raw) == len(path)
        and "/." not in path
        and "//" not in path
        and "\\" not in path
        and ";" not in path
    ):
        return  # the path is the raw path, and already normal
    decoded, normal = _decode_and_normalize(raw)
    if normal != decoded or normal != path:
        scope["path"] = normal
        scope["raw_path"] = encode_path(normal).encode("ascii")
