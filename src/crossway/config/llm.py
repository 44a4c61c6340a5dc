"""Config of `type: llm` backends: providers, model routes and their targets."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, SecretStr

from crossway.config.base import StrictModel
from crossway.config.common import Timeouts

ProviderType = Literal[
    "openai",
    "openai_compatible",
    "azure",
    "anthropic",
    "gemini",
    "vertex",
    "bedrock",
]

DEFAULT_WEIGHT: Final = 1.0


class ProviderConfig(StrictModel):
    """One upstream LLM provider account (an endpoint plus its credentials)."""

    type: ProviderType
    """Wire format and auth scheme of the provider."""
    base_url: str | None = None
    """Base URL of the API, e.g. `https://api.openai.com/v1`; each type has a documented default."""
    api_key: SecretStr | None = None
    """Key Crossway injects upstream; callers never see it. Empty means no auth header is sent."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent upstream with every request."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    """Connect / first-byte / idle timeouts for this provider."""


class ModelTarget(StrictModel):
    """A deployment a client-facing model name can be served by."""

    provider: str
    """Name of a provider in this backend's `providers`."""
    model: str | None = None
    """Upstream model name; empty means the name the client asked for (after a wildcard, the part it matched)."""
    weight: float = Field(default=DEFAULT_WEIGHT, gt=0)
    """Relative share of traffic among targets of the same priority."""
    priority: int = 0
    """Failover order: lower numbers are tried first; higher ones only when all lower ones failed."""


class ModelRoute(StrictModel):
    """A client-facing model name (or a `prefix/*` wildcard) and the targets that serve it."""

    name: str
    """Model name clients send; `anthropic/*` matches every name with that prefix."""
    targets: list[ModelTarget] = Field(min_length=1)
    """Deployments serving this name."""


class LlmBackendConfig(StrictModel):
    """An LLM gateway: OpenAI- and Anthropic-compatible APIs in front of one or more providers."""

    type: Literal["llm"]
    """Backend kind."""
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    """Upstream provider accounts by name."""
    models: list[ModelRoute] = Field(default_factory=list)
    """Client-facing model names. Empty: any model name goes to the only provider unchanged."""
