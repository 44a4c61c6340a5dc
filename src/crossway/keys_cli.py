"""`crossway keys|teams|users|spend`: manage virtual keys, team and user budgets, read spend.

    crossway keys create [--name N] [--user U] [--team T] [--models a,b] [--mcp-tools x,y]
        [--agents p,q] [--max-budget USD] [--budget-period daily|weekly|monthly|total]
        [--rpm N] [--tpm N] [--expires 30d] [--metadata k=v ...]
    crossway keys list [--user U] [--team T] [--all]
    crossway keys show|rotate|revoke ID
    crossway keys update ID [the flags of create] [--clear-budget] [--clear-rpm] ...
    crossway teams|users set ID [--max-budget USD] [--budget-period P] [--rpm N] [--tpm N]
    crossway teams|users list | show ID | delete ID
    crossway spend [--group-by key,model] [--since 24h | --start T --end T] [--key ID] ...

Each talks to a running gateway's admin API (`--admin URL`, default the local admin port;
`--admin-token` or `$CROSSWAY_ADMIN_TOKEN` for its Bearer token) or, with `--config FILE`,
serves the same admin routes in this process on the config's accounting store (no gateway
needed). `create` and `rotate` print the new key alone on the last line of stdout: it is shown
once and cannot be retrieved later. Errors are one line on stderr and exit 1; bad flags exit 2
before anything is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import MutableMapping, Sequence
from typing import Any, Final

KEY_COMMANDS: Final = ("keys", "teams", "users", "spend")
"""The `crossway` subcommands this module runs."""
DEFAULT_ADMIN_URL: Final = "http://127.0.0.1:15000"
"""The admin API of a gateway on this machine with the default admin port."""
ADMIN_TOKEN_ENV: Final = "CROSSWAY_ADMIN_TOKEN"
HTTP_TIMEOUT: Final = 30.0
"""Seconds to wait for the admin API."""
LIMIT_FLAGS: Final = (
    ("--max-budget", float, "USD that may be spent per budget period"),
    ("--budget-period", str, "daily, weekly, monthly or total (default total)"),
    ("--rpm", int, "requests per minute"),
    ("--tpm", int, "LLM tokens per minute"),
)


class UsageError(Exception):
    """A bad flag value: exit 2, nothing written."""


class AdminFailed(Exception):
    """The admin API refused or could not be reached: exit 1."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def add_parsers(sub: Any) -> None:
    """Add `keys`, `teams`, `users` and `spend` to the `crossway` command's subparsers."""
    conn = argparse.ArgumentParser(add_help=False)
    where = conn.add_mutually_exclusive_group()
    where.add_argument(
        "--admin",
        metavar="URL",
        help=f"a running gateway's admin API (default {DEFAULT_ADMIN_URL})",
    )
    where.add_argument(
        "--config", "-c", metavar="FILE", help="use the config's accounting store directly"
    )
    conn.add_argument(
        "--admin-token", metavar="TOKEN", help=f"admin.token (default ${ADMIN_TOKEN_ENV})"
    )
    conn.add_argument("--json", action="store_true", help="print the API's JSON answer")

    keys = sub.add_parser("keys", help="create, list, update, rotate or revoke virtual keys")
    verbs = keys.add_subparsers(dest="keys_command", required=True)
    create = verbs.add_parser("create", parents=[conn], help="create a key (printed once)")
    _key_flags(create)
    listing = verbs.add_parser("list", parents=[conn], help="list keys")
    listing.add_argument("--user", help="only this user's keys")
    listing.add_argument("--team", help="only this team's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    for verb, text in (
        ("show", "one key's settings (never its secret)"),
        ("rotate", "a new secret for the key (the old one stops working)"),
        ("revoke", "revoke the key for good"),
    ):
        verbs.add_parser(verb, parents=[conn], help=text).add_argument("id", help="key id")
    update = verbs.add_parser("update", parents=[conn], help="change a key's settings")
    update.add_argument("id", help="key id")
    _key_flags(update)
    for flag, text in (
        ("--clear-budget", "remove the key's budget"),
        ("--clear-rpm", "remove the request limit"),
        ("--clear-tpm", "remove the token limit"),
        ("--clear-expires", "the key never expires"),
        ("--clear-metadata", "drop all metadata"),
    ):
        update.add_argument(flag, action="store_true", help=text)

    for kind in ("team", "user"):
        parser = sub.add_parser(kind + "s", help=f"{kind} budgets and limits")
        kverbs = parser.add_subparsers(dest="principal_command", required=True)
        setter = kverbs.add_parser(
            "set", parents=[conn], help=f"set a {kind}'s budget and limits (others kept)"
        )
        setter.add_argument("id", help=f"{kind} id")
        for flag, kind_type, text in LIMIT_FLAGS:
            setter.add_argument(flag, type=_typed(kind_type, flag), help=text)
        setter.add_argument("--metadata", action="append", metavar="K=V", help="repeatable")
        for flag in ("--clear-budget", "--clear-rpm", "--clear-tpm"):
            setter.add_argument(flag, action="store_true", help=flag[2:].replace("-", " "))
        kverbs.add_parser("list", parents=[conn], help=f"every {kind} with a budget or limit")
        for verb, text in (("show", f"one {kind}"), ("delete", f"forget a stored {kind}")):
            kverbs.add_parser(verb, parents=[conn], help=text).add_argument("id")

    spend = sub.add_parser("spend", parents=[conn], help="spend totals over a time range")
    spend.add_argument("--group-by", default="key", help="key,user,team,model,provider,route")
    since = spend.add_mutually_exclusive_group()
    since.add_argument("--since", metavar="DURATION", help="the last 24h, 7d, ...")
    since.add_argument("--start", help="ISO-8601 or Unix seconds")
    spend.add_argument("--end", help="ISO-8601 or Unix seconds (default now)")
    for name in ("key", "user", "team", "model", "provider", "route"):
        spend.add_argument(f"--{name}", help=f"only this {name}")


def _key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="a label")
    parser.add_argument("--user", help="the user the key belongs to")
    parser.add_argument("--team", help="the team the key belongs to")
    parser.add_argument("--models", help="models the key may call, comma-separated")
    parser.add_argument("--mcp-tools", help="MCP tools the key may call, comma-separated")
    parser.add_argument("--agents", help="A2A agents the key may call, comma-separated")
    for flag, kind_type, text in LIMIT_FLAGS:
        parser.add_argument(flag, type=_typed(kind_type, flag), help=text)
    parser.add_argument("--expires", metavar="DURATION", help="30d, 12h, 2w, 3600 ...")
    parser.add_argument("--metadata", action="append", metavar="K=V", help="repeatable")


def _typed(kind_type: type, flag: str) -> Any:
    def convert(text: str) -> Any:
        try:
            return kind_type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind_type.__name__}") from None

    convert.__name__ = flag
    return convert


# -- running ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run a parsed `keys|teams|users|spend` command; the exit status."""
    try:
        request = _request(args)
        answer = _send(args, *request)
    except UsageError as exc:
        print(f"crossway: {exc}", file=sys.stderr)
        return 2
    except AdminFailed as exc:
        print(f"crossway: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    _print(args, answer)
    return 0


Request = tuple[str, str, dict[str, str], dict[str, Any] | None]


def _request(args: argparse.Namespace) -> Request:
    """(method, path, query, body) of the admin API call the command makes, its flags checked
    first (by the rules the API applies)."""
    from crossway.errors import GatewayError
    from crossway.store import key_admin

    try:
        if args.command == "keys":
            return _key_request(args)
        if args.command == "spend":
            return _spend_request(args)
        kind = args.command[:-1]
        verb = args.principal_command
        if verb == "list":
            return "GET", f"/{args.command}", {}, None
        key_admin.check_id(args.id, kind)
        path = f"/{args.command}/{_quote(args.id)}"
        if verb == "show":
            return "GET", path, {}, None
        if verb == "delete":
            return "DELETE", path, {}, None
        fields = _limit_fields(args)
        key_admin.check_principal(fields)
        return "PUT", path, {}, fields
    except GatewayError as exc:
        raise UsageError(exc.message) from None


def _key_request(args: argparse.Namespace) -> Request:
    from crossway.store import key_admin

    verb = args.keys_command
    if verb == "list":
        query = {"include_revoked": "true" if args.all else "false"}
        for name in ("user", "team"):
            if getattr(args, name):
                query[name] = getattr(args, name)
        return "GET", "/keys", query, None
    if verb == "create":
        fields = _key_fields(args)
        key_admin.key_changes(fields)
        return "POST", "/keys", {}, fields
    path = f"/keys/{_quote(args.id)}"
    if verb == "show":
        return "GET", path, {}, None
    if verb in ("rotate", "revoke"):
        return "POST", f"{path}/{verb}", {}, None
    fields = _key_fields(args)
    for flag, field in (
        ("clear_budget", "max_budget"),
        ("clear_rpm", "rpm"),
        ("clear_tpm", "tpm"),
        ("clear_expires", "expires_in"),
        ("clear_metadata", "metadata"),
    ):
        if getattr(args, flag):
            if field in fields:
                raise UsageError(f"--{flag.replace('_', '-')} contradicts another flag")
            fields[field] = None
    if not fields:
        raise UsageError("nothing to change: give at least one flag")
    key_admin.key_changes(fields)
    return "PATCH", path, {}, fields


def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    from crossway.store import key_admin

    fields: dict[str, Any] = {}
    for name in ("name", "user", "team"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for name in ("models", "mcp_tools", "agents"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = [part.strip() for part in value.split(",") if part.strip()]
    fields.update(_limit_fields(args))
    if args.expires is not None:
        fields["expires_in"] = args.expires
        key_admin.parse_duration(args.expires, "--expires")
    return fields


def _limit_fields(args: argparse.Namespace) -> dict[str, Any]:
    from crossway.store import key_admin

    fields: dict[str, Any] = {}
    for name in ("max_budget", "budget_period", "rpm", "tpm"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.metadata is not None:
        fields["metadata"] = key_admin.parse_metadata_pairs(args.metadata)
    if getattr(args, "keys_command", None) is None:  # teams|users set
        for flag, field in (
            ("clear_budget", "max_budget"),
            ("clear_rpm", "rpm"),
            ("clear_tpm", "tpm"),
        ):
            if getattr(args, flag):
                fields[field] = None
    return fields


def _spend_request(args: argparse.Namespace) -> Request:
    from crossway.store import key_admin

    query: dict[str, str] = {"group_by": args.group_by}
    if args.since is not None:
        query["start"] = repr(time.time() - key_admin.parse_duration(args.since, "--since"))
    elif args.start is not None:
        query["start"] = args.start
    if args.end is not None:
        query["end"] = args.end
    for name in ("key", "user", "team", "model", "provider", "route"):
        if getattr(args, name):
            query[name] = getattr(args, name)
    return "GET", "/spend", query, None


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- transports ---------------------------------------------------------------------------------


def _send(
    args: argparse.Namespace,
    method: str,
    path: str,
    query: dict[str, str],
    body: dict[str, Any] | None,
) -> Any:
    if args.config is not None and args.admin_token:
        raise UsageError("--admin-token is for --admin, not --config")
    if args.command in ("teams", "users") and args.principal_command == "set":
        body = _merged(args, path, body)
    return _call(args, method, path, query, body)


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    query: dict[str, str],
    body: dict[str, Any] | None,
) -> Any:
    if args.config is not None:
        return asyncio.run(_in_process(args.config, method, path, query, body))
    return _http(args, method, path, query, body)


def _merged(args: argparse.Namespace, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """`teams|users set` changes only what its flags name: the current values, overlaid."""
    try:
        current = _call(args, "GET", path, {}, None)
    except AdminFailed as exc:
        if exc.status != 404:
            raise
        current = {}
    merged = {
        name: current[name]
        for name in ("max_budget", "budget_period", "rpm", "tpm")
        if current.get(name) is not None
    }
    if current.get("metadata"):
        merged["metadata"] = current["metadata"]
    for name, value in (body or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def _http(
    args: argparse.Namespace,
    method: str,
    path: str,
    query: dict[str, str],
    body: dict[str, Any] | None,
) -> Any:
    base = (args.admin or DEFAULT_ADMIN_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--admin must be an http:// or https:// URL, not {base!r}")
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"accept": "application/json"}
    token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise AdminFailed(_error_message(exc.code, exc.read()), exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminFailed(f"cannot reach the admin API at {base}: {reason}") from None
    except ValueError:
        raise AdminFailed(f"the admin API at {base} did not answer JSON") from None


def _error_message(status: int, raw: bytes) -> str:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode(errors="replace").strip()[:200] or "no details"
    return f"{status}: {message}"


async def _in_process(
    config_path: str,
    method: str,
    path: str,
    query: dict[str, str],
    body: dict[str, Any] | None,
) -> Any:
    """The admin route's answer, served in this process on the config's store (no socket):
    the same checks and answers as a gateway's admin API."""
    from starlette.applications import Starlette

    from crossway.config import ConfigError, load_config
    from crossway.config.models import AdminConfig
    from crossway.server.admin_keys import KeyStores, key_routes

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise UsageError(str(exc).splitlines()[0] if str(exc) else "bad config") from None
    # Reading the config file grants the store itself; the admin plane's token guards sockets.
    local = config.model_copy(update={"admin": AdminConfig(host="127.0.0.1")})

    class _View:
        def current(self) -> Any:
            return local

    stores = KeyStores()
    app = Starlette(routes=key_routes(_View(), stores))
    raw = json.dumps(body).encode() if body is not None else b""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": urllib.parse.unquote(path),
        "raw_path": path.encode(),
        "query_string": urllib.parse.urlencode(query).encode(),
        "headers": [(b"content-type", b"application/json")],
        "scheme": "http",
        "server": ("127.0.0.1", 0),
        "client": ("127.0.0.1", 0),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    try:
        await app(scope, receive, send)
    finally:
        await stores.aclose()
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status >= 400:
        raise AdminFailed(_error_message(status, payload), status)
    return json.loads(payload)


# -- output -------------------------------------------------------------------------------------


def _print(args: argparse.Namespace, answer: Any) -> None:
    if args.command == "keys":
        verb = args.keys_command
        if verb == "list":
            _table(
                ["ID", "NAME", "USER", "TEAM", "STATUS", "BUDGET", "KEY"],
                [
                    [
                        k["id"],
                        k["name"],
                        k["user"],
                        k["team"],
                        k["status"],
                        _budget(k),
                        k["key_display"],
                    ]
                    for k in answer["keys"]
                ],
            )
            return
        secret = answer.pop("key", None)
        _details(answer)
        if secret is not None:
            print("key (shown once, store it now; the last line is the key alone):")
            print(secret)
        return
    if args.command == "spend":
        groups = answer["group_by"]
        rows = [
            [
                *(r.get(g) for g in groups),
                r["requests"],
                r["input_tokens"],
                r["output_tokens"],
                f"{r['cost']:.6f}",
            ]
            for r in answer["rows"]
        ]
        _table([*(g.upper() for g in groups), "REQUESTS", "INPUT", "OUTPUT", "COST_USD"], rows)
        print(f"total: ${answer['total_cost']:.6f} over {answer['total_requests']} requests")
        return
    if args.principal_command == "list":
        _table(
            ["ID", "BUDGET", "RPM", "TPM", "SOURCE"],
            [[p["id"], _budget(p), p["rpm"], p["tpm"], p["source"]] for p in answer[args.command]],
        )
        return
    if args.principal_command == "delete":
        print(f"deleted {args.command[:-1]} {answer['id']}")
        return
    _details(answer)


def _budget(row: dict[str, Any]) -> str:
    if row.get("max_budget") is None:
        return "-"
    return f"${row['max_budget']:g}/{row['budget_period']}"


def _details(answer: dict[str, Any]) -> None:
    for name, value in answer.items():
        if name.endswith("_at") and isinstance(value, int | float):
            value = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(value))} ({value:.0f})"
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value) or "(all)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif value is None:
            value = "-"
        print(f"{name + ':':<14} {value}")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


__all__ = ["KEY_COMMANDS", "add_parsers", "run"]
