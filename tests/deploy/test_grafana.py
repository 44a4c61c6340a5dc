"""deploy/grafana/crossway.json: every PromQL query of the dashboard (panel targets and template
variables) names only metrics Crossway exports — those a real gateway's `/metrics` shows after
traffic (parsed with prometheus_client's text parser), plus the metric families declared in
`crossway.telemetry.metrics`, `crossway.telemetry.metrics_mcp_a2a` and the admin plane's probe
(a labelled family has no samples until its first event)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from crossway.server import admin_probe
from crossway.telemetry import metrics, metrics_mcp_a2a
from tests.helpers import ROOT, start_gateway

DASHBOARD = ROOT / "deploy" / "grafana" / "crossway.json"

# PromQL words that look like metric names but are not.
KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
        "and", "or", "unless", "inf", "nan", "atan2",
    }
)  # fmt: skip
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (with Grafana variables) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables ($model, $__rate_interval)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors and subqueries
    # Label lists of grouping and vector matching: `by (a, b)`, `on(a)`, `group_left(a)`.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in IDENT.finditer(text):
        word = match.group()
        start, end = match.span()
        if start > 0 and (text[start - 1].isdigit() or text[start - 1] == "."):
            continue  # part of a number such as 1e-9
        if text[end:].lstrip().startswith("("):
            continue  # a function
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def _label_values_metric(query: str) -> set[str]:
    """`label_values(metric{...}, label)` -> {metric}; other variable queries are PromQL."""
    found = re.match(r"\s*label_values\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", query)
    if found:
        return {found.group(1)}
    if re.match(r"\s*label_values\s*\(\s*\w+\s*\)", query):
        return set()  # label_values(label): no metric
    found = re.match(r"\s*query_result\s*\((.*)\)\s*$", query)
    return metric_names(found.group(1) if found else query)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Every query of the dashboard -> the metric names it uses."""
    out: dict[str, set[str]] = {}
    for panel in _walk(dashboard.get("panels", [])):
        expr = panel.get("expr")
        if isinstance(expr, str) and expr.strip():
            out[expr] = metric_names(expr)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if isinstance(text, str) and text.strip():
            out[text] = _label_values_metric(text)
    return out


def declared_names(*modules: ModuleType) -> set[str]:
    """The sample names of every metric family the modules declare."""
    names: set[str] = set()
    for module in modules:
        for value in vars(module).values():
            if not isinstance(value, MetricWrapperBase):
                continue
            name, kind = value._name, value._type
            if kind == "counter":
                names |= {f"{name}_total", f"{name}_created"}
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
            elif kind == "summary":
                names |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
            elif kind == "info":
                names.add(f"{name}_info")
            else:
                names.add(name)
    return names


CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    providers:
      sample: {{type: openai_compatible, base_url: "{llm}"}}
"""


def _exported(llm_url: str) -> set[str]:
    """Sample names on a real gateway's `/metrics` after an LLM call, a streamed one and a 404."""
    names: set[str] = set()
    with start_gateway(CONFIG.format(llm=llm_url)) as gw:
        for stream in (False, True):
            body = json.dumps(
                {
                    "model": "sample-model",
                    "stream": stream,
                    "messages": [{"role": "user", "content": "hello"}],
                }
            ).encode()
            request = urllib.request.Request(
                gw.url + "/v1/chat/completions",
                data=body,
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
                resp.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(gw.url + "/nowhere", timeout=10)
        with urllib.request.urlopen(gw.admin_url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
    return names


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_extracting_metric_names() -> None:
    expr = (
        'sum by (route) (rate(crossway_requests_total{route=~"$route",status=~"5.."}'
        "[$__rate_interval])) / clamp_min(sum by (route) (rate(crossway_requests_total"
        "[5m])), 1e-9) * on(route) group_left(x) up offset 5m > bool 0 or vector(1) "
        "and histogram_quantile(0.9, sum by (le) (rate(other_seconds_bucket[1m])))"
    )
    assert metric_names(expr) == {"crossway_requests_total", "up", "other_seconds_bucket"}
    assert _label_values_metric("label_values(gen_ai_client_cost_total{a='b'}, key)") == {
        "gen_ai_client_cost_total"
    }


def test_a_missing_metric_fails_the_check() -> None:
    known = declared_names(metrics)
    dashboard = {"panels": [{"targets": [{"expr": "rate(crossway_no_such_metric_total[5m])"}]}]}
    unknown = {name for names in dashboard_queries(dashboard).values() for name in names - known}
    assert unknown == {"crossway_no_such_metric_total"}


def test_dashboard_shape() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"]
    titles = " ".join(p.get("title", "") for p in _walk(dashboard["panels"])).lower()
    for word in ("model", "key", "tool", "agent", "rate-limit", "budget", "upstream"):
        assert word in titles, f"no panel about {word}"
    ids = [p["id"] for p in _walk(dashboard["panels"]) if "gridPos" in p]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "model", "key", "tool", "agent"} <= variables


def test_every_dashboard_metric_is_exported(sample_openai_process: str) -> None:
    known = _exported(sample_openai_process) | declared_names(metrics, metrics_mcp_a2a)
    known.add(admin_probe.UPSTREAM_UP_METRIC)  # the admin plane's own family
    queries = dashboard_queries(_dashboard())
    assert len(queries) > 20
    unknown = {expr: sorted(names - known) for expr, names in queries.items() if names - known}
    assert not unknown, f"the dashboard uses metrics Crossway does not export: {unknown}"
    used = set().union(*queries.values())
    assert "crossway_requests_total" in used and "gen_ai_client_cost_total" in used
