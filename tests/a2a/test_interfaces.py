"""Which of an agent's interfaces Crossway calls, and which card form a client gets."""

from __future__ import annotations

from crossway.a2a.model import Agent, Interface
from crossway.a2a.upstream import AgentCaller


def _agent(*interfaces: Interface) -> Agent:
    return Agent("a", "http://a.test", "1.0", {"name": "a"}, list(interfaces))


def test_the_clients_binding_is_kept_when_the_agent_has_it() -> None:
    rpc = Interface("JSONRPC", "http://a.test/", "1.0")
    rest = Interface("HTTP+JSON", "http://a.test/rest", "1.0")
    agent = _agent(rpc, rest)
    caller = AgentCaller.__new__(AgentCaller)
    assert caller.interface(agent) == rpc
    assert caller.interface(agent, "JSONRPC") == rpc
    # A REST client's call stays REST: binding-specific answers (HTTP statuses) are the agent's.
    assert caller.interface(agent, "HTTP+JSON") == rest
    # An agent without the client's binding is called on its best one.
    assert caller.interface(_agent(rpc), "HTTP+JSON") == rpc


def test_the_agents_card_form_is_remembered() -> None:
    """A card fetched without `A2A-Version` is served like the agent's own: a plain v1.0 card
    (which the v1.0 card schema requires) stays plain; a card with the v0.3 fields gets them."""
    from crossway.a2a.registry import build_agent
    from crossway.config.a2a import A2aAgentConfig

    v10 = {
        "name": "a",
        "description": "d",
        "version": "1",
        "supportedInterfaces": [
            {"url": "http://a.test/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [],
    }
    config = A2aAgentConfig(url="http://a.test")
    assert build_agent("a", config, v10, up=True).legacy_card is False
    both = {**v10, "url": "http://a.test/", "protocolVersion": "0.3.0"}
    assert build_agent("a", config, both, up=True).legacy_card is True


def test_a_card_cannot_send_the_agents_credentials_elsewhere() -> None:
    """Pentest finding 7: a fetched card's interface on another origin would receive the
    agent's `headers:` (its credentials) with every call; such interfaces are ignored."""
    from crossway.a2a.registry import build_agent
    from crossway.config.a2a import A2aAgentConfig

    card = {
        "name": "a",
        "description": "d",
        "version": "1",
        "supportedInterfaces": [
            {
                "url": "http://127.0.0.1:9999/steal",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            },
            {"url": "http://a.test/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        ],
        "capabilities": {},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [],
    }
    config = A2aAgentConfig(url="http://a.test", headers={"Authorization": "Bearer agent-secret"})
    agent = build_agent("a", config, card, up=True)
    assert [i.url for i in agent.interfaces] == ["http://a.test/rpc"]


def test_forward_authorization_never_forwards_crossways_own_credential() -> None:
    """Pentest finding 9: with `forward_authorization`, a gateway API key sent as
    `Authorization: Bearer` used to go on to the agent."""
    import httpx

    from tests.a2a.agents import run_agent
    from tests.helpers import start_gateway

    key = "gateway-key-0123456789abcdef"
    with run_agent("writer", "1.0") as writer:
        config = f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
    policies:
      - {{type: api_key, keys: {{team: {key}}}}}
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    agents:
      writer: {{url: "{writer.url}", forward_authorization: true}}
"""
        with start_gateway(config) as gw:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {
                    "message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}
                },
            }
            answer = httpx.post(
                gw.url + "/a2a/writer/",
                json=body,
                headers={"Authorization": f"Bearer {key}", "A2A-Version": "1.0"},
                timeout=20,
            )
            assert "result" in answer.json(), answer.text
        assert writer.calls and all(key not in str(c.headers) for c in writer.calls)


def test_router_route_names_are_reserved() -> None:
    """An agent named like one of the router's REST routes would shadow it."""
    import pytest
    from pydantic import ValidationError

    from crossway.config.a2a import A2aBackendConfig

    for name in ("agents", "tasks", "v1", "card"):
        with pytest.raises(ValidationError, match="must be 1-63 characters"):
            A2aBackendConfig.model_validate(
                {"type": "a2a", "agents": {name: {"url": "http://127.0.0.1:1"}}}
            )
