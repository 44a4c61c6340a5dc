"""The Keys page: virtual keys, teams and users, their limits and spend against budget.

    GET  /ui/keys                 keys (revoked too), teams, users, spend charts, the create form
    POST /ui/keys                 create a key: the secret is shown once, on the answer page
    POST /ui/keys/budgets         store a team's or a user's budget and limits (PUT /teams/{id})
    GET  /ui/keys/{id}            one key: budget, spend over time and by model, recent
                                  requests, the edit form
    POST /ui/keys/{id}            change its scopes and limits (PATCH /keys/{id})
    GET  /ui/keys/{id}/rotate     confirm, then POST: a new secret, shown once
    GET  /ui/keys/{id}/revoke     confirm, then POST: revoked for good

Everything is read and changed through the admin API (`/keys`, `/teams`, `/users`, `/spend`,
`/budgets`, `/logs`). A secret is only ever in the body of the POST's answer (never in a URL,
never cached: every page is `no-store`).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from crossway.ui import charts
from crossway.ui.api import ApiAnswer
from crossway.ui.console import config_of
from crossway.ui.render import ENV, render

if TYPE_CHECKING:
    from crossway.ui.console import Console

PERIODS: Final = ("total", "daily", "weekly", "monthly")
"""Budget periods the forms offer (the API's `budget_period`)."""
SCOPES: Final = ("models", "mcp_tools", "agents")
HOURS_CHARTED: Final = 24
"""Hours of spend the charts show."""
RECENT_REQUESTS: Final = 10
"""Requests a key's page lists (its newest, from the request log)."""
WARN_SHARE: Final = 0.8
"""Share of a budget from which it is shown as nearly used."""


class FormError(Exception):
    """A form field that cannot be sent to the API as it is (message names the field)."""


def _id_path(key_id: str) -> str:
    return "/keys/" + urllib.parse.quote(key_id, safe="")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(form: FormData, name: str, kind: type[int] | type[float]) -> int | float | None:
    raw = _text(form, name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise FormError(f"{name}: expected {what}, got {raw!r}") from None


def _metadata(form: FormData) -> dict[str, str]:
    """`key=value` lines as a map."""
    out: dict[str, str] = {}
    for line in _text(form, "metadata").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise FormError(f"metadata: expected key=value on each line, got {line.strip()!r}")
        out[key.strip()] = value.strip()
    return out


def key_fields(form: FormData, *, creating: bool) -> dict[str, Any]:
    """The JSON body of `POST /keys` (`creating`) or `PATCH /keys/{id}` from the key form.

    Creating, an empty field is left out (the API's default); editing, it clears the value
    (null), except the expiry, which changes only when a new one is given or "no expiry" is
    ticked."""
    body: dict[str, Any] = {}
    for name in ("name", "user", "team", *SCOPES):
        value = _text(form, name)
        if value or not creating:
            body[name] = value or None
    for name, kind in (("max_budget", float), ("rpm", int), ("tpm", int)):
        number = _number(form, name, kind)
        if number is not None or not creating:
            body[name] = number
    period = _text(form, "budget_period") or "total"
    if period not in PERIODS:
        raise FormError(f"budget_period: one of {', '.join(PERIODS)}")
    body["budget_period"] = period
    expires_in = _text(form, "expires_in")
    if not creating and form.get("no_expiry"):
        body["expires_at"] = None
    elif expires_in:
        body["expires_in"] = expires_in
    metadata = _metadata(form)
    if metadata or not creating:
        body["metadata"] = metadata or None
    return body


def principal_fields(form: FormData) -> tuple[str, str, dict[str, Any]]:
    """`(kind, id, body)` of `PUT /teams/{id}` or `PUT /users/{id}` from the budget form."""
    kind = _text(form, "kind")
    if kind not in ("team", "user"):
        raise FormError("kind: team or user")
    principal_id = _text(form, "id")
    if not principal_id:
        raise FormError(f"id: which {kind}?")
    body: dict[str, Any] = {}
    for name, number_kind in (("max_budget", float), ("rpm", int), ("tpm", int)):
        number = _number(form, name, number_kind)
        if number is not None:
            body[name] = number
    period = _text(form, "budget_period") or "total"
    if period not in PERIODS:
        raise FormError(f"budget_period: one of {', '.join(PERIODS)}")
    body["budget_period"] = period
    return kind, principal_id, body


def form_values(form: FormData | None) -> dict[str, str]:
    """What the user typed, to show the form again after an error."""
    if form is None:
        return {}
    return {name: value for name, value in form.items() if isinstance(value, str)}


def key_values(key: Mapping[str, Any]) -> dict[str, str]:
    """A stored key as the edit form's values."""

    def show(value: Any) -> str:
        return "" if value is None else str(value)

    return {
        "name": show(key.get("name")),
        "user": show(key.get("user")),
        "team": show(key.get("team")),
        **{scope: ", ".join(key.get(scope) or []) for scope in SCOPES},
        "max_budget": f"{key['max_budget']:g}" if key.get("max_budget") is not None else "",
        "budget_period": show(key.get("budget_period") or "total"),
        "rpm": show(key.get("rpm")),
        "tpm": show(key.get("tpm")),
        "metadata": "\n".join(f"{k}={v}" for k, v in (key.get("metadata") or {}).items()),
    }


def budget_use(budget: Mapping[str, Any] | None) -> dict[str, Any]:
    """How much of a budget this period used: `share` (0..) and `level` (ok, warn, bad)."""
    if not budget or budget.get("max_budget") is None:
        return {"share": None, "level": "none"}
    limit = float(budget["max_budget"])
    spent = float(budget.get("spent") or 0.0)
    share = spent / limit if limit > 0 else (1.0 if spent > 0 else 0.0)
    level = "bad" if share >= 1.0 else "warn" if share >= WARN_SHARE else "ok"
    return {"share": share, "level": level}


def _percent(value: float) -> str:
    return f"{value:.0f}%"


def _money(value: float) -> str:
    return str(ENV.filters["money"](value))


def money_unit(series: list[tuple[str, list[tuple[float, float]]]]) -> tuple[float, str]:
    """A unit that keeps a spend axis' labels short: (factor to multiply USD by, its name)."""
    top = max((value for _, points in series for _, value in points), default=0.0)
    for factor, unit in ((1.0, "USD"), (1e3, "thousandths of a USD"), (1e6, "millionths of a USD")):
        if top * factor >= 1.0:
            return factor, unit
    return 1e6, "millionths of a USD"


def spend_line(series: list[tuple[str, list[tuple[float, float]]]], title: str) -> Markup:
    """A line chart of USD series, in the unit `money_unit` picks (named in its title)."""
    factor, unit = money_unit(series)
    scaled = [(name, [(at, value * factor) for at, value in points]) for name, points in series]
    return charts.line_chart(scaled, title=f"{title} ({unit})")


def spend_charts(rows: list[dict[str, Any]], title: str) -> list[tuple[str, Markup]]:
    """Bar charts of the current period: share of budget (against a 100 % line), and USD."""
    used = [
        (str(row["label"]), 100.0 * float(row["use"]["share"]))
        for row in rows
        if row["use"]["share"] is not None
    ]
    spent = [
        (str(row["label"]), float(row["budget"]["spent"])) for row in rows if row.get("budget")
    ]
    out = []
    if used:
        name = f"{title}: budget used this period"
        out.append((name, charts.bar_chart(used, title=name, value_format=_percent, limit=100.0)))
    if spent:
        name = f"{title}: spend this period"
        out.append((name, charts.bar_chart(spent, title=name, value_format=_money)))
    return out


def hourly_series(
    rows: list[dict[str, Any]], group: str | None, start: float, interval: float
) -> list[tuple[str, list[tuple[float, float]]]]:
    """`GET /spend?interval=` rows as line chart series (one per `group` value, or one total),
    every bucket present (an hour without spend is a zero)."""
    buckets = [start + i * interval for i in range(HOURS_CHARTED)]
    series: dict[str, dict[float, float]] = {}
    for row in rows:
        name = str(row.get(group) or "(none)") if group else "spend"
        values = series.setdefault(name, {})
        values[row["start"]] = values.get(row["start"], 0.0) + float(row.get("cost") or 0.0)
    if not series:
        return []
    return [
        (name, [(at, values.get(at, 0.0)) for at in buckets]) for name, values in series.items()
    ]


async def _spend_over_time(
    console: Console, request: Request, group: str, **filters: str
) -> tuple[ApiAnswer, float]:
    cfg = config_of(request)
    end = float(int(time.time() // 3600 + 1) * 3600)  # the end of this hour
    start = end - HOURS_CHARTED * 3600.0
    answer = await console.api.get(
        cfg, "/spend", group_by=group, interval="1h", start=start, end=end, **filters
    )
    return answer, start


def principal_rows(answer: ApiAnswer, spend: ApiAnswer, kind: str) -> list[dict[str, Any]]:
    """Users or teams: those with a record (stored or configured), then those only keys name
    (found in the spend), each with its all-time spend."""
    totals = {row.get(kind): row for row in (spend.body.get("rows", []) if spend.ok else [])}
    rows = []
    for row in answer.body.get(kind + "s", []) if answer.ok else []:
        rows.append(
            {
                **row,
                "label": row["id"],
                "use": budget_use(row.get("budget")),
                "all_time": totals.pop(row["id"], {}),
            }
        )
    for name, total in sorted(totals.items(), key=lambda item: str(item[0])):
        if name:
            rows.append(
                {
                    "id": name,
                    "label": name,
                    "source": None,
                    "budget": None,
                    "use": budget_use(None),
                    "all_time": total,
                }
            )
    return rows


def _errors(*answers: tuple[str, ApiAnswer]) -> list[str]:
    return [f"{what}: {answer.error}" for what, answer in answers if not answer.ok]


def routes(console: Console) -> list[BaseRoute]:
    async def list_page(
        request: Request,
        *,
        form: FormData | None = None,
        error: str | None = None,
        status: int = 200,
        principal_form: FormData | None = None,
        principal_error: str | None = None,
    ) -> Response:
        cfg = config_of(request)
        api = console.api
        keys, teams, users, totals, by_team, by_user = await asyncio.gather(
            api.get(cfg, "/keys", include_revoked="true", with_spend="true"),
            api.get(cfg, "/teams", with_spend="true"),
            api.get(cfg, "/users", with_spend="true"),
            api.get(cfg, "/spend", group_by="key"),
            api.get(cfg, "/spend", group_by="team"),
            api.get(cfg, "/spend", group_by="user"),
        )
        hourly, start = await _spend_over_time(console, request, "team")
        problems = _errors(
            ("keys", keys),
            ("teams", teams),
            ("users", users),
            ("spend", totals),
            ("spend", hourly),
        )
        all_time = {
            row.get("key"): row for row in (totals.body.get("rows", []) if totals.ok else [])
        }
        key_rows = []
        for key in keys.body.get("keys", []) if keys.ok else []:
            key_rows.append(
                {
                    **key,
                    "label": key.get("name") or key["id"],
                    "use": budget_use(key.get("budget")),
                    "all_time": all_time.get(key["id"], {}),
                }
            )
        team_rows = principal_rows(teams, by_team, "team")
        user_rows = principal_rows(users, by_user, "user")
        active = [row for row in key_rows if row["status"] == "active"]
        series = hourly_series(
            hourly.body.get("rows", []) if hourly.ok else [], "team", start, 3600
        )
        return render(
            request,
            "keys.html",
            "keys",
            status=status,
            keys=key_rows,
            teams=team_rows,
            users=user_rows,
            active=len(active),
            period_spend=sum(
                float(row["budget"]["spent"]) for row in key_rows if row.get("budget")
            ),
            total_spend=totals.body.get("total_cost", 0.0) if totals.ok else 0.0,
            key_charts=spend_charts(active, "Keys"),
            team_charts=spend_charts(team_rows, "Teams"),
            user_charts=spend_charts(user_rows, "Users"),
            over_time=spend_line(series, "Spend per hour by team, last 24 hours"),
            over_time_unit=money_unit(series)[1],
            over_time_rows=series,
            problems=problems,
            error=error,
            values=form_values(form),
            periods=PERIODS,
            principal_error=principal_error,
            principal_values=form_values(principal_form),
            saved=request.query_params.get("saved"),
        )

    async def show(request: Request) -> Response:
        return await list_page(request)

    async def set_principal(request: Request) -> Response:
        cfg = config_of(request)
        form = await request.form()
        try:
            kind, principal_id, body = principal_fields(form)
        except FormError as exc:
            return await list_page(
                request, principal_form=form, principal_error=str(exc), status=400
            )
        path = f"/{kind}s/" + urllib.parse.quote(principal_id, safe="")
        answer = await console.api.call(cfg, "PUT", path, json=body)
        if not answer.ok:
            return await list_page(
                request, principal_form=form, principal_error=answer.error, status=answer.status
            )
        saved = urllib.parse.urlencode({"saved": f"{kind} {principal_id}"})
        return RedirectResponse(f"/ui/keys?{saved}#budgets", 303)

    async def create(request: Request) -> Response:
        cfg = config_of(request)
        form = await request.form()
        try:
            body = key_fields(form, creating=True)
        except FormError as exc:
            return await list_page(request, form=form, error=str(exc), status=400)
        answer = await console.api.call(cfg, "POST", "/keys", json=body)
        if not answer.ok:
            return await list_page(request, form=form, error=answer.error, status=answer.status)
        return render(request, "keys_secret.html", "keys", key=answer.body, action="created")

    async def detail_page(
        request: Request,
        *,
        form: FormData | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        cfg = config_of(request)
        key_id = str(request.path_params["key_id"])
        answer = await console.api.get(cfg, _id_path(key_id))
        if not answer.ok:
            return render(
                request,
                "keys_missing.html",
                "keys",
                status=answer.status,
                key_id=key_id,
                error=answer.error,
            )
        key = answer.body
        log_name = key.get("name") or key["id"]
        request_log = cfg.telemetry.request_log
        log_on = request_log is not None and request_log.enabled
        budget, by_model, (hourly, start), recent = await asyncio.gather(
            console.api.get(cfg, "/budgets/key/" + urllib.parse.quote(key_id, safe="")),
            console.api.get(cfg, "/spend", group_by="model", key=key_id),
            _spend_over_time(console, request, "model", key=key_id),
            console.api.get(cfg, "/logs", key=log_name, limit=RECENT_REQUESTS),
        )
        problems = _errors(("budget", budget), ("spend", by_model), ("spend", hourly))
        if log_on:
            problems += _errors(("request log", recent))
        budget_body = budget.body if budget.ok else None
        use = budget_use(budget_body)
        series = hourly_series(
            hourly.body.get("rows", []) if hourly.ok else [], "model", start, 3600
        )
        budget_chart = None
        if budget_body is not None:
            title = f"Spend this period ({budget_body['period']})"
            budget_chart = charts.bar_chart(
                [("spent", float(budget_body["spent"]))],
                title=title,
                value_format=_money,
                limit=budget_body.get("max_budget"),
            )
        model_rows = by_model.body.get("rows", []) if by_model.ok else []
        values = form_values(form) if form is not None else key_values(key)
        return render(
            request,
            "keys_detail.html",
            "keys",
            status=status,
            key=key,
            budget=budget_body,
            use=use,
            budget_chart=budget_chart,
            model_chart=charts.bar_chart(
                [(str(row.get("model") or "(none)"), float(row["cost"])) for row in model_rows],
                title="Spend by model, all time",
                value_format=_money,
            ),
            model_rows=model_rows,
            over_time=spend_line(series, "Spend per hour by model, last 24 hours"),
            over_time_unit=money_unit(series)[1],
            over_time_rows=series,
            recent=recent.body.get("logs", []) if recent.ok else [],
            log_on=log_on,
            log_name=log_name,
            problems=problems,
            error=error,
            saved=request.query_params.get("done"),
            values=values,
            periods=PERIODS,
        )

    async def detail(request: Request) -> Response:
        return await detail_page(request)

    async def update(request: Request) -> Response:
        cfg = config_of(request)
        key_id = str(request.path_params["key_id"])
        form = await request.form()
        try:
            body = key_fields(form, creating=False)
        except FormError as exc:
            return await detail_page(request, form=form, error=str(exc), status=400)
        answer = await console.api.call(cfg, "PATCH", _id_path(key_id), json=body)
        if not answer.ok:
            return await detail_page(request, form=form, error=answer.error, status=answer.status)
        return RedirectResponse(f"/ui/keys/{urllib.parse.quote(key_id)}?done=saved", 303)

    def confirm(action: str) -> Any:
        async def ask(request: Request) -> Response:
            cfg = config_of(request)
            key_id = str(request.path_params["key_id"])
            answer = await console.api.get(cfg, _id_path(key_id))
            if not answer.ok:
                return render(
                    request,
                    "keys_missing.html",
                    "keys",
                    status=answer.status,
                    key_id=key_id,
                    error=answer.error,
                )
            return render(request, "keys_confirm.html", "keys", key=answer.body, action=action)

        return ask

    async def rotate(request: Request) -> Response:
        cfg = config_of(request)
        key_id = str(request.path_params["key_id"])
        answer = await console.api.call(cfg, "POST", _id_path(key_id) + "/rotate")
        if not answer.ok:
            return await detail_page(request, error=answer.error, status=answer.status)
        return render(request, "keys_secret.html", "keys", key=answer.body, action="rotated")

    async def revoke(request: Request) -> Response:
        cfg = config_of(request)
        key_id = str(request.path_params["key_id"])
        answer = await console.api.call(cfg, "POST", _id_path(key_id) + "/revoke")
        if not answer.ok:
            return await detail_page(request, error=answer.error, status=answer.status)
        return RedirectResponse(f"/ui/keys/{urllib.parse.quote(key_id)}?done=revoked", 303)

    return [
        Route("/ui/keys", show, methods=["GET"]),
        Route("/ui/keys", create, methods=["POST"]),
        Route("/ui/keys/budgets", set_principal, methods=["POST"]),
        Route("/ui/keys/{key_id}", detail, methods=["GET"]),
        Route("/ui/keys/{key_id}", update, methods=["POST"]),
        Route("/ui/keys/{key_id}/rotate", confirm("rotate"), methods=["GET"]),
        Route("/ui/keys/{key_id}/rotate", rotate, methods=["POST"]),
        Route("/ui/keys/{key_id}/revoke", confirm("revoke"), methods=["GET"]),
        Route("/ui/keys/{key_id}/revoke", revoke, methods=["POST"]),
    ]
