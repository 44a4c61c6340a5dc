"""The console's MCP page: servers, tools with their pins, a changed tool's diff (approve or keep
blocked), and a playground that lists and calls tools through the gateway.

    GET  /ui/mcp                                        servers, tools and pins, the playground
    GET  /ui/mcp/pins/{backend}/{server}/{tool}         one tool: the diff pinned -> current
    POST /ui/mcp/pins/{backend}/{server}/{tool}/approve approve the definition shown (its sha)
    POST /ui/mcp/pins/{backend}/{server}/{tool}/keep    keep it blocked (changes nothing)
    POST /ui/mcp/playground/list | /call                tools/list or tools/call via the gateway

Reads and changes go through the admin API (`GET /mcp/servers`, `GET /pins`,
`GET|POST /pins/...`). The playground is a data-plane client (the mcp SDK's, from the admin
process): it sends only the key or token typed into its form, so it can do nothing the caller
could not do with that credential.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from crossway.ui.gateway import data_plane_url, entries
from crossway.ui.render import ENV, render

if TYPE_CHECKING:
    from crossway.ui.console import Console

PLAYGROUND_TIMEOUT_SECONDS: Final = 20.0
"""Longest a playground list or call may take (connect, initialize, answer)."""
MAX_ARGUMENTS_CHARS: Final = 64 * 1024
"""Largest JSON arguments the playground sends."""
MAX_RESULT_CHARS: Final = 64 * 1024
"""A longer tool result is cut (with a note) before it is shown."""

STATUS_BADGES: Final = {
    "blocked": ("bad", "blocked"),
    "changed": ("warn", "changed"),
    "flagged": ("warn", "flagged"),
    "new": ("warn", "new"),
    "pinned": ("ok", "pinned"),
}


def pin_status(pin: dict[str, Any]) -> str:
    """blocked, changed (served, flagged as changed), flagged (scan findings), new (seen, not
    pinned) or pinned."""
    if pin.get("status") == "blocked":
        return "blocked"
    if pin.get("changed"):
        return "changed"
    if pin.get("status") == "flagged":
        return "flagged"
    if not pin.get("pinned_sha256"):
        return "new"
    return "pinned"


def pin_href(pin: dict[str, Any]) -> str:
    parts = (pin["backend"], pin["server"], pin["tool"])
    return "/ui/mcp/pins/" + "/".join(quote(str(p), safe="") for p in parts)


def _lines(definition: dict[str, Any] | None, key: str) -> list[str]:
    if definition is None:
        return []
    value = definition.get(key)
    if key == "description":
        return str(value or "").splitlines() or [""]
    return json.dumps(value, indent=2, sort_keys=True).splitlines()


def definition_diff(
    pinned: dict[str, Any] | None, current: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Per field (description, input schema): lines as (kind, text), kind `add`, `del` or
    `same`; `changed` says whether the field differs."""
    out: list[dict[str, Any]] = []
    for key, label in (("description", "Description"), ("inputSchema", "Input schema")):
        old, new = _lines(pinned, key), _lines(current, key)
        rows: list[tuple[str, str]] = []
        for line in difflib.ndiff(old, new):
            tag, text = line[:2], line[2:]
            if tag == "+ ":
                rows.append(("add", text))
            elif tag == "- ":
                rows.append(("del", text))
            elif tag == "  ":
                rows.append(("same", text))
        out.append({"label": label, "changed": old != new, "rows": rows})
    return out


def routes(console: Console) -> list[BaseRoute]:
    from crossway.ui.console import config_of

    async def overview(request: Request, playground: dict[str, Any] | None = None) -> Response:
        cfg = config_of(request)
        servers, pins = await asyncio.gather(
            console.api.get(cfg, "/mcp/servers"), console.api.get(cfg, "/pins")
        )
        errors = [a.error for a in (servers, pins) if not a.ok]
        pin_rows = []
        if pins.ok:
            for pin in pins.body["pins"]:
                status = pin_status(pin)
                pin_rows.append({**pin, "state": status, "href": pin_href(pin)})
        return render(
            request,
            "mcp.html",
            "mcp",
            errors=errors,
            backends=servers.body["backends"] if servers.ok else [],
            notes=(servers.body["notes"] if servers.ok else [])
            + (pins.body["notes"] if pins.ok else []),
            pins=pin_rows,
            badges=STATUS_BADGES,
            gateway_routes=_mcp_routes(cfg),
            playground=playground,
        )

    async def page(request: Request) -> Response:
        return await overview(request)

    async def pin_detail(request: Request) -> Response:
        cfg = config_of(request)
        backend, server, tool = _target(request)
        answer = await console.api.get(
            cfg, "/pins/" + "/".join(quote(p, safe="") for p in (backend, server, tool))
        )
        if not answer.ok:
            return render(
                request,
                "mcp_pin.html",
                "mcp",
                status=answer.status,
                error=answer.error,
                pin=None,
                target=(backend, server, tool),
                done=None,
            )
        pin = answer.body
        pin["state"] = pin_status(pin)
        return render(
            request,
            "mcp_pin.html",
            "mcp",
            error=None,
            pin=pin,
            target=(backend, server, tool),
            diff=definition_diff(pin.get("pinned_definition"), pin.get("current_definition")),
            current_json=json.dumps(
                pin.get("current_definition"), indent=2, sort_keys=True, ensure_ascii=False
            ),
            badges=STATUS_BADGES,
            href=pin_href(pin),
            done=request.query_params.get("done"),
        )

    async def approve(request: Request) -> Response:
        cfg = config_of(request)
        backend, server, tool = _target(request)
        form = await request.form()
        sha = str(form.get("sha256") or "")
        path = "/pins/" + "/".join(quote(p, safe="") for p in (backend, server, tool))
        answer = await console.api.call(
            cfg, "POST", path + "/approve", json={"sha256": sha} if sha else {}
        )
        if not answer.ok:
            return render(
                request,
                "mcp_pin.html",
                "mcp",
                status=answer.status,
                error=f"Not approved: {answer.error}",
                pin=None,
                target=(backend, server, tool),
                done=None,
            )
        return RedirectResponse(
            "/ui" + path.replace("/pins/", "/mcp/pins/", 1) + "?done=approved", 303
        )

    async def keep(request: Request) -> Response:
        backend, server, tool = _target(request)
        path = "/ui/mcp/pins/" + "/".join(quote(p, safe="") for p in (backend, server, tool))
        return RedirectResponse(path + "?done=kept", 303)

    async def playground(request: Request, action: str) -> Response:
        cfg = config_of(request)
        form = await request.form()
        options = {e.route: e for e in _mcp_routes(cfg)}
        chosen = options.get(str(form.get("route") or ""))
        result: dict[str, Any] = {
            "action": action,
            "route": chosen.route if chosen else "",
            "tool": str(form.get("tool") or ""),
            "arguments": str(form.get("arguments") or "{}"),
            "error": None,
            "url": "",
            "tools": [],
            "is_error": False,
            "output": "",
            "cut": False,
        }
        if chosen is None:
            result["error"] = "Choose one of the gateway's MCP routes."
        else:
            url = data_plane_url(cfg) + chosen.prefix
            result["url"] = url
            token = str(form.get("token") or "").strip()
            result.update(await _run_playground(url, token, action, result))
        if request.headers.get("hx-request"):
            body = ENV.get_template("mcp_playground_result.html").render(pg=result)
            return Response(body, media_type="text/html", headers={"cache-control": "no-store"})
        return await overview(request, playground=result)

    async def playground_list(request: Request) -> Response:
        return await playground(request, "list")

    async def playground_call(request: Request) -> Response:
        return await playground(request, "call")

    target = "/ui/mcp/pins/{backend}/{server}/{tool}"
    return [
        Route("/ui/mcp", page, methods=["GET"]),
        Route(target, pin_detail, methods=["GET"]),
        Route(target + "/approve", approve, methods=["POST"]),
        Route(target + "/keep", keep, methods=["POST"]),
        Route("/ui/mcp/playground/list", playground_list, methods=["POST"]),
        Route("/ui/mcp/playground/call", playground_call, methods=["POST"]),
    ]


def _mcp_routes(cfg: Any) -> list[Any]:
    return entries(cfg, "mcp")


def _target(request: Request) -> tuple[str, str, str]:
    params = request.path_params
    return str(params["backend"]), str(params["server"]), str(params["tool"])


async def _run_playground(url: str, token: str, action: str, pg: dict[str, Any]) -> dict[str, Any]:
    """List the tools at `url`, or call `pg["tool"]` with `pg["arguments"]`, as the mcp SDK's
    client; errors become `{"error": message}`."""
    arguments: dict[str, Any] = {}
    if action == "call":
        if not pg["tool"]:
            return {"error": "Name the tool to call (list the tools first)."}
        if len(pg["arguments"]) > MAX_ARGUMENTS_CHARS:
            return {"error": f"The arguments are longer than {MAX_ARGUMENTS_CHARS} characters."}
        try:
            parsed = json.loads(pg["arguments"] or "{}")
        except json.JSONDecodeError as exc:
            return {"error": f"The arguments are not JSON: {exc.msg} (line {exc.lineno})."}
        if not isinstance(parsed, dict):
            return {"error": 'The arguments must be a JSON object, like {"text": "hi"}.'}
        arguments = parsed
    try:
        async with asyncio.timeout(PLAYGROUND_TIMEOUT_SECONDS):
            return await _mcp_session(url, token, action, pg["tool"], arguments)
    except TimeoutError:
        return {"error": f"The gateway did not answer within {PLAYGROUND_TIMEOUT_SECONDS:g} s."}
    except Exception as exc:  # shown on the page, never a traceback
        return {"error": _describe(exc)}


async def _mcp_session(
    url: str, token: str, action: str, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    from mcp import Client

    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = create_mcp_http_client(headers=headers)
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            if action == "list":
                listed = await client.list_tools()
                return {
                    "tools": [
                        {
                            "name": t.name,
                            "description": t.description or "",
                            "schema": json.dumps(t.input_schema, indent=2, sort_keys=True),
                            "example": json.dumps(_example(t.input_schema)),
                        }
                        for t in listed.tools
                    ]
                }
            result = await client.call_tool(tool, arguments)
            texts = []
            for item in result.content:
                text = getattr(item, "text", None)
                texts.append(text if isinstance(text, str) else item.model_dump_json(indent=2))
            shown = "\n".join(texts)
            if result.structured_content is not None and not shown:
                shown = json.dumps(result.structured_content, indent=2)
            cut = len(shown) > MAX_RESULT_CHARS
            return {
                "is_error": bool(result.is_error),
                "output": shown[:MAX_RESULT_CHARS],
                "cut": cut,
            }


def _example(schema: Any) -> dict[str, Any]:
    """Placeholder arguments from a tool's input schema (a string, 1, true, [] or {} per
    property)."""
    samples = {"string": "hello", "integer": 1, "number": 1, "boolean": True, "array": []}
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return {}
    out: dict[str, Any] = {}
    for name, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        out[name] = samples.get(kind, {}) if isinstance(kind, str) else "hello"
    return out


def _describe(exc: BaseException) -> str:
    """A one-line message for a failed playground session (exception groups unwrapped)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip() or type(exc).__name__
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        hint = " (a key or token may be needed: type it above)" if status in (401, 403) else ""
        return f"The gateway answered HTTP {status}{hint}."
    if isinstance(exc, httpx.ConnectError):
        return f"Could not connect to the gateway: {text}"
    return text
