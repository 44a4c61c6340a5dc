"""CEL authorization: allow / deny rules over the one attribute model, lists and calls."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crossway.config.policy import AuthorizationConfig
from crossway.errors import Forbidden
from crossway.policy.authorization import AuthorizationPolicy
from crossway.policy.cel import RuleError, compile_rule
from crossway.server.context import RequestContext

ALICE = {"sub": "alice", "groups": ["eng"], "scope": "tools:read", "role": "admin"}
BOB = {"sub": "bob", "groups": ["sales"], "role": "user"}


def _policy(allow: list[str] | None = None, deny: list[str] | None = None, **extra: Any):  # type: ignore[no-untyped-def]
    config = AuthorizationConfig(type="authorization", allow=allow or [], deny=deny or [], **extra)
    return AuthorizationPolicy(config)


def _tool(name: str, server: str = "srv", arguments: dict[str, Any] | None = None) -> dict:  # type: ignore[type-arg]
    federated = f"{server}_{name}"
    attrs: dict[str, Any] = {
        "kind": "tool",
        "name": federated,
        "server": server,
        "target": name,
        "tool": {"name": federated},
        "prompt": {"name": ""},
        "resource": {"uri": ""},
    }
    if arguments is not None:
        attrs["arguments"] = arguments
    return {"mcp": attrs}


def _ctx(claims: dict[str, Any] | None = None, **attrs: Any) -> RequestContext:
    ctx = RequestContext("r", "b", "1", "/")
    if claims is not None:
        ctx.jwt = claims
        ctx.identity = {"sub": claims.get("sub", ""), "method": "jwt"}
    ctx.attrs.update(attrs)
    return ctx


async def _allows(policy: AuthorizationPolicy, attrs: dict, claims: dict | None = None) -> bool:  # type: ignore[type-arg]
    ctx = _ctx(claims, **attrs)
    try:
        await policy.on_parsed(ctx)
    except Forbidden:
        return False
    return True


async def test_allow_rules_over_claims_and_names() -> None:
    policy = _policy(
        allow=['mcp.server == "srv" && "eng" in jwt.groups', 'mcp.tool.name == "srv_echo"']
    )
    assert policy.phases == {"parsed"}
    assert await _allows(policy, _tool("add", arguments={}), ALICE)
    assert not await _allows(policy, _tool("add", arguments={}), BOB)
    assert await _allows(policy, _tool("echo", arguments={}), BOB)
    # Anonymous caller: `jwt.groups` is missing -> the rule fails -> not allowed (fail closed).
    assert not await _allows(policy, _tool("add", arguments={}))
    assert await _allows(policy, _tool("echo", arguments={}))


async def test_deny_wins_and_errors_deny() -> None:
    policy = _policy(allow=["true"], deny=['mcp.target.startsWith("admin_") && jwt.sub != "root"'])
    assert not await _allows(policy, _tool("admin_reset", arguments={}), ALICE)
    assert await _allows(policy, _tool("admin_reset", arguments={}), {"sub": "root"})
    assert await _allows(policy, _tool("echo", arguments={}), ALICE)
    # No `sub` claim: the deny rule cannot be evaluated for admin tools -> denied.
    assert not await _allows(policy, _tool("admin_reset", arguments={}), {})
    with pytest.raises(Forbidden, match="srv_admin_reset"):
        await policy.on_parsed(_ctx(ALICE, **_tool("admin_reset", arguments={})))


async def test_api_key_identity_is_never_seen_as_jwt() -> None:
    """An API key named "admin" must not pass a rule about a verified JWT's `sub`."""
    policy = _policy(allow=['jwt.sub == "admin"'])
    ctx = _ctx(None, llm={"model": "gpt-4o"})
    ctx.identity = {"sub": "admin", "method": "api_key"}
    ctx.key = {"name": "admin"}
    with pytest.raises(Forbidden):
        await policy.on_request({"type": "http", "headers": []}, ctx)
    assert await _allows(_policy(allow=['key.name == "admin"']), {}, None) is False
    ctx2 = _ctx(None)
    ctx2.key = {"name": "admin"}
    await _policy(allow=['key.name == "admin"']).on_request({"headers": []}, ctx2)


async def test_argument_rules_in_calls_and_lists() -> None:
    policy = _policy(
        allow=['mcp.tool.name == "srv_echo"', 'mcp.tool.name == "srv_add" && mcp.arguments.a < 10'],
        deny=['mcp.tool.name == "srv_echo" && mcp.arguments.message.contains("secret")'],
    )
    assert await _allows(policy, _tool("add", arguments={"a": 3}))
    assert not await _allows(policy, _tool("add", arguments={"a": 30}))
    assert not await _allows(policy, _tool("add", arguments={}))
    assert await _allows(policy, _tool("echo", arguments={"message": "hi"}))
    assert not await _allows(policy, _tool("echo", arguments={"message": "the secret"}))
    # Lists ask "could a call be allowed": both stay visible, other tools do not.
    ctx = _ctx()
    shown = [n for n in ("add", "echo", "rm") if policy.visible(ctx, _tool(n))]
    assert shown == ["add", "echo"]


async def test_lists_use_the_same_rule_as_calls() -> None:
    policy = _policy(allow=['jwt.sub == "alice" || mcp.target == "echo"'])
    for name in ("echo", "add"):
        for claims in (ALICE, BOB, None):
            visible = policy.visible(_ctx(claims), _tool(name))
            assert visible == await _allows(policy, _tool(name, arguments={}), claims)
    # Cached per caller: a second list answers the same.
    assert policy.visible(_ctx(BOB), _tool("add")) is False
    assert policy.visible(_ctx(ALICE), _tool("add")) is True


async def test_request_phase_rules_see_the_request() -> None:
    policy = _policy(allow=['request.method == "GET" && request.path.startsWith("/public/")'])
    assert policy.phases == {"request"}
    scope = {"type": "http", "method": "GET", "path": "/public/a", "headers": [(b"host", b"h")]}
    await policy.on_request(scope, _ctx())
    with pytest.raises(Forbidden):
        await policy.on_request({**scope, "path": "/private"}, _ctx())


async def test_roles_expand_into_allow_rules() -> None:
    policy = _policy(
        roles={
            "claim": "role",
            "grants": {
                "admin": {"models": ["*"], "tools": ["*"]},
                "*": {"models": ["gpt-4o-mini"], "tools": ["echo"]},
            },
        }
    )
    llm = {"llm": {"model": "gpt-4o"}}
    assert await _allows(policy, llm, ALICE)
    assert not await _allows(policy, llm, BOB)
    assert await _allows(policy, {"llm": {"model": "gpt-4o-mini"}}, BOB)
    assert not await _allows(policy, {"llm": {"model": "gpt-4o-mini"}}, None)
    tool = {"mcp": {"tool": {"name": "echo"}, "kind": "tool"}}
    assert await _allows(policy, tool, BOB)
    assert not await _allows(policy, {"mcp": {"tool": {"name": "rm"}}}, BOB)
    assert await _allows(policy, {"mcp": {"tool": {"name": "rm"}}}, ALICE)
    # A list-valued role claim counts too.
    assert await _allows(policy, llm, {"sub": "c", "role": ["user", "admin"]})


def test_bad_rules_are_config_errors_with_their_index() -> None:
    with pytest.raises(ValidationError) as info:
        AuthorizationConfig(type="authorization", allow=['mcp.name == "a"', "mcp.name =="])
    assert "allow[1]" in str(info.value) and "Syntax error" in str(info.value)
    with pytest.raises(ValidationError, match="undeclared reference to 'nope"):
        AuthorizationConfig(type="authorization", deny=["nope.path == '/'"])
    with pytest.raises(RuleError, match="must return a bool"):
        compile_rule("1 + 2")
    with pytest.raises(ValidationError, match="set allow, deny or roles"):
        AuthorizationConfig(type="authorization")


async def test_non_bool_result_fails_closed() -> None:
    policy = _policy(allow=["mcp.arguments.flag"])
    assert await _allows(policy, _tool("x", arguments={"flag": True}))
    assert not await _allows(policy, _tool("x", arguments={"flag": "yes"}))


def test_every_policy_type_has_a_class() -> None:
    """The factory's table covers exactly the kinds the config accepts."""
    import typing

    from crossway.config.policy import PolicyConfig
    from crossway.policy.base import POLICY_CLASSES

    union = typing.get_args(typing.get_args(PolicyConfig)[0])
    kinds = {typing.get_args(m.model_fields["type"].annotation)[0] for m in union}
    assert kinds == set(POLICY_CLASSES)


async def test_a2a_method_and_skill_rules_do_not_hide_the_agent_from_lists() -> None:
    """Pentest finding 6: a rule on `a2a.method` (or `a2a.skill`) used to hide the agent from
    the catalog and the router, since a list item has no method; calls still decide."""
    policy = _policy(allow=['a2a.agent == "writer" && a2a.method == "SendMessage"'])
    assert policy.visible(_ctx(), {"a2a": {"agent": "writer"}})
    assert not policy.visible(_ctx(), {"a2a": {"agent": "vision"}})
    assert await _allows(policy, {"a2a": {"agent": "writer", "method": "SendMessage"}})
    assert not await _allows(policy, {"a2a": {"agent": "writer", "method": "CancelTask"}})
    deny = _policy(allow=["true"], deny=['a2a.skill == "translate"'])
    assert deny.visible(_ctx(), {"a2a": {"agent": "writer"}})
    assert not await _allows(deny, {"a2a": {"agent": "writer", "skill": "translate"}})
