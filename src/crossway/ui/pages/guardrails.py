"""The Guardrails page: recent guard decisions and the effective policies of every route.

    GET /ui/guardrails?window=1h|24h|7d

Read through the admin API: `GET /summary/guards` (decisions in the request log by guard,
detector, action and direction, the newest requests that had some, and the
`crossway_guard_decisions_total` counters) and `GET /config` (the redacted config: each
route's listener, backend and route policies, in the order they run). The page shows names and
counts only: the store keeps no matched text, and the page never asks for an entry's contents.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crossway.ui.charts import bar_chart
from crossway.ui.console import config_of
from crossway.ui.pages.overview import DEFAULT_WINDOW, WINDOWS
from crossway.ui.render import render

if TYPE_CHECKING:
    from crossway.ui.console import Console

GUARD_TYPE: Final = "guardrails"
SETTING_CHARS: Final = 160
"""The longest a policy setting is shown (the rest is in the Config page)."""
SKIPPED_KEYS: Final = ("type", "name")


def _compact(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        text = ", ".join(str(v) for v in value)
    else:
        text = orjson.dumps(value).decode()
    return text if len(text) <= SETTING_CHARS else text[: SETTING_CHARS - 1] + "…"


def settings(policy: dict[str, Any]) -> list[str]:
    """A policy's key settings as `key: value` lines (from the redacted config: secrets are
    already `**********`); a guard's detectors one line each."""
    lines = []
    for key, value in policy.items():
        if key in SKIPPED_KEYS or value in (None, [], {}, ""):
            continue
        if key == "detectors" and isinstance(value, list):
            for detector in value:
                if isinstance(detector, dict):
                    parts = [str(detector.get("type", "?"))]
                    rest = {
                        k: v for k, v in detector.items() if k != "type" and v not in (None, [], {})
                    }
                    parts += [f"{k}: {_compact(v)}" for k, v in rest.items()]
                    lines.append("detector " + "; ".join(parts))
            continue
        lines.append(f"{key}: {_compact(value)}")
    return lines


def effective_policies(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Per route: the listener's, the backend's and the route's policies, in the order they
    run, with their type, name, key settings and whether each is a guard."""
    listener = (config.get("listen") or {}).get("policies") or []
    backends = config.get("backends") or {}
    out = []
    for route in config.get("routes") or []:
        backend = route.get("backend")
        layers = (
            ("listener", listener),
            (f"backend {backend}", (backends.get(backend) or {}).get("policies") or []),
            ("route", route.get("policies") or []),
        )
        policies: list[dict[str, Any]] = []
        for origin, items in layers:
            for policy in items:
                if not isinstance(policy, dict):
                    continue
                policies.append(
                    {
                        "order": len(policies) + 1,
                        "origin": origin,
                        "type": policy.get("type", "?"),
                        "name": policy.get("name") or "",
                        "guard": policy.get("type") == GUARD_TYPE,
                        "settings": settings(policy),
                    }
                )
        out.append({"name": route.get("name"), "backend": backend, "policies": policies})
    return out


def by_guard_action(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings and requests per (guard, action), most findings first."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for d in decisions:
        entry = sums[(str(d.get("guard")), str(d.get("action")))]
        entry[0] += int(d.get("findings") or 0)
        entry[1] += int(d.get("requests") or 0)
    return [
        {"guard": g, "action": a, "findings": f, "requests": r}
        for (g, a), (f, r) in sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]


def routes(console: Console) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        cfg = config_of(request)
        chosen = request.query_params.get("window", DEFAULT_WINDOW)
        spans = {key: seconds for key, _, seconds in WINDOWS}
        if chosen not in spans:
            chosen = DEFAULT_WINDOW
        guards, config = await asyncio.gather(
            console.api.get(cfg, "/summary/guards", start=f"{time.time() - spans[chosen]:.3f}"),
            console.api.get(cfg, "/config"),
        )
        body = guards.body if guards.ok and isinstance(guards.body, dict) else None
        grouped = by_guard_action(body["decisions"]) if body else []
        chart = bar_chart(
            [(f"{g['guard']} {g['action']}", g["findings"]) for g in grouped],
            title="Guard findings by guard and action",
        )
        redacted = (
            config.body.get("config") if config.ok and isinstance(config.body, dict) else None
        )
        return render(
            request,
            "guardrails.html",
            "guardrails",
            windows=WINDOWS,
            window=chosen,
            window_label=next(label for key, label, _ in WINDOWS if key == chosen),
            guards=body,
            guards_error=None if guards.ok else guards.error,
            log_off=guards.status == 409,
            grouped=grouped,
            chart=chart,
            routes=effective_policies(redacted) if redacted else [],
            config_error=None if config.ok else config.error,
        )

    return [Route("/ui/guardrails", page, methods=["GET"])]
