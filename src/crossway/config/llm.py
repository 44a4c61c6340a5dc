"""Config of `type: llm` backends: providers, model routes and their targets."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crossway.config.base import StrictModel
from crossway.config.common import Timeouts, UpstreamTls
from crossway.config.inference import InferencePoolConfig
from crossway.config.llm_cache import LlmCacheConfig
from crossway.config.policy import PolicyConfig
from crossway.config.secrets import SecretHeaders, SecretUrl

ProviderType = Literal[
    "openai",
    "openai_compatible",
    "azure",
    "anthropic",
    "gemini",
    "vertex",
    "bedrock",
    "inference_pool",
]

DEFAULT_WEIGHT: Final = 1.0

OpenAICompatiblePreset = Literal[
    "vllm",
    "ollama",
    "lmstudio",
    "groq",
    "mistral",
    "deepseek",
    "openrouter",
    "together",
]

PRESET_BASE_URLS: Final[dict[str, str]] = {
    "vllm": "http://localhost:8000/v1",
    "ollama": "http://localhost:11434/v1",
    "lmstudio": "http://localhost:1234/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together": "https://api.together.xyz/v1",
}
"""Default base URL of each `openai_compatible` preset (a `base_url` given in the config wins)."""

DEFAULT_ANTHROPIC_VERSION: Final = "2023-06-01"
DEFAULT_AZURE_API_VERSION: Final = "2024-10-21"
DEFAULT_VERTEX_LOCATION: Final = "us-central1"

# Keys whose empty value means unset.
_OPTIONAL_KEYS: Final = frozenset(
    {
        "base_url",
        "api_key",
        "api_version",
        "deployment",
        "anthropic_version",
        "region",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "project",
        "location",
        "service_account_file",
        "service_account_json",
    }
)

# Which provider-specific keys each type accepts (every type takes the common ones).
_TYPE_FIELDS: Final[dict[str, frozenset[str]]] = {
    "preset": frozenset({"openai_compatible"}),
    "api_version": frozenset({"azure"}),
    "deployment": frozenset({"azure"}),
    "anthropic_version": frozenset({"anthropic", "vertex"}),
    "default_max_tokens": frozenset({"anthropic", "vertex", "bedrock"}),
    "region": frozenset({"bedrock"}),
    "aws_access_key_id": frozenset({"bedrock"}),
    "aws_secret_access_key": frozenset({"bedrock"}),
    "aws_session_token": frozenset({"bedrock"}),
    "project": frozenset({"vertex"}),
    "location": frozenset({"vertex"}),
    "service_account_file": frozenset({"vertex"}),
    "service_account_json": frozenset({"vertex"}),
    "pool": frozenset({"inference_pool"}),
}


class ProviderConfig(StrictModel):
    """One upstream LLM provider account (an endpoint plus its credentials)."""

    type: ProviderType
    """Wire format and auth scheme of the provider."""
    base_url: str | None = None
    """Base URL of the API, e.g. `https://api.openai.com/v1`; each type has a documented default."""
    api_key: SecretStr | None = None
    """Key Crossway injects upstream; callers never see it. Empty means no auth header is sent."""
    headers: SecretHeaders = Field(default_factory=dict)
    """Extra headers sent upstream with every request (values are secrets)."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    """Connect / first-byte / idle timeouts for this provider."""
    tls: UpstreamTls | None = None
    """TLS to the provider: CA file, client certificate, server name (default: system CAs)."""

    # --- openai_compatible
    preset: OpenAICompatiblePreset | None = None
    """`openai_compatible` only: a known server whose default `base_url` is filled in (see docs/llm.md)."""

    # --- azure
    api_version: str | None = None
    """`azure` only: the `api-version` query parameter (default `2024-10-21`); `v1` uses the `/openai/v1` API."""
    deployment: str | None = None
    """`azure` only: deployment name for every request; empty means the target's model name is the deployment."""

    # --- anthropic (and Claude on vertex / bedrock)
    anthropic_version: str | None = None
    """`anthropic`: the `anthropic-version` header (default `2023-06-01`); `vertex`: the body's `anthropic_version` (default `vertex-2023-10-16`)."""
    default_max_tokens: int | None = Field(default=None, gt=0)
    """Claude models require `max_tokens`; used when the client sets none (default 4096)."""

    # --- bedrock
    region: str | None = None
    """`bedrock` only: AWS region, e.g. `us-east-1` (default: `AWS_REGION` / `AWS_DEFAULT_REGION` at start)."""
    aws_access_key_id: SecretStr | None = None
    """`bedrock` only: access key for SigV4 signing; empty means botocore's usual chain (env, files, roles)."""
    aws_secret_access_key: SecretStr | None = None
    """`bedrock` only: secret key paired with `aws_access_key_id`."""
    aws_session_token: SecretStr | None = None
    """`bedrock` only: session token of temporary credentials."""

    # --- vertex
    project: str | None = None
    """`vertex` only: Google Cloud project id (default: `project_id` of the service account)."""
    location: str | None = None
    """`vertex` only: region such as `us-central1`, or `global` (default `us-central1`)."""
    service_account_file: str | None = None
    """`vertex` only: path of a service-account JSON key, exchanged for access tokens (read at start)."""
    service_account_json: SecretStr | None = None
    """`vertex` only: the service-account JSON key itself, e.g. from `${GOOGLE_SA_JSON}`."""

    # --- inference_pool
    pool: InferencePoolConfig | None = None
    """`inference_pool` only: the model servers (OpenAI-compatible) and how each request picks
    one of them (see docs/inference-routing.md)."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """`key: ${VAR:-}` with VAR unset means "not set" (so defaults and credential chains apply)."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (k in _OPTIONAL_KEYS and v == "")}
            if data.get("preset") and not data.get("base_url"):
                url = PRESET_BASE_URLS.get(str(data["preset"]))
                if url is not None:
                    data["base_url"] = url
        return data

    @model_validator(mode="after")
    def _type_specific(self) -> ProviderConfig:
        for key, types in _TYPE_FIELDS.items():
            if getattr(self, key) is not None and self.type not in types:
                allowed = " / ".join(sorted(types))
                raise ValueError(f"{key} applies only to type {allowed}, not {self.type}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if self.type == "inference_pool":
            if self.pool is None:
                raise ValueError("inference_pool needs pool (its endpoints)")
            if self.base_url is not None:
                raise ValueError("inference_pool takes its URLs from pool.endpoints, not base_url")
        if self.type == "openai_compatible" and self.base_url is None:
            raise ValueError("openai_compatible needs base_url or preset")
        if self.type == "azure" and self.base_url is None:
            raise ValueError("azure needs base_url (https://RESOURCE.openai.azure.com)")
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("set both aws_access_key_id and aws_secret_access_key, or neither")
        if self.service_account_file is not None and self.service_account_json is not None:
            raise ValueError("set service_account_file or service_account_json, not both")
        return self


RoutingStrategy = Literal["weighted", "least_in_flight", "latency"]

DEFAULT_RETRIES: Final = 2
DEFAULT_BACKOFF_BASE: Final = 0.25
DEFAULT_BACKOFF_MAX: Final = 8.0
DEFAULT_MAX_RETRY_AFTER: Final = 30.0
DEFAULT_COOLDOWN_FAILURES: Final = 3
DEFAULT_COOLDOWN_SECONDS: Final = 30.0
DEFAULT_ROUTING_DEADLINE: Final = 900.0
"""Longer than one attempt with the default timeouts (5 s connect, 300 s first byte, 300 s idle),
so by default a single attempt is bounded by its own timeouts and the deadline bounds retries."""
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
"""Largest non-streamed upstream answer (or error body) read; a larger one is a 502."""
DEFAULT_MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
"""Largest single event (SSE event, AWS event-stream frame) of an upstream stream."""


class RetryConfig(StrictModel):
    """When and how often a failed upstream call is tried again."""

    retries: int = Field(default=DEFAULT_RETRIES, ge=0)
    """Extra attempts after every deployment of the model was tried once (failover itself is free)."""
    backoff_base: float = Field(default=DEFAULT_BACKOFF_BASE, ge=0)
    """Seconds before the first retry of a deployment already tried; doubles each retry, with jitter."""
    backoff_max: float = Field(default=DEFAULT_BACKOFF_MAX, ge=0)
    """Longest back-off between two attempts, in seconds."""
    max_retry_after: float = Field(default=DEFAULT_MAX_RETRY_AFTER, ge=0)
    """A `Retry-After` longer than this (seconds) is not waited for: the error goes to the client."""


class CooldownConfig(StrictModel):
    """Outlier ejection: a deployment that keeps failing is skipped for a while."""

    failures: int = Field(default=DEFAULT_COOLDOWN_FAILURES, ge=1)
    """Consecutive failures (429, 5xx, resets, timeouts) that eject a deployment."""
    seconds: float = Field(default=DEFAULT_COOLDOWN_SECONDS, ge=0)
    """How long an ejected deployment is skipped (a 429's `Retry-After` is used when longer)."""
    redis_url: SecretUrl | None = None
    """`redis://HOST:PORT/DB`: share ejections with every worker and replica using the same
    Redis and backend name. Empty: each worker process keeps its own."""


class RoutingConfig(StrictModel):
    """How a backend spreads load over deployments and recovers from failures."""

    strategy: RoutingStrategy = "weighted"
    """`weighted` (random by weight), `least_in_flight`, or `latency` (fastest recent first byte)."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries with back-off on 429, 5xx, connection resets and timeouts."""
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    """Ejection of failing deployments."""
    deadline: float = Field(default=DEFAULT_ROUTING_DEADLINE, gt=0)
    """Seconds one request may spend on attempts, failover and back-offs until its answer starts
    (a whole non-streamed answer, a stream's first chunk); then the client gets a 504."""


class ModelPrice(StrictModel):
    """A model's price in USD per 1M tokens."""

    input: float = Field(ge=0)
    """Prompt tokens."""
    output: float = Field(ge=0)
    """Completion tokens (reasoning included)."""
    cached_input: float | None = Field(default=None, ge=0)
    """Prompt tokens read from the provider's cache; empty: the input price."""
    cache_write: float | None = Field(default=None, ge=0)
    """Prompt tokens written to the provider's cache; empty: the input price."""
    reasoning: float | None = Field(default=None, ge=0)
    """Hidden reasoning tokens (counted within the output tokens); empty: the output price."""


def _plain(value: Any) -> Any:
    """`value` with YAML scalar subclasses turned into plain JSON types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


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
    context_window: int | None = Field(default=None, gt=0)
    """Tokens this deployment takes (prompt plus `max_tokens`); longer prompts skip it. Empty: no limit."""


class ModelRoute(StrictModel):
    """A client-facing model name (or a `prefix/*` wildcard) and the targets that serve it."""

    name: str
    """Model name clients send; `anthropic/*` matches every name with that prefix."""
    targets: list[ModelTarget] = Field(min_length=1)
    """Deployments serving this name."""
    strategy: RoutingStrategy | None = None
    """Load-balancing strategy among targets of one priority; empty: the backend's `routing.strategy`."""
    timeouts: Timeouts | None = None
    """Upstream timeouts for this model, replacing the provider's."""
    context_fallbacks: list[str] = Field(default_factory=list)
    """Other model names (in order) that serve a prompt too long for every target of this one."""
    system_prepend: str | None = None
    """A system message put before the client's messages."""
    system_append: str | None = None
    """A system message put after the client's system messages (before the conversation)."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Request parameters set when the client did not set them (e.g. `temperature: 0.2`)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Request parameters forced whatever the client sent (e.g. `max_tokens: 1024`)."""

    @field_validator("defaults", "overrides")
    @classmethod
    def _plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        # YAML loaders hand out their own int/float/str subclasses; requests need plain JSON.
        return {str(k): _plain(v) for k, v in value.items()}

    @property
    def enriches(self) -> bool:
        """Whether requests to this model are rewritten (prompts or parameters)."""
        return bool(self.system_prepend or self.system_append or self.defaults or self.overrides)


class LlmBackendConfig(StrictModel):
    """An LLM gateway: OpenAI- and Anthropic-compatible APIs in front of one or more providers."""

    type: Literal["llm"]
    """Backend kind."""
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    """Upstream provider accounts by name."""
    models: list[ModelRoute] = Field(default_factory=list)
    """Client-facing model names. Empty: any model name goes to the only provider unchanged."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Load balancing, retries and cooldown of failing deployments."""
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, gt=0)
    """Largest non-streamed upstream answer; a larger one is refused with a 502 (not retried)
    without being read whole."""
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, gt=0)
    """Largest single event of an upstream stream; a larger one ends the client's stream with
    an error event and closes the upstream connection."""
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Prices by upstream model name, over the bundled table (USD per 1M tokens)."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """Policies inherited by every route to this backend (before the route's own)."""
    cache: LlmCacheConfig | None = None
    """The response cache (exact, and semantic when `cache.semantic` is set); off when unset.
    See docs/cache.md."""

    @model_validator(mode="after")
    def _model_references(self) -> LlmBackendConfig:
        names = {route.name for route in self.models}
        seen: set[str] = set()
        for i, route in enumerate(self.models):
            if route.name in seen:
                raise ValueError(f"models[{i}].name: duplicate model name {route.name!r}")
            seen.add(route.name)
            if "*" in route.name[:-1]:
                raise ValueError(f"models[{i}].name: '*' is only allowed at the end")
            for j, target in enumerate(route.targets):
                if target.provider not in self.providers:
                    known = ", ".join(sorted(self.providers))
                    raise ValueError(
                        f"models[{i}].targets[{j}].provider: unknown provider "
                        f"{target.provider!r} (known: {known})"
                    )
            for j, fallback in enumerate(route.context_fallbacks):
                if fallback not in names or fallback == route.name:
                    raise ValueError(
                        f"models[{i}].context_fallbacks[{j}]: {fallback!r} is not another model name"
                    )
        return self
