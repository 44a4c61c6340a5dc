"""The Overview page: traffic, errors, latency, tokens and cost over a window, per route,
model, tool and agent; upstream health and cooldowns.

    GET /ui/?window=1h|24h|7d

Read through the admin API: `GET /summary` (the request log's aggregates), `GET /stats` (the
metrics: requests in flight, uptime, totals since the start), `GET /readyz` (upstream
reachability, stores) and `GET /models` (LLM deployments' ejections and cooldowns). With the
request log off the page shows the metrics alone and says how to turn the log on. After a page
the other windows' summaries are asked for in the background, so that choosing one finds them
kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crossway.config import Config
from crossway.ui.api import ApiAnswer
from crossway.ui.charts import line_chart
from crossway.ui.console import config_of
from crossway.ui.render import render

if TYPE_CHECKING:
    from crossway.ui.console import Console

log = logging.getLogger("crossway.ui")

WINDOWS: Final = (("1h", "1 hour", 3600), ("24h", "24 hours", 86400), ("7d", "7 days", 604800))
"""The window selector: (value of `window`, label, seconds)."""
DEFAULT_WINDOW: Final = "1h"
DIMENSIONS: Final = (
    ("route", "Routes"),
    ("model", "Models"),
    ("tool", "Tools"),
    ("agent", "Agents"),
)


def duration(seconds: float | None) -> str:
    """`3 d 4 h`, `2 h 5 min`, `42 s`: an uptime for people."""
    if seconds is None:
        return ""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _stamp(fmt: str) -> Callable[[float], str]:
    return lambda x: dt.datetime.fromtimestamp(x, tz=dt.UTC).strftime(fmt)


def _ms_axis(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.2g} ms"


def _usd_axis(value: float) -> str:
    """Short enough for the chart's axis: `$1.5`, `$0.25`, `$2.9e-05`."""
    if value == 0:
        return "$0"
    return f"${value:.2g}" if value >= 0.01 else f"${value:.1e}"


def _series(
    buckets: Sequence[dict[str, Any]], names: Sequence[tuple[str, str]]
) -> list[tuple[str, list[tuple[float, float]]]]:
    """Line series from the buckets' fields (`(label, field)`; buckets without a value skipped)."""
    return [
        (label, [(b["start"], float(b[field])) for b in buckets if b.get(field) is not None])
        for label, field in names
    ]


def charts(summary: dict[str, Any], span: int) -> list[tuple[str, Markup]]:
    """The page's four charts: (caption, SVG)."""
    buckets = summary.get("buckets") or []
    x_format = _stamp("%H:%M") if span <= 86400 else _stamp("%m-%d %H:%M")
    # Latency lines only through buckets that had requests (an empty bucket has no percentile).
    busy = [b for b in buckets if b.get("requests")]
    specs: list[tuple[str, list[tuple[str, str]], Sequence[dict[str, Any]], Any]] = [
        (
            "Requests and errors",
            [("requests", "requests"), ("errors (5xx)", "errors"), ("4xx", "client_errors")],
            buckets,
            None,
        ),
        ("Latency", [("p50", "p50_ms"), ("p95", "p95_ms")], busy, _ms_axis),
        ("Tokens", [("in", "tokens_in"), ("out", "tokens_out")], buckets, None),
        ("Cost", [("cost (USD)", "cost")], buckets, _usd_axis),
    ]
    out = []
    for caption, names, rows, y_format in specs:
        extra: dict[str, Any] = {"y_format": y_format} if y_format else {}
        svg = line_chart(_series(rows, names), title=caption, x_format=x_format, **extra)
        out.append((caption, svg))
    return out


def health_rows(ready: ApiAnswer) -> list[dict[str, Any]]:
    """One row per backend from `/readyz`: its state in words, and each upstream's."""
    backends = (ready.body or {}).get("backends") if isinstance(ready.body, dict) else None
    rows = []
    for name, info in sorted((backends or {}).items()):
        upstreams = []
        for upstream, entry in sorted((info.get("upstreams") or {}).items()):
            upstreams.append({"name": upstream, **_state(entry), **entry})
        rows.append({"name": name, **_state(info), "upstreams": upstreams})
    return rows


def _state(entry: dict[str, Any]) -> dict[str, str]:
    reachable = entry.get("reachable")
    if reachable is True:
        return {"badge": "ok", "state": "reachable"}
    if reachable is False:
        return {"badge": "bad", "state": "unreachable"}
    if entry.get("kind") == "none":
        return {"badge": "warn", "state": "not probed (no fixed address)"}
    return {"badge": "warn", "state": "not probed yet"}


def cooldown_rows(models: ApiAnswer) -> list[dict[str, Any]]:
    """LLM deployments that were ejected (or are in a cooldown now), from `/models`."""
    rows = []
    body = models.body if models.ok and isinstance(models.body, dict) else {}
    for backend in body.get("backends") or []:
        for model in backend.get("models") or []:
            for target in model.get("targets") or []:
                if target.get("ejections") or target.get("cooldown_until"):
                    rows.append(
                        {
                            "backend": backend.get("name"),
                            "model": model.get("name"),
                            "deployment": target.get("deployment"),
                            "ejections": target.get("ejections") or 0,
                            "until": target.get("cooldown_until"),
                        }
                    )
    return rows


def routes(console: Console) -> list[BaseRoute]:
    pending: set[asyncio.Task[None]] = set()

    def prefetch(cfg: Config, others: list[int]) -> None:
        """Ask the API for the other windows in the background, so that choosing one finds
        its aggregates kept (the first 7-day summary after a start scans every entry); one
        round at a time, and none while one runs."""
        if pending:
            return

        async def fetch() -> None:
            for seconds in others:
                try:
                    await console.api.get(cfg, "/summary", start=f"{time.time() - seconds:.3f}")
                except Exception:  # only a warm-up: the page asks again when it needs it
                    log.debug("summary prefetch failed", exc_info=True)
                    return

        task = asyncio.get_running_loop().create_task(fetch())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def page(request: Request) -> Response:
        cfg = config_of(request)
        chosen = request.query_params.get("window", DEFAULT_WINDOW)
        spans = {key: seconds for key, _, seconds in WINDOWS}
        if chosen not in spans:
            chosen = DEFAULT_WINDOW
        span = spans[chosen]
        summary, stats, ready, models = await asyncio.gather(
            console.api.get(cfg, "/summary", start=f"{time.time() - span:.3f}"),
            console.api.get(cfg, "/stats"),
            console.api.get(cfg, "/readyz"),
            console.api.get(cfg, "/models"),
        )
        log_off = summary.status == 409
        data = summary.body if summary.ok and isinstance(summary.body, dict) else None
        if data is not None:
            prefetch(cfg, [s for key, s in spans.items() if key != chosen])
        stats_body = stats.body if stats.ok and isinstance(stats.body, dict) else {}
        ready_body = ready.body if isinstance(ready.body, dict) else {}
        return render(
            request,
            "overview.html",
            "overview",
            windows=WINDOWS,
            window=chosen,
            window_label=next(label for key, label, _ in WINDOWS if key == chosen),
            summary=data,
            log_off=log_off,
            log_off_message=summary.error if log_off else "",
            summary_error=None if summary.ok or log_off else summary.error,
            charts=charts(data, span) if data else [],
            dimensions=DIMENSIONS,
            stats=stats_body,
            stats_error=None if stats.ok else stats.error,
            uptime=duration(stats_body.get("uptime_seconds")),
            tokens_since_start=sum(
                sum((m.get("tokens") or {}).values())
                for m in (stats_body.get("llm") or {}).get("models") or []
            ),
            ready=ready_body,
            ready_error=None if isinstance(ready.body, dict) else ready.error,
            health=health_rows(ready),
            stores=sorted((ready_body.get("stores") or {}).items()),
            cooldowns=cooldown_rows(models),
            cooldown_notes=(models.body or {}).get("notes", []) if models.ok else [],
        )

    return [Route("/ui/", page, methods=["GET"])]
