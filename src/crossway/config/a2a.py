"""Config of `type: a2a` backends: Agent2Agent agents proxied, bridged, discovered and routed.

```yaml
routes:
  - {name: a2a, match: {path: {prefix: /a2a}}, backend: agents}
backends:
  agents:
    type: a2a
    agents:
      writer: {url: http://127.0.0.1:9201}            # its card: URL/.well-known/agent-card.json
      vision: {url: http://127.0.0.1:9202, headers: {Authorization: "Bearer ${VISION_TOKEN}"}}
    task_store: {type: sqlite}                        # or memory / redis (several replicas)
```

Each agent `NAME` is served under `<prefix>/NAME/` (its card at
`<prefix>/NAME/.well-known/agent-card.json`), the router agent at `<prefix>/` and the catalog at
`<prefix>/agents`, where `<prefix>` is the route's path prefix (`/a2a`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from crossway.config.base import StrictModel
from crossway.config.common import HttpUrl, UpstreamTls
from crossway.config.policy import PolicyConfig
from crossway.config.secrets import SecretHeaders
from crossway.config.store import RedisStoreConfig

DEFAULT_CARD_REFRESH_SECONDS: Final = 300.0
DEFAULT_CARD_TIMEOUT: Final = 5.0
DEFAULT_CALL_TIMEOUT: Final = 300.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_TASK_DB: Final = "a2a-tasks.sqlite3"
DEFAULT_TASK_TTL_SECONDS: Final = 7 * 24 * 3600.0
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
AGENT_NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
RESERVED_NAMES: Final = frozenset({"agents", "tasks", ".well-known", "v1", "card"})
"""Names that are the router's own routes (catalog, REST tasks, the v0.3 REST prefix and card)."""


class A2aTimeouts(StrictModel):
    """Timeouts towards the agents, in seconds."""

    connect: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    """Time to reach an agent."""
    call: float = Field(default=DEFAULT_CALL_TIMEOUT, gt=0)
    """Time an agent may take to answer (for a stream: between two events)."""
    card: float = Field(default=DEFAULT_CARD_TIMEOUT, gt=0)
    """Time a card fetch may take."""


class A2aAgentConfig(StrictModel):
    """One agent behind Crossway: where it is (or its card), and how Crossway calls it."""

    url: HttpUrl | None = None
    """The agent's base URL; its card is fetched from `URL/.well-known/agent-card.json` (the
    legacy `agent.json` as a fallback) and refreshed in the background."""
    card: dict[str, Any] | None = None
    """An inline agent card (v1.0 or v0.3 JSON), used instead of fetching one."""
    card_path: str = "/.well-known/agent-card.json"
    """Where the card lives under `url`."""
    headers: SecretHeaders = Field(default_factory=dict)
    """Headers Crossway sends on every call to this agent (its own credentials). The caller's
    `Authorization` is never forwarded unless `forward_authorization` is set."""
    forward_authorization: bool = False
    """Pass the caller's `Authorization` header on to this agent — unless one of Crossway's
    own policies consumed it (a gateway API key or JWT; set that policy's `forward: true` to
    pass it on)."""
    tls: UpstreamTls | None = None
    """TLS to this agent (CA file, client certificate, server name)."""
    timeouts: A2aTimeouts | None = None
    """Override the backend's `timeouts` for this agent."""
    tags: list[str] = Field(default_factory=list)
    """Extra tags for the catalog and the router (besides the card's skill tags)."""

    @model_validator(mode="after")
    def _url_or_card(self) -> A2aAgentConfig:
        if self.url is None and self.card is None:
            raise ValueError("set url (the card is fetched from it) or an inline card")
        return self


class MemoryTaskStoreConfig(StrictModel):
    """Task ownership kept in this process (one replica; lost on restart)."""

    type: Literal["memory"]
    """Store kind."""


class SqliteTaskStoreConfig(StrictModel):
    """Task ownership in a SQLite file (one machine; survives restarts). The default."""

    type: Literal["sqlite"]
    """Store kind."""
    path: str | None = None
    """File path. Unset: `$CROSSWAY_DATA_DIR/a2a-tasks.sqlite3` (default data dir
    `./.crossway`)."""


TaskStoreConfig = Annotated[
    MemoryTaskStoreConfig | SqliteTaskStoreConfig | RedisStoreConfig,
    Field(discriminator="type"),
]


class A2aRouterConfig(StrictModel):
    """The router agent at the route's root: one card with every agent's skills."""

    enabled: bool = True
    """Serve the router agent (and its card) at `<prefix>/`."""
    name: str = "Crossway router"
    """The router card's `name`."""
    description: str = "Routes each message to the registered agent whose skills fit it best."
    """The router card's `description`."""


class A2aBackendConfig(StrictModel):
    """An A2A gateway: agents proxied, bridged between protocol versions, discovered and
    routed by capability."""

    type: Literal["a2a"]
    """Backend kind."""
    agents: dict[str, A2aAgentConfig] = Field(min_length=1)
    """The agents, by name: lower-case letters, digits and `-` (the name is a URL segment)."""
    router: A2aRouterConfig = Field(default_factory=A2aRouterConfig)
    """The router agent."""
    timeouts: A2aTimeouts = Field(default_factory=A2aTimeouts)
    """Timeouts towards the agents."""
    card_refresh_seconds: float = Field(default=DEFAULT_CARD_REFRESH_SECONDS, gt=0)
    """How often agent cards are fetched again (an agent that fails is marked down and retried
    at this pace)."""
    task_store: TaskStoreConfig = Field(
        default_factory=lambda: SqliteTaskStoreConfig(type="sqlite")
    )
    """Where task and context ownership (which agent owns which task) and task states are kept:
    `sqlite` (default), `memory`, or `redis` shared by several replicas."""
    task_ttl_seconds: float = Field(default=DEFAULT_TASK_TTL_SECONDS, gt=0)
    """How long a task's ownership and states are kept after its last state change (a follow-up
    for a task forgotten this way gets TaskNotFound)."""
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    """Largest request body or upstream answer accepted."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """Policies inherited by every route to this backend; CEL sees `a2a.agent`, `a2a.skill`,
    `a2a.method`."""

    @field_validator("agents")
    @classmethod
    def _agent_names(cls, value: dict[str, A2aAgentConfig]) -> dict[str, A2aAgentConfig]:
        for name in value:
            if not AGENT_NAME_PATTERN.match(name) or name in RESERVED_NAMES:
                raise ValueError(
                    f"agent name {name!r} must be 1-63 characters of a-z, 0-9 and '-' "
                    f"(and not one of {', '.join(sorted(RESERVED_NAMES))})"
                )
        return value


__all__ = [
    "A2aAgentConfig",
    "A2aBackendConfig",
    "A2aRouterConfig",
    "A2aTimeouts",
    "MemoryTaskStoreConfig",
    "SqliteTaskStoreConfig",
    "TaskStoreConfig",
]
