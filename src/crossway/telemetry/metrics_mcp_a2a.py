"""Prometheus metrics of MCP and A2A traffic, and of the decisions taken on it.

Every label set is bounded: server, agent and route names come from the config; methods are
folded onto the protocol's own method names (anything else is `other`); tool names come from
the servers' lists, so at most `MAX_TOOL_LABELS` distinct ones become labels per process and
the rest are counted as `other`. Ids (session, task, context, request) and free text never
become labels.

A2A task state transitions and task durations are `crossway_a2a_tasks_total` and
`crossway_a2a_task_duration_seconds` (`crossway.telemetry.metrics.observe_a2a_task`, recorded
by the task tracker).

Label children are cached per label tuple, so a call costs a dict lookup and two increments.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from crossway.telemetry.metrics import LATENCY_BUCKETS

MAX_TOOL_LABELS: Final = 500
"""Distinct tool names that become label values (per process); the rest count as `other`."""
MAX_TOOL_NAME_LENGTH: Final = 128
"""A longer tool name is counted as `other` (no server lists such names in practice)."""
OTHER: Final = "other"
"""The label value everything outside a bounded set folds into."""
NONE: Final = "-"
"""The label value of a label that does not apply (the tool of a `resources/read`)."""

MCP_METHODS: Final = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "server/discover",
        "subscriptions/listen",
    }
)
"""MCP methods kept as label values; any other method is `other`."""
A2A_METHODS: Final = frozenset(
    {
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "ListTasks",
        "CancelTask",
        "SubscribeToTask",
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
        "GetExtendedAgentCard",
    }
)
"""Canonical (v1.0) A2A methods kept as label values; any other method is `other`."""

MCP_CALLS = Counter(
    "crossway_mcp_calls_total",
    "Requests Crossway sent to MCP servers, by server, method and tool (`-` when not a tool "
    "call; one per server for a fanned-out list).",
    ["server", "method", "tool"],
)
MCP_ERRORS = Counter(
    "crossway_mcp_errors_total",
    "MCP server requests that failed, by server, method, tool and error (rpc_error: the server "
    "answered a JSON-RPC error; tool_error: a tool result with isError; timeout; unreachable; "
    "cancelled; error: anything else).",
    ["server", "method", "tool", "error"],
)
MCP_DURATION = Histogram(
    "crossway_mcp_call_duration_seconds",
    "Time an MCP server took to answer a request, by server, method and tool.",
    ["server", "method", "tool"],
    buckets=LATENCY_BUCKETS,
)
MCP_PINNING = Counter(
    "crossway_mcp_pinning_decisions_total",
    "Tool pinning decisions, by server, decision (allowed, flagged, blocked) and stage (list: "
    "a listed definition reviewed; call: a tool call let through or refused).",
    ["server", "decision", "stage"],
)
A2A_CALLS = Counter(
    "crossway_a2a_calls_total",
    "Calls Crossway sent to A2A agents, by agent and (canonical v1.0) method.",
    ["agent", "method"],
)
A2A_ERRORS = Counter(
    "crossway_a2a_errors_total",
    "A2A agent calls that failed (unreachable, timed out, an error or a broken answer), by "
    "agent and method.",
    ["agent", "method"],
)
A2A_DURATION = Histogram(
    "crossway_a2a_call_duration_seconds",
    "Time an A2A agent took to answer a call (a stream: until it ended), by agent and method.",
    ["agent", "method"],
    buckets=LATENCY_BUCKETS,
)
AUTHORIZATION_DENIALS = Counter(
    "crossway_authorization_denials_total",
    "Requests refused by an authorization policy, by policy (its type), route and what was "
    "refused (llm, mcp, a2a, or request when refused before the backend parsed anything).",
    ["policy", "route", "target"],
)

_tools: set[str] = set()
_mcp_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
_mcp_error_children: dict[tuple[str, str, str, str], Counter] = {}
_a2a_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
_pinning_children: dict[tuple[str, str, str], Counter] = {}
_denial_children: dict[tuple[str, str, str], Counter] = {}

PIN_DECISIONS: Final = {"ok": "allowed", "flagged": "flagged", "blocked": "blocked"}
"""Pinning verdicts (`crossway.mcp.hooks.PinVerdict`) as decision label values."""


def tool_label(name: str | None) -> str:
    """The label value of a tool name: itself while fewer than `MAX_TOOL_LABELS` distinct
    names have been seen (and it is not absurdly long), else `other`."""
    if not name:
        return NONE
    if name in _tools:
        return name
    if len(_tools) >= MAX_TOOL_LABELS or len(name) > MAX_TOOL_NAME_LENGTH:
        return OTHER
    _tools.add(name)
    return name


def mcp_method_label(method: str) -> str:
    """An MCP method as a label value (`other` outside `MCP_METHODS`)."""
    return method if method in MCP_METHODS else OTHER


def observe_mcp_call(
    server: str, method: str, tool: str | None, seconds: float, error: str | None = None
) -> None:
    """Count one request sent to an MCP server, its duration and, with `error` (one of
    rpc_error, tool_error, timeout, unreachable, cancelled, error), its failure."""
    key = (server, mcp_method_label(method), tool_label(tool))
    children = _mcp_children.get(key)
    if children is None:
        children = _mcp_children[key] = (MCP_CALLS.labels(*key), MCP_DURATION.labels(*key))
    children[0].inc()
    children[1].observe(seconds)
    if error is not None:
        error_key = (*key, error)
        counter = _mcp_error_children.get(error_key)
        if counter is None:
            counter = _mcp_error_children[error_key] = MCP_ERRORS.labels(*error_key)
        counter.inc()


def observe_pinning(server: str, verdict: str, stage: str) -> None:
    """Count one pinning decision (`verdict`: ok, flagged or blocked; `stage`: list or call)."""
    key = (server, PIN_DECISIONS.get(verdict, OTHER), stage)
    counter = _pinning_children.get(key)
    if counter is None:
        counter = _pinning_children[key] = MCP_PINNING.labels(*key)
    counter.inc()


def observe_a2a_call(agent: str, method: str, seconds: float, failed: bool = False) -> None:
    """Count one call to an A2A agent and its duration (and its failure)."""
    key = (agent, method if method in A2A_METHODS else OTHER)
    children = _a2a_children.get(key)
    if children is None:
        children = _a2a_children[key] = (A2A_CALLS.labels(*key), A2A_DURATION.labels(*key))
    children[0].inc()
    children[1].observe(seconds)
    if failed:
        A2A_ERRORS.labels(*key).inc()


def observe_authorization_denial(policy: str, route: str | None, target: str) -> None:
    """Count one request an authorization policy refused."""
    key = (policy, route or NONE, target)
    counter = _denial_children.get(key)
    if counter is None:
        counter = _denial_children[key] = AUTHORIZATION_DENIALS.labels(*key)
    counter.inc()


__all__ = [
    "MAX_TOOL_LABELS",
    "observe_a2a_call",
    "observe_authorization_denial",
    "observe_mcp_call",
    "observe_pinning",
    "tool_label",
]
