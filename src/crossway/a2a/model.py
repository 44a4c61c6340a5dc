"""The A2A gateway's vocabulary: agents as the registry knows them, and routing decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

Version = Literal["1.0", "0.3"]
STREAMING_METHODS: Final = frozenset({"SendStreamingMessage", "SubscribeToTask"})
"""The canonical methods whose answer is a stream of events."""
Binding = Literal["JSONRPC", "HTTP+JSON", "GRPC"]


@dataclass(frozen=True, slots=True)
class Interface:
    """One way an agent can be called."""

    binding: Binding
    url: str
    version: Version


@dataclass(slots=True)
class Agent:
    """A registered agent: its config name, where it is, and its card in v1.0 form."""

    name: str
    base_url: str
    version: Version
    """The protocol version the agent speaks (its card's)."""
    card: dict[str, Any]
    """The agent's card as v1.0 JSON (a v0.3 card is converted by `crossway.a2a.bridge`)."""
    interfaces: list[Interface] = field(default_factory=list)
    skills: list[dict[str, Any]] = field(default_factory=list)
    """The card's skills (v1.0 JSON: id, name, description, tags, examples, inputModes,
    outputModes)."""
    input_modes: list[str] = field(default_factory=list)
    """The card's `defaultInputModes`."""
    output_modes: list[str] = field(default_factory=list)
    """The card's `defaultOutputModes`."""
    tags: list[str] = field(default_factory=list)
    """Config tags plus every skill's tags."""
    up: bool = True
    """False while its card cannot be fetched or it fails calls."""
    legacy_card: bool = False
    """Its own card carries the v0.3 fields (`url`, `protocolVersion`): a card fetched without
    `A2A-Version` is then served with them merged in, like the agent's; otherwise as plain v1.0
    (which the v1.0 card schema requires)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Which agent (and skill) the router picked for a message, and why."""

    agent: str
    skill: str | None
    reason: str
    """`skill` (explicit skill id), `mode` (the only agent that takes the message's modes),
    `match` (best text match), `default` (the only candidate)."""
    score: float

    def header(self) -> str:
        """The `x-crossway-route` response header value."""
        skill = f";skill={self.skill}" if self.skill else ""
        return f"agent={self.agent}{skill};reason={self.reason};score={self.score:.3f}"


__all__ = ["STREAMING_METHODS", "Agent", "Binding", "Decision", "Interface", "Version"]
