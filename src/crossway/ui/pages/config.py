"""The console's Config page: the effective config (redacted), the reload status, and the
validation of an edited config (never saved).

Everything comes from the admin API: `GET /config` (redacted config, file path, a rejected
reload), `GET /readyz` (its `config` section), `GET /config/file` (the text to edit, withheld
when the file writes out a secret) and `POST /config/validate`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crossway.config import Config
from crossway.ui.render import render

if TYPE_CHECKING:
    from crossway.ui.console import Console

FORMATS: Final = ("yaml", "json")
MAX_TEXT_BYTES: Final = 1024 * 1024
"""Largest edited config the page sends to the API (the API's own limit)."""


_PLAIN: Final = re.compile(r"[A-Za-z_/.][A-Za-z0-9_ ./:@+-]*")
_RESERVED: Final = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", ""})


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED and not text.endswith(" "):
        return text
    return orjson.dumps(text).decode()  # a JSON string is a YAML double-quoted scalar


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            name = _scalar(str(key))
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{name}:")
                _emit(item, indent + 1, out)
            else:
                out.append(f"{pad}{name}: {_empty(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                inner: list[str] = []
                _emit(item, indent + 1, inner)
                first = inner[0][len(pad) + 2 :]
                out.append(f"{pad}- {first}")
                out.extend(inner[1:])
            else:
                out.append(f"{pad}- {_empty(item)}")
    else:
        out.append(pad + _scalar(value))


def _empty(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def as_yaml(data: Any) -> str:
    """JSON data as block-style YAML, keys in their order (a small emitter: a general YAML
    library takes tens of milliseconds for a config)."""
    out: list[str] = []
    _emit(data, 0, out)
    return "\n".join(out) + "\n"


def _source_lines(text: str, errors: list[dict[str, Any]]) -> dict[int, str]:
    lines = text.splitlines()
    return {
        e["line"]: lines[e["line"] - 1]
        for e in errors
        if isinstance(e.get("line"), int) and 1 <= e["line"] <= len(lines)
    }


def routes(console: Console) -> list[BaseRoute]:
    async def context(cfg: Config, request: Request) -> dict[str, Any]:
        fmt = request.query_params.get("format", "yaml")
        if fmt not in FORMATS:
            fmt = "yaml"
        effective = await console.api.get(cfg, "/config")
        ready = await console.api.get(cfg, "/readyz")
        source = await console.api.get(cfg, "/config/file")
        shown = ""
        if effective.ok and isinstance(effective.body, dict):
            data = effective.body.get("config", {})
            shown = (
                as_yaml(data)
                if fmt == "yaml"
                else orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
            )
        readiness = ready.body.get("config") if isinstance(ready.body, dict) else None
        if not isinstance(readiness, dict):
            readiness = None
        rejected = (effective.body or {}).get("rejected_reload") if effective.ok else None
        if rejected is None and readiness is not None:
            rejected = readiness.get("rejected_reload")
        return {
            "fmt": fmt,
            "effective": effective.body if effective.ok else None,
            "effective_error": None if effective.ok else effective.error,
            "shown": shown,
            "readiness": readiness,
            "rejected": rejected,
            "source": source.body if source.ok else None,
            "source_error": None if source.ok else source.error,
            "result": None,
            "result_error": None,
            "edited": None,
            "lines": {},
        }

    async def page(request: Request) -> Response:
        from crossway.ui.console import config_of

        cfg = config_of(request)
        return render(request, "config.html", "config", **await context(cfg, request))

    async def validate(request: Request) -> Response:
        from crossway.ui.console import config_of

        cfg = config_of(request)
        form = await request.form(max_part_size=MAX_TEXT_BYTES)
        text = str(form.get("text") or "")
        found = await context(cfg, request)
        found["edited"] = text
        if len(text.encode()) > MAX_TEXT_BYTES:
            found["result_error"] = f"the config text is larger than {MAX_TEXT_BYTES} bytes"
            return render(request, "config.html", "config", status=413, **found)
        answer = await console.api.call(cfg, "POST", "/config/validate", content=text.encode())
        if answer.ok and isinstance(answer.body, dict):
            found["result"] = answer.body
            found["lines"] = _source_lines(text, answer.body.get("errors") or [])
        else:
            found["result_error"] = answer.error
        return render(request, "config.html", "config", **found)

    return [
        Route("/ui/config", page, methods=["GET"]),
        Route("/ui/config/validate", validate, methods=["POST"]),
    ]
