"""OpenAPI operations as MCP tools: `$ref` resolution and input-schema folding (pure)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from crossway.mcp.upstream.base import JsonObject

log = logging.getLogger("crossway.mcp.openapi")

HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_TOOL_NAME: Final = 64
MAX_REF_DEPTH: Final = 32
IGNORED_HEADERS: Final = frozenset({"accept", "content-type", "authorization"})
_INVALID_NAME_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]+")
_REPEATED_UNDERSCORES: Final = re.compile(r"__+")

Location = Literal["path", "query", "header", "cookie", "body", "body_field"]


class OpenApiError(ValueError):
    """The document cannot be used (not OpenAPI 3, no base URL, unreadable)."""


class RefResolver:
    """Inlines local `$ref`s (`#/components/...`) of one document; cycles become `{}`."""

    def __init__(self, document: JsonObject) -> None:
        self.document = document

    def lookup(self, ref: str) -> Any:
        """The value a local JSON pointer names; raises `KeyError` when it names nothing."""
        if not ref.startswith("#"):
            raise KeyError(f"external reference {ref!r} is not supported")
        node: Any = self.document
        for token in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else ():
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list):
                node = node[int(token)]
            elif isinstance(node, dict):
                node = node[token]
            else:
                raise KeyError(ref)
        return node

    def resolve(self, node: Any, seen: tuple[str, ...] = ()) -> Any:
        """A copy of `node` with every `$ref` inside replaced by its target."""
        if len(seen) > MAX_REF_DEPTH:
            return {}
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref in seen:
                    return {"description": f"(recursive: {ref.rsplit('/', 1)[-1]})"}
                try:
                    target = self.lookup(ref)
                except (KeyError, ValueError, IndexError):
                    log.warning("openapi: cannot resolve %s; using an open schema", ref)
                    return {}
                resolved = self.resolve(target, (*seen, ref))
                siblings = {k: v for k, v in node.items() if k != "$ref"}
                if siblings and isinstance(resolved, dict):
                    return {**resolved, **self.resolve(siblings, seen)}
                return resolved
            return {k: self.resolve(v, seen) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolve(v, seen) for v in node]
        return node


def _to_json_schema(schema: Any) -> Any:
    """OpenAPI 3.0 schema dialect -> JSON Schema: `nullable` becomes a `null` type."""
    if isinstance(schema, list):
        return [_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: _to_json_schema(v)
        for k, v in schema.items()
        if k not in ("nullable", "xml", "discriminator")
    }
    if schema.get("nullable") is True and isinstance(schema.get("type"), str):
        out["type"] = [schema["type"], "null"]
    return out


@dataclass(frozen=True, slots=True)
class Argument:
    """Where one tool argument goes in the HTTP request."""

    location: Location
    wire_name: str
    """Name in the request (parameter name, body property); unused for a whole `body`."""
    style: str | None = None
    explode: bool = True


@dataclass(slots=True)
class Operation:
    """One API operation exposed as a tool."""

    tool_name: str
    method: str
    path: str
    description: str
    input_schema: JsonObject
    arguments: dict[str, Argument] = field(default_factory=dict)
    content_type: str | None = None
    """Media type of the request body, if it has one."""

    def tool(self) -> JsonObject:
        """The MCP tool definition."""
        tool: JsonObject = {"name": self.tool_name, "inputSchema": self.input_schema}
        if self.description:
            tool["description"] = self.description
        tool["annotations"] = {
            "readOnlyHint": self.method in ("get", "head", "options"),
            "idempotentHint": self.method in ("get", "head", "options", "put", "delete"),
            "openWorldHint": True,
        }
        return tool


def sanitize_tool_name(name: str) -> str:
    """`name` made valid for clients: `[a-zA-Z0-9_-]`, at most 64 characters."""
    cleaned = _REPEATED_UNDERSCORES.sub("_", _INVALID_NAME_CHARS.sub("_", name)).strip("_")
    return (cleaned or "operation")[:MAX_TOOL_NAME]


def _pick_content_type(content: JsonObject) -> str | None:
    for media in content:
        base = media.split(";")[0].strip().lower()
        if base == "application/json" or base.endswith("+json"):
            return media
    for preferred in ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain"):
        if preferred in content:
            return preferred
    return next(iter(content), None)


def build_operations(document: JsonObject) -> list[Operation]:
    """Every operation of an OpenAPI 3 document, as tools with unique names."""
    version = str(document.get("openapi", ""))
    if not version.startswith("3."):
        raise OpenApiError(f"not an OpenAPI 3 document (openapi: {version or 'missing'})")
    resolver = RefResolver(document)
    operations: list[Operation] = []
    used: set[str] = set()
    paths = document.get("paths") or {}
    for path, raw_item in paths.items():
        item = resolver.resolve(raw_item) if isinstance(raw_item, dict) else {}
        shared_params = item.get("parameters") or []
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            base_name = op.get("operationId") or f"{method}_{path}"
            name = sanitize_tool_name(str(base_name))
            if name in used:
                for n in range(2, 1000):
                    candidate = f"{name[: MAX_TOOL_NAME - len(str(n)) - 1]}_{n}"
                    if candidate not in used:
                        name = candidate
                        break
            used.add(name)
            operations.append(_build_operation(name, method, path, op, shared_params))
    return operations


def _build_operation(
    name: str, method: str, path: str, op: JsonObject, shared_params: list[Any]
) -> Operation:
    params: dict[tuple[str, str], JsonObject] = {}
    for param in [*shared_params, *(op.get("parameters") or [])]:
        if isinstance(param, dict) and isinstance(param.get("name"), str):
            params[(param["name"], param.get("in", "query"))] = param  # operation level wins

    properties: JsonObject = {}
    required: list[str] = []
    arguments: dict[str, Argument] = {}

    def add(arg_name: str, schema: Any, argument: Argument, is_required: bool) -> None:
        if arg_name in properties:
            arg_name = f"{argument.location}_{arg_name}"
        properties[arg_name] = schema
        arguments[arg_name] = argument
        if is_required:
            required.append(arg_name)

    for (pname, location), param in params.items():
        if location not in ("path", "query", "header", "cookie"):
            continue
        if location == "header" and pname.lower() in IGNORED_HEADERS:
            continue
        schema = dict(_to_json_schema(param.get("schema") or {}))
        if param.get("description") and "description" not in schema:
            schema["description"] = param["description"]
        add(
            pname,
            schema,
            Argument(
                cast("Location", location),
                pname,
                param.get("style"),
                param.get("explode", param.get("style", "form") == "form"),
            ),
            bool(param.get("required")) or location == "path",
        )

    content_type = None
    body = op.get("requestBody")
    if isinstance(body, dict) and isinstance(body.get("content"), dict) and body["content"]:
        content_type = _pick_content_type(body["content"])
        media = body["content"].get(content_type) or {}
        schema = _to_json_schema(media.get("schema") or {}) if isinstance(media, dict) else {}
        body_props = schema.get("properties") if isinstance(schema, dict) else None
        foldable = (
            isinstance(body_props, dict)
            and schema.get("type", "object") == "object"
            and not any(key in schema for key in ("allOf", "anyOf", "oneOf"))
            and not set(body_props) & set(properties)
        )
        if foldable:
            assert isinstance(body_props, dict)
            body_required = set(schema.get("required") or ()) if body.get("required") else set()
            for prop, prop_schema in body_props.items():
                add(prop, prop_schema, Argument("body_field", prop), prop in body_required)
        else:
            if body.get("description") and isinstance(schema, dict) and "description" not in schema:
                schema = {**schema, "description": body["description"]}
            add("body", schema, Argument("body", "body"), bool(body.get("required")))

    input_schema: JsonObject = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    summary = str(op.get("summary") or "").strip()
    detail = str(op.get("description") or "").strip()
    description = "\n\n".join(p for p in (summary, detail) if p) or f"{method.upper()} {path}"
    return Operation(name, method, path, description, input_schema, arguments, content_type)


__all__ = [
    "Argument",
    "OpenApiError",
    "Operation",
    "RefResolver",
    "build_operations",
    "sanitize_tool_name",
]
