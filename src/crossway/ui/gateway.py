"""Where the console's playgrounds reach the gateway's own data plane."""

from __future__ import annotations

from dataclasses import dataclass

from crossway.config import Config

_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})


@dataclass(frozen=True, slots=True)
class Entry:
    """A route the playgrounds can send to: its name, path prefix and backend."""

    route: str
    prefix: str
    backend: str
    backend_type: str


def data_plane_url(cfg: Config) -> str:
    """The data plane's base URL as this host reaches it (a wildcard bind is reached on
    loopback)."""
    host = cfg.listen.host
    if host in _WILDCARDS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if cfg.listen.tls is not None else "http"
    return f"{scheme}://{host}:{cfg.listen.port}"


def entries(cfg: Config, backend_type: str) -> list[Entry]:
    """Routes to backends of `backend_type` (`llm`, `mcp`, `a2a`) matched by a path prefix or
    an exact path, in route order."""
    found: list[Entry] = []
    for route in cfg.routes:
        backend = cfg.backends.get(route.backend)
        kind = getattr(backend, "type", None)
        path = route.match.path
        if kind != backend_type or path is None:
            continue
        prefix = path.prefix or path.exact
        if prefix is None:
            continue
        found.append(Entry(route.name, prefix.rstrip("/") or "/", route.backend, kind))
    return found
