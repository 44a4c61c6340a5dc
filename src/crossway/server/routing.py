"""The route table: routes compiled once per config, matched per request in order."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crossway.config.models import Route
from crossway.policy.base import PolicyChain
from crossway.server.backend import Backend
from crossway.types import Scope


@dataclass(slots=True, frozen=True)
class CompiledRoute:
    """A route with its conditions precompiled and its backend and policies resolved."""

    name: str
    backend_name: str
    backend: Backend
    chain: PolicyChain | None
    host_exact: str | None
    host_suffix: str | None
    path_exact: str | None
    path_prefix: str | None
    path_regex: re.Pattern[str] | None
    methods: frozenset[str] | None
    headers: tuple[tuple[bytes, bytes], ...]
    strip_prefix: bool
    max_body_bytes: int | None = None
    """The route's own body limit (None: the backend's, from `listen.max_body_bytes`)."""

    def matches(self, scope: Scope) -> str | None:
        """The path the backend should see if this route takes the request, else None.

        `scope["path"]` is normalised already (`crossway.server.paths.normalize_scope`)."""
        path: str = scope["path"]
        if self.path_prefix is not None:
            prefix = self.path_prefix
            if not path.startswith(prefix):
                return None
            if len(path) > len(prefix) and prefix[-1] != "/" and path[len(prefix)] != "/":
                return None
        elif self.path_exact is not None:
            if path != self.path_exact:
                return None
        elif self.path_regex is not None and self.path_regex.fullmatch(path) is None:
            return None
        if self.methods is not None and scope["method"] not in self.methods:
            return None
        if self.host_exact is not None or self.host_suffix is not None or self.headers:
            if not self._match_headers(scope):
                return None
        if self.strip_prefix and self.path_prefix is not None:
            rest = path[len(self.path_prefix.rstrip("/")) :]
            return rest if rest.startswith("/") else "/" + rest
        return path

    def _match_headers(self, scope: Scope) -> bool:
        request_headers: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            request_headers.setdefault(k, v)
        if self.host_exact is not None or self.host_suffix is not None:
            host = request_headers.get(b"host", b"").decode("latin-1").lower()
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if self.host_exact is not None and host != self.host_exact:
                return False
            if self.host_suffix is not None and not host.endswith(self.host_suffix):
                return False
        return all(request_headers.get(name) == value for name, value in self.headers)


def compile_route(route: Route, backend: Backend, chain: PolicyChain | None) -> CompiledRoute:
    """Precompile a configured route."""
    host = route.match.host.lower() if route.match.host else None
    host_exact = host_suffix = None
    if host is not None and host.startswith("*."):
        host_suffix = host[1:]
    else:
        host_exact = host
    path = route.match.path
    return CompiledRoute(
        name=route.name,
        backend_name=route.backend,
        backend=backend,
        chain=chain,
        host_exact=host_exact,
        host_suffix=host_suffix,
        path_exact=path.exact,
        path_prefix=path.prefix,
        path_regex=re.compile(path.regex) if path.regex is not None else None,
        methods=frozenset(route.match.methods) if route.match.methods else None,
        headers=tuple(
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in route.match.headers.items()
        ),
        strip_prefix=route.strip_prefix,
        max_body_bytes=route.max_body_bytes,
    )


class RouteTable:
    """Routes in config order; the first match wins."""

    def __init__(self, routes: list[CompiledRoute]) -> None:
        self.routes = routes

    def match(self, scope: Scope) -> tuple[CompiledRoute, str] | None:
        for route in self.routes:
            path = route.matches(scope)
            if path is not None:
                return route, path
        return None
