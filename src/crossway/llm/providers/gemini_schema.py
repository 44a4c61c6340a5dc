"""JSON Schema -> the OpenAPI 3.0 subset Gemini's function declarations accept.

Gemini's `Schema` takes `type`, `format`, `title`, `description`, `nullable`, `enum`,
`items`, `minItems`, `maxItems`, `properties`, `required`, `minProperties`, `maxProperties`,
`minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, `anyOf`, `propertyOrdering`,
`default` and `example`. This module rewrites the rest where it can:

- `$ref` to `$defs` / `definitions` is inlined (a recursive reference cannot be, and is refused);
- `type: [T, "null"]` and `anyOf: [..., {type: null}]` become `nullable: true`;
- `oneOf` becomes `anyOf`; `allOf` is merged; `const` becomes a one-value `enum`;
- `additionalProperties`, `$schema`, `$id`, `$comment`, `examples`, `unevaluated*`,
  `patternProperties`, `dependent*`, `if/then/else`, `not` and unsupported `format`s are dropped;
- `enum` is kept only on strings (Gemini's enums are string-only); empty `properties` are
  dropped (Gemini refuses an empty object).
"""

from __future__ import annotations

import functools
from typing import Any, Final

import orjson

from crossway.errors import BadRequest

Json = dict[str, Any]

MAX_DEPTH: Final = 32
"""Deepest nesting accepted after `$ref`s are inlined."""
CACHED_SCHEMAS: Final = 512
"""Sanitized schemas kept (agents send the same tools with every request)."""

_KEEP: Final = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "items",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "anyOf",
        "propertyOrdering",
        "default",
        "example",
    }
)
_FORMATS: Final = {
    "string": frozenset({"enum", "date-time"}),
    "integer": frozenset({"int32", "int64"}),
    "number": frozenset({"float", "double"}),
}


def sanitize_schema(schema: Any, where: str) -> Json:
    """A copy of `schema` Gemini accepts; `BadRequest` naming `where` if it cannot be expressed."""
    if not isinstance(schema, dict):
        raise BadRequest(f"{where}: a JSON schema must be an object")
    defs: Json = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in schema[key].items()})
    return _clean(schema, defs, where, (), 0)


def sanitize_schema_cached(schema: Any, where: str) -> Json:
    """`sanitize_schema`, remembered by the schema's JSON text. The result is shared: read only."""
    if not isinstance(schema, dict):
        return sanitize_schema(schema, where)
    return _sanitize_by_text(orjson.dumps(schema), where)


@functools.lru_cache(maxsize=CACHED_SCHEMAS)
def _sanitize_by_text(text: bytes, where: str) -> Json:
    return sanitize_schema(orjson.loads(text), where)


def _clean(schema: Any, defs: Json, where: str, refs: tuple[str, ...], depth: int) -> Json:
    if depth > MAX_DEPTH:
        raise BadRequest(f"{where}: schema nests deeper than {MAX_DEPTH} levels")
    if not isinstance(schema, dict):
        if schema is True or schema == {}:
            return {}
        raise BadRequest(f"{where}: a JSON schema must be an object")
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in refs:
            raise BadRequest(f"{where}: recursive $ref {ref} cannot be expressed for Gemini")
        target = defs.get(ref)
        if target is None:
            raise BadRequest(f"{where}: $ref {ref} does not point into $defs / definitions")
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean(merged, defs, where, (*refs, ref), depth + 1)

    out: Json = {}
    nullable = bool(schema.get("nullable"))
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        nullable = nullable or len(kinds) < len(kind)
        if len(kinds) == 1:
            kind = kinds[0]
        else:
            out["anyOf"] = [{"type": k} for k in kinds]
            kind = None
    if kind == "null":
        nullable, kind = True, None
    if isinstance(kind, str):
        out["type"] = kind

    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part, defs, where, refs)
            for k, v in part.items():
                if k == "properties" and isinstance(merged.get("properties"), dict):
                    merged["properties"] = {**merged["properties"], **v}
                elif k == "required" and isinstance(merged.get("required"), list):
                    merged["required"] = [*merged["required"], *v]
                else:
                    merged.setdefault(k, v)
        return _clean(merged, defs, where, refs, depth + 1)

    alternatives = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(alternatives, list):
        options = []
        for option in alternatives:
            if isinstance(option, dict) and option.get("type") == "null":
                nullable = True
            else:
                options.append(_clean(option, defs, where, refs, depth + 1))
        if len(options) == 1 and not out:
            out.update(options[0])
        elif options:
            out["anyOf"] = options

    for key, value in schema.items():
        if key not in _KEEP or key in ("type", "anyOf", "nullable"):
            continue
        if key == "properties":
            if isinstance(value, dict) and value:
                out["properties"] = {
                    name: _clean(sub, defs, f"{where}.{name}", refs, depth + 1)
                    for name, sub in value.items()
                }
        elif key == "items":
            out["items"] = _clean(value, defs, where, refs, depth + 1)
        elif key == "format":
            if value in _FORMATS.get(str(out.get("type")), frozenset()):
                out["format"] = value
        elif key == "enum":
            if out.get("type", "string") == "string" and isinstance(value, list):
                out["enum"] = [str(v) for v in value if v is not None]
                out["type"] = "string"
        elif key == "required":
            if isinstance(value, list) and value:
                props = schema.get("properties")
                out["required"] = [r for r in value if not isinstance(props, dict) or r in props]
        else:
            out[key] = value
    if "const" in schema and "enum" not in out:
        out["enum"] = [str(schema["const"])]
        out["type"] = "string"
    if "required" in out and "properties" not in out:
        del out["required"]
    if nullable:
        out["nullable"] = True
    return out


def _resolve(schema: Any, defs: Json, where: str, refs: tuple[str, ...]) -> Json:
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        if ref in refs or ref not in defs:
            raise BadRequest(f"{where}: $ref {ref} cannot be expressed for Gemini")
        resolved: Json = defs[ref]
        return resolved
    return schema if isinstance(schema, dict) else {}
