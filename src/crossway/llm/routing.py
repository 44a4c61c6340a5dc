"""Model routing: which deployments serve a client's model name, in which order, and when to retry.

A client-facing model name resolves (exactly, else by the longest `prefix*` wildcard) to a
`ModelRoute` and its deployments. `ModelRouter.order` ranks them for one request: priority
groups first (lower first), within a group by the strategy (weighted random, least in flight,
or lowest recent latency), deployments in cooldown last — they are still tried when nothing else
is left, rather than failing a request that might succeed. Health (in-flight count, latency,
consecutive failures, cooldown) is kept per provider and upstream model, so two model names
served by the same deployment share what is known about it.

Health is per worker process (each worker has its own router); with
`routing.cooldown.redis_url` ejections are shared through Redis
(`crossway.llm.shared_cooldown`), the rest stays local.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from crossway.config.common import Timeouts
from crossway.config.llm import LlmBackendConfig, ModelRoute, RetryConfig, RoutingStrategy
from crossway.errors import GatewayError, NotFound, UpstreamError, UpstreamTimeout
from crossway.llm.errors import RESPONSE_TOO_LARGE
from crossway.llm.providers.base import Provider
from crossway.proxy.sse import EVENT_TOO_LARGE
from crossway.telemetry import metrics

if TYPE_CHECKING:
    from crossway.llm.shared_cooldown import SharedCooldown

RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""Upstream statuses worth another attempt (elsewhere, or later)."""
NOT_RETRIED: Final = frozenset({RESPONSE_TOO_LARGE, EVENT_TOO_LARGE})
"""Error codes never retried: an answer over the size caps was paid for already; asking again
would pay again for what is refused again."""
LATENCY_EWMA_ALPHA: Final = 0.3
"""Weight of the newest sample in a deployment's latency average."""
CHARS_PER_TOKEN: Final = 4
"""The rough ratio `estimate_prompt_tokens` uses (English text with common tokenizers)."""
IMAGE_TOKENS: Final = 1000
"""What one image part is counted as."""
MESSAGE_OVERHEAD_TOKENS: Final = 4
"""Role and framing tokens per message."""


@dataclass(slots=True)
class DeploymentHealth:
    """What is known about one deployment (a provider account serving one upstream model)."""

    in_flight: int = 0
    latency: float | None = None  # moving average of seconds to the response headers
    failures: int = 0  # consecutive
    cooldown_until: float = 0.0  # time.monotonic() before which the deployment is skipped


@dataclass(slots=True, frozen=True)
class Deployment:
    """One target of a model route, with its shared health."""

    provider: Provider
    model: str | None  # upstream name; None: the client's name (or what the wildcard matched)
    weight: float
    priority: int
    context_window: int | None
    health: DeploymentHealth = field(compare=False)

    @property
    def key(self) -> str:
        """`provider/model`, for metrics, logs and tests."""
        return f"{self.provider.name}/{self.model or '*'}"


@dataclass(slots=True, frozen=True)
class Resolved:
    """A client's model name resolved to its route."""

    name: str
    route: ModelRoute | None
    deployments: tuple[Deployment, ...]
    matched: str  # the client's name, or the part after a wildcard's prefix
    strategy: RoutingStrategy

    def upstream_model(self, deployment: Deployment) -> str:
        return deployment.model or self.matched

    def timeouts(self, deployment: Deployment) -> Timeouts:
        if self.route is not None and self.route.timeouts is not None:
            return self.route.timeouts
        return deployment.provider.config.timeouts

    @property
    def route_name(self) -> str:
        """The configured name (bounded: fit for metric labels)."""
        return self.route.name if self.route is not None else "*"


class ModelRouter:
    """Resolves model names and ranks deployments; one per backend, shared by its requests."""

    def __init__(
        self,
        config: LlmBackendConfig,
        providers: dict[str, Provider],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self._health: dict[tuple[str, str | None], DeploymentHealth] = {}
        self.shared: SharedCooldown | None = None  # set when ejections are shared via Redis
        self._exact: dict[str, Resolved] = {}
        self._wildcards: list[tuple[str, ModelRoute, tuple[Deployment, ...]]] = []
        self._default: tuple[Deployment, ...] | None = None
        for route in config.models:
            deployments = tuple(
                Deployment(
                    providers[t.provider],
                    t.model,
                    t.weight,
                    t.priority,
                    t.context_window,
                    self._health_of(t.provider, t.model),
                )
                for t in route.targets
            )
            if route.name.endswith("*"):
                self._wildcards.append((route.name[:-1], route, deployments))
            else:
                strategy = route.strategy or config.routing.strategy
                self._exact[route.name] = Resolved(
                    route.name, route, deployments, route.name, strategy
                )
        self._wildcards.sort(key=lambda w: len(w[0]), reverse=True)
        if not config.models and len(providers) == 1:
            name, provider = next(iter(providers.items()))
            self._default = (Deployment(provider, None, 1.0, 0, None, self._health_of(name, None)),)

    def _health_of(self, provider: str, model: str | None) -> DeploymentHealth:
        return self._health.setdefault((provider, model), DeploymentHealth())

    def health_table(self) -> dict[tuple[str, str | None], DeploymentHealth]:
        """Health by (provider name, upstream model as configured)."""
        return self._health

    def names(self) -> list[str]:
        """Model names clients can list (wildcards cannot be enumerated)."""
        return list(self._exact)

    def resolve(self, model: str) -> Resolved:
        """The route for a client's model name, or `NotFound` in OpenAI's words."""
        found = self._exact.get(model)
        if found is not None:
            return found
        for prefix, route, deployments in self._wildcards:
            if model.startswith(prefix) and len(model) > len(prefix):
                strategy = route.strategy or self.config.routing.strategy
                return Resolved(model, route, deployments, model[len(prefix) :], strategy)
        if self._default is not None:
            return Resolved(model, None, self._default, model, self.config.routing.strategy)
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    def order(
        self, deployments: Iterable[Deployment], strategy: RoutingStrategy
    ) -> list[Deployment]:
        """Deployments in the order one request should try them."""
        candidates = list(deployments)
        if len(candidates) == 1:
            return candidates
        now = time.monotonic()
        healthy = [d for d in candidates if d.health.cooldown_until <= now]
        cooling = sorted(
            (d for d in candidates if d.health.cooldown_until > now),
            key=lambda d: d.health.cooldown_until,
        )
        ranked: list[Deployment] = []
        for priority in sorted({d.priority for d in healthy}):
            ranked.extend(self._rank([d for d in healthy if d.priority == priority], strategy))
        return ranked + cooling

    def _rank(self, group: list[Deployment], strategy: RoutingStrategy) -> list[Deployment]:
        if len(group) == 1:
            return group
        rnd = self.rng.random
        if strategy == "least_in_flight":
            return sorted(group, key=lambda d: (d.health.in_flight / d.weight, rnd()))
        if strategy == "latency":
            # Unknown latency counts as zero, so a new deployment gets measured soon.
            return sorted(
                group,
                key=lambda d: ((d.health.latency or 0.0) * (1 + d.health.in_flight), rnd()),
            )
        # Weighted random order without replacement (Efraimidis-Spirakis keys).
        return sorted(group, key=lambda d: rnd() ** (1.0 / d.weight), reverse=True)

    # -- health ------------------------------------------------------------------------------

    def succeeded(self, deployment: Deployment, latency: float) -> None:
        health = deployment.health
        health.failures = 0
        if health.cooldown_until:
            health.cooldown_until = 0.0
            if self.shared is not None:
                self.shared.cleared(deployment.provider.name, deployment.model)
        if health.latency is None:
            health.latency = latency
        else:
            health.latency += LATENCY_EWMA_ALPHA * (latency - health.latency)

    def failed(self, deployment: Deployment, exc: GatewayError) -> None:
        """Count a retryable failure; eject the deployment when it keeps failing or is rate limited."""
        cooldown = self.config.routing.cooldown
        health = deployment.health
        health.failures += 1
        seconds = 0.0
        if exc.status_code == 429:
            seconds = max(retry_after(exc) or 0.0, cooldown.seconds)
        elif health.failures >= cooldown.failures:
            seconds = cooldown.seconds
        if seconds:
            health.cooldown_until = max(health.cooldown_until, time.monotonic() + seconds)
            metrics.observe_llm_cooldown(deployment.key)
            if self.shared is not None:
                self.shared.ejected(deployment.provider.name, deployment.model, seconds)


def is_retryable(exc: GatewayError) -> bool:
    """Whether another attempt (on another deployment, or later) may succeed."""
    if isinstance(exc, UpstreamTimeout):
        return True
    if isinstance(exc.code, str) and exc.code in NOT_RETRIED:
        return False
    if exc.status_override is None:
        # No upstream status: unreachable, reset or broken before the answer -- or our own error.
        return isinstance(exc, UpstreamError)
    return exc.status_code in RETRY_STATUSES


def retry_after(exc: GatewayError) -> float | None:
    """Seconds the upstream asked to wait (`Retry-After` as seconds or an HTTP date)."""
    value = exc.headers.get("retry-after") or exc.headers.get("Retry-After")
    return parse_retry_after(value) if value else None


def parse_retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff(retry: int, cfg: RetryConfig, rng: random.Random, after: float | None) -> float | None:
    """Seconds to wait before retry number `retry` (1-based); None when `after` is too long."""
    if after is not None and after > cfg.max_retry_after:
        return None
    delay: float = min(cfg.backoff_base * 2.0 ** (retry - 1), cfg.backoff_max)
    delay *= 0.5 + rng.random() / 2  # jitter, so clients retrying together spread out
    return max(delay, after or 0.0)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap upper-leaning estimate of a canonical request's prompt plus requested output.

    About four characters per token for text and tool schemas, a fixed count per image, a few
    tokens per message; plus `max_tokens` / `max_completion_tokens` when the client set one.
    """
    chars = 0
    tokens = 0
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        tokens += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    chars += len(str(part.get("text", "")))
                else:
                    tokens += IMAGE_TOKENS
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                function = call.get("function") or {}
                chars += len(str(function.get("name", ""))) + len(
                    str(function.get("arguments", ""))
                )
    for tool in body.get("tools") or ():
        chars += len(str(tool))
    output = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if not isinstance(output, int):
        output = 0
    return tokens + (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + output
