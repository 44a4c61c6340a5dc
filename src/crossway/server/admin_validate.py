"""`POST /config/validate`: check a config text with the gateway's own loader, write nothing.

    GET /config/file        the config file's text, to edit and validate: `{"path", "text",
                            "literal_secrets"}`; `text` is null (and `literal_secrets` true)
                            when the file holds a secret written out rather than as `${VAR}`
    POST /config/validate   body: the YAML text (any text content type, at most
                            `MAX_CONFIG_BYTES`); answer `{"valid": bool, "errors": [{"loc",
                            "line", "column", "message"}]}`, every problem the loader finds,
                            each at its key path and line (1-based; column of the key), in
                            line order

The text goes through `crossway.config.parse_config` with this process's environment for
`${VAR}` interpolation, then the `crossway serve` environment overrides, exactly as a reload
of the file would (`load_serving_config`); nothing is saved, the running config is untouched. Same rule as the other sensitive admin routes (the environment it
interpolates holds the gateway's secrets, although no error ever echoes a value).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, SecretStr
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config, ConfigError, parse_config
from crossway.config.secrets import redacted_dump
from crossway.config.serve_env import apply_env_overrides
from crossway.errors import BadRequest, GatewayError, PayloadTooLarge, ServiceUnavailable
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_pins import _error, _json

Json = dict[str, Any]

ACTION: Final = "validate a config"
MAX_CONFIG_BYTES: Final = 1024 * 1024
"""Largest config text `POST /config/validate` reads."""
SOURCE: Final = "<edited config>"
"""The name the loader's messages give the text."""

MIN_SECRET_CHARS: Final = 4
"""Shorter secret values are not searched for in the file text (they would match anywhere)."""

_PROBLEM: Final = re.compile(r"^(?P<loc>.+?)(?: \(line (?P<line>\d+)\))?: (?P<msg>.*)$", re.DOTALL)

ConfigSource = Any


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"the config text is larger than {MAX_CONFIG_BYTES} bytes")


def _tree(text: str) -> Any:
    return YAML(typ="rt").load(text)


def _key_position(tree: Any, loc: str) -> tuple[int, int] | None:
    """The 1-based (line, column) of the deepest part of `loc` (`routes[0].match.path`) found
    in the YAML tree. Keys may hold dots (`gpt-4.1`): the longest key that fits wins."""
    node, rest, found = tree, loc, None
    while rest:
        if rest.startswith("["):
            end = rest.find("]")
            raw = rest[1:end] if end > 0 else ""
            if not raw.isdigit() or not isinstance(node, CommentedSeq) or int(raw) >= len(node):
                break
            index = int(raw)
            try:
                line, col = node.lc.item(index)
                found = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            node, rest = node[index], rest[end + 1 :]
        elif isinstance(node, CommentedMap):
            fits = [
                key for key in node if rest == str(key) or rest.startswith((f"{key}.", f"{key}["))
            ]
            if not fits:
                break
            key = max(fits, key=lambda k: len(str(k)))
            try:
                line, col = node.lc.key(key)
                found = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            node, rest = node[key], rest[len(str(key)) :]
        else:
            break
        rest = rest.removeprefix(".")
    return found


def _first_column(text: str, line: int) -> int | None:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    content = lines[line - 1]
    stripped = content.lstrip(" -")
    return len(content) - len(stripped) + 1 if stripped else None


def locate(problem: str, text: str, tree: Any) -> Json:
    """One loader problem (`path.to.key (line N): message`) as `{loc, line, column, message}`."""
    match = _PROBLEM.match(problem)
    if match is None:
        return {"loc": "(root)", "line": None, "column": None, "message": problem}
    loc = match.group("loc")
    line = int(match.group("line")) if match.group("line") else None
    position = _key_position(tree, loc) if tree is not None else None
    column: int | None = None
    if position is not None and (line is None or position[0] == line):
        line, column = position
    elif line is not None:
        column = _first_column(text, line)
    return {"loc": loc, "line": line, "column": column, "message": match.group("msg")}


def validate_text(text: str, env: Any = None) -> Json:
    """Every problem of `text` as a config, located; `valid` when there is none."""
    try:
        tree = _tree(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        message = f"YAML syntax error: {exc.problem or exc.context or 'cannot parse'}"
        return {
            "valid": False,
            "errors": [
                {
                    "loc": "(syntax)",
                    "line": mark.line + 1 if mark is not None else None,
                    "column": mark.column + 1 if mark is not None else None,
                    "message": message,
                }
            ],
        }
    except YAMLError as exc:
        error = {"loc": "(syntax)", "line": None, "column": None, "message": f"YAML: {exc}"}
        return {"valid": False, "errors": [error]}
    environ = os.environ if env is None else env
    try:
        config: Config = parse_config(text, SOURCE, environ)
    except ConfigError as exc:
        errors = [locate(p, text, tree) for p in exc.problems]
        errors.sort(key=lambda e: (e["line"] is None, e["line"] or 0, e["column"] or 0))
        return {"valid": False, "errors": errors}
    try:  # what a serving gateway applies next (`load_serving_config`)
        apply_env_overrides(config, environ)
    except ConfigError as exc:
        errors = [
            {"loc": "(environment overrides)", "line": None, "column": None, "message": p}
            for p in exc.problems
        ]
        return {"valid": False, "errors": errors}
    return {"valid": True, "errors": []}


def _typed_secrets(value: Any, out: set[str]) -> None:
    if isinstance(value, SecretStr):
        out.add(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _typed_secrets(getattr(value, name), out)
    elif isinstance(value, dict):
        for item in value.values():
            _typed_secrets(item, out)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _typed_secrets(item, out)


def _masked(plain: Any, masked: Any, out: set[str]) -> None:
    """Values `redacted_dump` hides (headers, URLs with passwords, credential arguments)."""
    if plain == masked:
        return
    if isinstance(plain, str):
        out.add(plain)
    elif isinstance(plain, dict) and isinstance(masked, dict):
        for key, item in plain.items():
            _masked(item, masked.get(key), out)
    elif isinstance(plain, list) and isinstance(masked, list):
        for a, b in zip(plain, masked, strict=False):
            _masked(a, b, out)


def secret_values(config: Config) -> set[str]:
    """Every secret value of `config` (the ones `GET /config` redacts)."""
    out: set[str] = set()
    _typed_secrets(config, out)
    _masked(config.model_dump(mode="json"), redacted_dump(config), out)
    return {value for value in out if len(value) >= MIN_SECRET_CHARS and value != "**********"}


_LITERAL: Final = re.compile(r"^\s*-?\s*([A-Za-z0-9_.-]+)\s*:\s*(\S.*)$")
_SECRET_KEY: Final = re.compile(
    r"(api[-_]?key|token|secret|passw(or)?d|pwd|credentials?|private[-_]key)$", re.IGNORECASE
)


def holds_literal_secret(text: str, env: Any = None) -> bool:
    """Whether config `text` writes out a secret rather than a `${VAR}` reference: when it
    loads, whether any of its secret values appears in it; when it does not, whether a
    secret-looking key (`api_key:`, `token:`, `password:`) has a literal value."""
    try:
        config = parse_config(text, SOURCE, os.environ if env is None else env)
    except ConfigError:
        config = None
    if config is not None:
        return any(value in text for value in secret_values(config))
    for line in text.splitlines():
        match = _LITERAL.match(line)
        if match is None or not _SECRET_KEY.search(match.group(1)):
            continue
        value = match.group(2).split(" #", 1)[0].strip().strip("'\"")
        if value and not value.startswith("${") and value.lower() not in ("null", "~"):
            return True
    return False


@functools.lru_cache(maxsize=4)
def _file_holds_literal_secret(text: str) -> bool:
    """`holds_literal_secret` for the file's text, remembered: the file seldom changes, and
    parsing it again costs tens of milliseconds on every page view."""
    return holds_literal_secret(text)


def validate_routes(view: ConfigSource, probe: Any) -> list[Route]:
    """`GET /config/file` and `POST /config/validate`."""

    async def config_file(request: Request) -> Response:
        try:
            cfg: Config = await asyncio.to_thread(view.current)
            _check_change_allowed(request, cfg.admin, "read the config file")
            path = str(view.path)
            try:
                text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ServiceUnavailable(f"cannot read the config file {path}: {exc}") from None
            literal = await asyncio.to_thread(_file_holds_literal_secret, text)
            return _json(
                {"path": path, "text": None if literal else text, "literal_secrets": literal}
            )
        except GatewayError as exc:
            return _error(exc)

    async def validate(request: Request) -> Response:
        try:
            cfg: Config = await asyncio.to_thread(view.current)
            _check_change_allowed(request, cfg.admin, ACTION)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_CONFIG_BYTES:
                raise _too_large()
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_CONFIG_BYTES:
                    raise _too_large()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("the config text must be UTF-8", param="body") from None
            return _json(await asyncio.to_thread(validate_text, text))
        except GatewayError as exc:
            return _error(exc)

    return [
        Route("/config/file", config_file, methods=["GET"]),
        Route("/config/validate", validate, methods=["POST"]),
    ]


def validate_paths() -> Json:
    """`POST /config/validate`'s OpenAPI path item."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    problem = {
        "type": "object",
        "properties": {
            "loc": {"type": "string", "description": "Key path (`routes[0].backend`)."},
            "line": {"type": ["integer", "null"], "description": "1-based line."},
            "column": {"type": ["integer", "null"], "description": "1-based column."},
            "message": {"type": "string"},
        },
        "required": ["loc", "line", "column", "message"],
    }
    summary = (
        "Validate a config text with the gateway's loader (env interpolation included) and "
        "list every problem at its key path and line; nothing is saved."
    )
    text = {"schema": {"type": "string"}}
    errors = {
        "401": {
            "description": "`admin.token` is set and the request does not carry it.",
            **error,
        },
        "403": {
            "description": "Refused: no `admin.token` and a non-loopback listener or a browser "
            "request.",
            **error,
        },
    }
    auth = (
        " Needs `admin.token` as a Bearer token when one is set; without one it is served only "
        "on a loopback admin listener and never to a browser (a request with an `Origin` header)."
    )
    file_summary = (
        "The config file's text, to edit and validate; null when the file writes out a secret "
        "(use `${VAR}` references)."
    )
    return {
        "/config/file": {
            "get": {
                "operationId": "getConfigFile",
                "tags": ["config"],
                "summary": file_summary,
                "description": file_summary + auth,
                "security": [{}, {"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "OK.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "path": {"type": "string"},
                                        "text": {"type": ["string", "null"]},
                                        "literal_secrets": {"type": "boolean"},
                                    },
                                    "required": ["path", "text", "literal_secrets"],
                                }
                            }
                        },
                    },
                    **errors,
                    "503": {"description": "The file cannot be read.", **error},
                },
            }
        },
        "/config/validate": {
            "post": {
                "operationId": "validateConfig",
                "tags": ["config"],
                "summary": summary,
                "description": summary + " Needs `admin.token` as a Bearer token when one is "
                "set; without one it is served only on a loopback admin listener and never to a "
                "browser (a request with an `Origin` header).",
                "security": [{}, {"adminToken": []}],
                "requestBody": {
                    "required": True,
                    "description": "The config's YAML (or JSON) text, UTF-8.",
                    "content": {
                        "application/yaml": text,
                        "text/yaml": text,
                        "text/plain": text,
                    },
                },
                "responses": {
                    "200": {
                        "description": "Checked (valid or not).",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "valid": {"type": "boolean"},
                                        "errors": {"type": "array", "items": problem},
                                    },
                                    "required": ["valid", "errors"],
                                }
                            }
                        },
                    },
                    "400": {"description": "The body is not UTF-8 text.", **error},
                    "401": {
                        "description": "`admin.token` is set and the request does not carry it.",
                        **error,
                    },
                    "403": {
                        "description": "Refused: no `admin.token` and a non-loopback listener "
                        "or a browser request.",
                        **error,
                    },
                    "413": {"description": "Body too large.", **error},
                },
            }
        },
    }


__all__ = ["MAX_CONFIG_BYTES", "locate", "validate_paths", "validate_routes", "validate_text"]
