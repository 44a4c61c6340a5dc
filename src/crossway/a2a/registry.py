"""`AgentRegistry`: the configured agents, their cards fetched, refreshed and marked up or down.

An agent comes from config: an inline card, or a URL whose card is fetched from
`url + card_path` (the legacy `/.well-known/agent.json` as a fallback) through the one outbound
client (`crossway.proxy.outbound.OutboundClient`, per-agent TLS and headers). v0.3 cards are
converted to v1.0 by `crossway.a2a.bridge.card_to_canonical`. `start` fetches every card once
(concurrently, each bounded by `timeouts.card`) and starts a background task that fetches them
again every `card_refresh_seconds`; a fetch that fails marks the agent down, the next one that
succeeds marks it up. Request code never waits on a fetch: `recheck` schedules one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

import aiohttp
import orjson

from crossway.a2a.model import Agent, Binding, Interface, Version
from crossway.config.a2a import A2aAgentConfig, A2aBackendConfig
from crossway.proxy.outbound import OutboundClient, same_origin

log = logging.getLogger("crossway.a2a")

LEGACY_CARD_PATH: Final = "/.well-known/agent.json"
"""Where v0.3-era agents published their card (tried when `card_path` fails)."""
RECHECK_SECONDS: Final = 5.0
"""Fastest pace at which a down agent's card is fetched again on demand (`recheck`)."""
MAX_CARD_BYTES: Final = 1024 * 1024
"""Largest agent card accepted."""
BINDINGS: Final[frozenset[str]] = frozenset({"JSONRPC", "HTTP+JSON", "GRPC"})


class CardError(Exception):
    """A card could not be fetched or is not an agent card."""


def card_version(value: Any) -> Version | None:
    """ "1.0" or "0.3" for a protocol version string (`1.0.2`, `0.3.0`...), else None."""
    text = str(value or "").strip()
    if text == "1" or text.startswith("1."):
        return "1.0"
    if text.startswith("0.3"):
        return "0.3"
    return None


def build_agent(
    name: str, config: A2aAgentConfig, card: dict[str, Any], *, up: bool = True
) -> Agent:
    """An `Agent` from its config and its card (v1.0 or v0.3 JSON)."""
    from crossway.a2a import bridge

    if not isinstance(card, dict):
        raise CardError("the agent card is not a JSON object")
    try:
        card_v10, version = bridge.card_to_canonical(card)
    except Exception as exc:  # a bridge error on a malformed card: the card is bad
        raise CardError(f"not a valid agent card: {exc}") from exc
    base = str(config.url).rstrip("/") if config.url is not None else ""
    interfaces: list[Interface] = []
    for item in card_v10.get("supportedInterfaces") or []:
        if not isinstance(item, dict):
            continue
        binding = str(item.get("protocolBinding") or "JSONRPC").upper()
        iface_version = card_version(item.get("protocolVersion") or version)
        url = str(item.get("url") or "")
        if binding not in BINDINGS or iface_version is None or not url:
            continue
        if url.startswith("/"):
            url = base + url
        if config.url is not None and not same_origin(url, base):
            # The agent's `headers:` (its credentials) go with every call: never to a host the
            # configured `url` did not name, whatever a fetched card says.
            log.warning(
                "A2A agent %s: ignoring interface %s on another origin than its url", name, url
            )
            continue
        binding_value: Binding = binding  # type: ignore[assignment]
        interfaces.append(Interface(binding_value, url, iface_version))
    if not base and interfaces:
        base = interfaces[0].url.rstrip("/")
    skills = [s for s in card_v10.get("skills") or [] if isinstance(s, dict)]
    tags = list(config.tags)
    for skill in skills:
        for tag in skill.get("tags") or []:
            if isinstance(tag, str) and tag not in tags:
                tags.append(tag)
    return Agent(
        name=name,
        base_url=base,
        version=version,
        card=card_v10,
        interfaces=interfaces,
        skills=skills,
        input_modes=[str(m) for m in card_v10.get("defaultInputModes") or []],
        output_modes=[str(m) for m in card_v10.get("defaultOutputModes") or []],
        tags=tags,
        up=up,
        legacy_card="url" in card or "protocolVersion" in card,
    )


def _placeholder(name: str, config: A2aAgentConfig) -> Agent:
    """The agent before its card was ever fetched: known by name, down."""
    base = str(config.url).rstrip("/") if config.url is not None else ""
    return Agent(name=name, base_url=base, version="1.0", card={}, tags=list(config.tags), up=False)


class AgentRegistry:
    """The agents of one A2A backend, by config name."""

    def __init__(self, config: A2aBackendConfig) -> None:
        self.config = config
        self.agents: dict[str, Agent] = {}
        self.down_reason: dict[str, str] = {}
        """Why each down agent is down (the last card fetch error)."""
        self._clients: dict[str, OutboundClient] = {}
        self._task: asyncio.Task[None] | None = None
        self._rechecks: dict[str, asyncio.Task[None]] = {}
        self._last_fetch: dict[str, float] = {}
        for name, agent_config in config.agents.items():
            if agent_config.card is not None:
                try:
                    self.agents[name] = build_agent(name, agent_config, agent_config.card)
                except CardError as exc:
                    self._set_down(name, _placeholder(name, agent_config), str(exc))
            else:
                self._set_down(name, _placeholder(name, agent_config), "card not fetched yet")

    def get(self, name: str) -> Agent | None:
        return self.agents.get(name)

    def all(self) -> list[Agent]:
        return list(self.agents.values())

    def _timeout(self, name: str) -> float:
        agent_config = self.config.agents[name]
        timeouts = agent_config.timeouts or self.config.timeouts
        return timeouts.card

    def _client(self, name: str) -> OutboundClient:
        client = self._clients.get(name)
        if client is None:
            agent_config = self.config.agents[name]
            client = self._clients[name] = OutboundClient(
                tls=agent_config.tls, follow_redirects=False, limit=4
            )
        return client

    def _fetched(self) -> list[str]:
        return [n for n, c in self.config.agents.items() if c.card is None and c.url is not None]

    async def start(self) -> None:
        """Fetch every card once, then keep them fresh in the background."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._rechecks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._rechecks.clear()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.card_refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # never let the loop die
                log.exception("A2A card refresh failed")

    async def refresh(self) -> None:
        """Fetch every URL agent's card now (concurrently)."""
        await asyncio.gather(*(self.refresh_one(name) for name in self._fetched()))

    async def refresh_one(self, name: str) -> None:
        """Fetch one agent's card; mark it up (new card) or down (the reason kept)."""
        agent_config = self.config.agents[name]
        first = name not in self._last_fetch
        self._last_fetch[name] = time.monotonic()
        try:
            card = await self._fetch_card(name, agent_config)
            agent = build_agent(name, agent_config, card)
        except CardError as exc:
            old = self.agents.get(name) or _placeholder(name, agent_config)
            if old.up or first:
                log.warning("A2A agent %s is down: %s", name, exc)
            self._set_down(name, old, str(exc))
            return
        if not first and not self.agents.get(name, agent).up:
            log.info("A2A agent %s is up again", name)
        self.agents[name] = agent
        self.down_reason.pop(name, None)

    def _set_down(self, name: str, agent: Agent, reason: str) -> None:
        agent.up = False
        self.agents[name] = agent
        self.down_reason[name] = reason

    def mark_down(self, name: str, reason: str) -> None:
        """A call to the agent could not reach it: down until its card is fetched again
        (scheduled here)."""
        agent = self.agents.get(name)
        if agent is None:
            return
        if agent.up:
            log.warning("A2A agent %s is down: %s", name, reason)
        self._set_down(name, agent, reason)
        self.recheck(name)

    def recheck(self, name: str) -> None:
        """Fetch a down agent's card again in the background (at most every
        `RECHECK_SECONDS`); an inline-card agent is marked up again at once."""
        agent_config = self.config.agents.get(name)
        if agent_config is None:
            return
        if agent_config.card is not None or agent_config.url is None:
            agent = self.agents.get(name)
            if agent is not None and agent.card:
                agent.up = True
                self.down_reason.pop(name, None)
            return
        running = self._rechecks.get(name)
        if running is not None and not running.done():
            return
        if time.monotonic() - self._last_fetch.get(name, 0.0) < RECHECK_SECONDS:
            return
        self._rechecks[name] = asyncio.get_running_loop().create_task(self.refresh_one(name))

    async def _fetch_card(self, name: str, agent_config: A2aAgentConfig) -> dict[str, Any]:
        base = str(agent_config.url).rstrip("/")
        paths = [agent_config.card_path]
        if agent_config.card_path != LEGACY_CARD_PATH:
            paths.append(LEGACY_CARD_PATH)
        first_error: CardError | None = None
        for path in paths:
            url = base + (path if path.startswith("/") else "/" + path)
            try:
                return await self._get_json(name, agent_config, url)
            except CardError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    async def _get_json(self, name: str, agent_config: A2aAgentConfig, url: str) -> dict[str, Any]:
        headers = {k: v.get_secret_value() for k, v in agent_config.headers.items()}
        headers.setdefault("Accept", "application/json")
        host = url.split("://", 1)[-1].split("/", 1)[0]
        try:
            async with asyncio.timeout(self._timeout(name)):
                async with self._client(name).get(url, headers=headers) as resp:
                    if resp.status != 200:
                        raise CardError(f"card fetch from {host} answered HTTP {resp.status}")
                    body = await resp.content.read(MAX_CARD_BYTES + 1)
        except TimeoutError:
            raise CardError(f"card fetch from {host} timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise CardError(f"card fetch from {host} failed: {type(exc).__name__}") from None
        if len(body) > MAX_CARD_BYTES:
            raise CardError(f"the card from {host} is larger than {MAX_CARD_BYTES} bytes")
        try:
            card = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise CardError(f"the card from {host} is not JSON") from None
        if not isinstance(card, dict):
            raise CardError(f"the card from {host} is not a JSON object")
        return card


__all__ = ["LEGACY_CARD_PATH", "AgentRegistry", "CardError", "build_agent", "card_version"]
