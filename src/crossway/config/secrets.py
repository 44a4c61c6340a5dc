"""Which config values are secrets, found by their types; and the config with them redacted.

A field is secret-bearing when its annotation says so, never because of its name:

- `SecretStr`, or a container of them (`SecretHeaders = dict[str, SecretStr]`): the value is a
  credential. `/config` shows `**********`; empty is refused; `${VAR}` unset is a config error.
- A type annotated with a `Sensitive` marker, for values the runtime reads as plain strings:
  `SecretEnv` (every value hidden), `MatchHeaders` (credential-looking header names hidden),
  `SecretUrl` (userinfo and credential query parameters hidden). `${VAR}` unset is an error
  in all of them except `SecretArgs` (command-line arguments: only `--token=...`-style values
  are hidden).

Whatever the type, `/config` also hides URL passwords and credential query parameters in every
string, the private members of inline JWKS keys, and credential-named strings in free-form maps.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, SecretStr

MASK: Final = "**********"
"""What every redacted value becomes (the same as pydantic's `SecretStr` dump)."""

SensitiveKind = Literal["values", "credential_headers", "url", "args"]


@dataclass(frozen=True)
class Sensitive:
    """Marks a plain-typed config field that may carry credentials (see the module docstring)."""

    kind: SensitiveKind
    """How `/config` redacts it."""


SecretHeaders = dict[str, SecretStr]
"""Headers Crossway sends upstream: every value is a secret."""
SecretEnv = Annotated[dict[str, str], Sensitive("values")]
"""Environment of a child process: every value is hidden (empty values are allowed)."""
MatchHeaders = Annotated[dict[str, str], Sensitive("credential_headers")]
"""Header conditions: values of credential-looking headers are hidden."""
SecretUrl = Annotated[str, Sensitive("url")]
"""A URL that may carry a password (`redis://:PASSWORD@host`)."""
SecretArgs = Annotated[list[str], Sensitive("args")]
"""Command-line arguments: values of credential-looking flags are hidden."""

_CREDENTIAL_WORDS: Final = re.compile(
    r"auth|token|secret|key|passw|pwd|cookie|credential|signature|session", re.IGNORECASE
)
_CREDENTIAL_NAMES: Final = frozenset({"sig", "pass", "code"})
_JWK_PRIVATE: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
_URL: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)$", re.DOTALL)
_FLAG: Final = re.compile(r"^(?P<flag>--?[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<eq>=)(?P<value>.*)$")


def looks_like_credential(name: str) -> bool:
    """Whether a header, query-parameter, flag or map key named `name` probably holds one."""
    return bool(_CREDENTIAL_WORDS.search(name)) or name.lower() in _CREDENTIAL_NAMES


# --- finding secret fields by type ---------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """`Annotated[T, m...]` -> `(T, [m...])` (nested ones flattened)."""
    meta: list[Any] = []
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        meta.extend(extra)
    return tp, meta


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _model_class(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _union_members(tp: Any, data: Any) -> list[Any]:
    """The members of a union `data` can be; tagged-union members whose `Literal` fields
    disagree with `data` are left out (all of them when none fits)."""
    members = [m for m in get_args(tp) if m is not type(None)]
    if not isinstance(data, Mapping):
        return members
    fitting = []
    for member in members:
        model = _model_class(_unwrap(member)[0])
        if model is not None and not _fits(model, data):
            continue
        fitting.append(member)
    return fitting or members


def _fits(model: type[BaseModel], data: Mapping[str, Any]) -> bool:
    for name, field in model.model_fields.items():
        annotation = _unwrap(field.annotation)[0]
        if get_origin(annotation) is Literal and name in data:
            if data[name] not in get_args(annotation):
                return False
    return True


def _field_name(model: type[BaseModel], key: str | int) -> str | None:
    """The field `key` (a name or an alias as written in the file) sets on `model`."""
    if not isinstance(key, str):
        return None
    if key in model.model_fields:
        return key
    for name, field in model.model_fields.items():
        aliases: list[Any] = [field.alias]
        if isinstance(field.validation_alias, str):
            aliases.append(field.validation_alias)
        elif isinstance(field.validation_alias, AliasChoices):
            aliases.extend(field.validation_alias.choices)
        if key in aliases:
            return name
    return None


def _field_type(model: type[BaseModel], name: str) -> tuple[Any, list[Any]]:
    field = model.model_fields[name]
    tp, meta = _unwrap(field.annotation)
    return tp, [*field.metadata, *meta]


def _holds_secret(tp: Any, meta: Sequence[Any] = ()) -> bool:
    """Whether a value of type `tp` is, or is a container of, secrets."""
    if any(isinstance(m, Sensitive) and m.kind != "args" for m in meta):
        return True
    tp, own = _unwrap(tp)
    if own:
        return _holds_secret(tp, own)
    if tp is SecretStr:
        return True
    if _is_union(tp):
        return any(_holds_secret(m) for m in get_args(tp) if m is not type(None))
    origin = get_origin(tp)
    if origin in (dict, Mapping):
        return _holds_secret(get_args(tp)[1])
    if origin in (list, tuple, set, frozenset, Sequence):
        return any(_holds_secret(a) for a in get_args(tp) if a is not Ellipsis)
    return False


def is_secret_path(
    model: type[BaseModel], loc: Sequence[str | int], data: Any, meta: Sequence[Any] = ()
) -> bool:
    """Whether the value at `loc` (keys and indexes as written in the file) of `data`, read as
    `model`, is secret by its type. `data` (the raw file data) picks tagged-union members."""
    return _secret_at(model, tuple(loc), data, list(meta))


def _secret_at(tp: Any, loc: tuple[str | int, ...], data: Any, meta: list[Any]) -> bool:
    tp, own = _unwrap(tp)
    meta = [*meta, *own]
    if _is_union(tp):
        return any(_secret_at(m, loc, data, meta) for m in _union_members(tp, data))
    if not loc:
        return _holds_secret(tp, meta)
    part, rest = loc[0], loc[1:]
    model = _model_class(tp)
    if model is not None:
        name = _field_name(model, part)
        if name is None:
            return False
        field_tp, field_meta = _field_type(model, name)
        child = data.get(part) if isinstance(data, Mapping) else None
        return _secret_at(field_tp, rest, child, field_meta)
    # A container's markers (`SecretEnv`) apply to its items.
    inherited = [m for m in meta if isinstance(m, Sensitive)]
    origin, args = get_origin(tp), get_args(tp)
    if origin in (dict, Mapping) and len(args) == 2:
        child = data.get(part) if isinstance(data, Mapping) else None
        return _secret_at(args[1], rest, child, inherited)
    if origin in (list, Sequence, set, frozenset) and args and isinstance(part, int):
        child = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
        return _secret_at(args[0], rest, child, inherited)
    if origin is tuple and args and isinstance(part, int):
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(part, len(args) - 1)]
        child = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
        return _secret_at(item, rest, child, inherited)
    return False


def empty_secret(value: Any) -> str | None:
    """A description of the empty secret in a validated field `value`, or None."""
    if isinstance(value, SecretStr):
        return "secret is empty" if not value.get_secret_value() else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, SecretStr) and not item.get_secret_value():
                return f"secret {key!r} is empty"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, SecretStr) and not item.get_secret_value():
                return f"secret [{index}] is empty"
    return None


# --- redaction ---------------------------------------------------------------------------------


def redact_url(value: str) -> str:
    """`scheme://user:PASSWORD@host/...?token=X` with the password and credential parameters
    masked (a user name alone, as in `https://TOKEN@host`, is masked too)."""
    m = _URL.match(value)
    if m is None:
        return value
    scheme, rest = m.group("scheme"), m.group("rest")
    end = len(rest)
    for sep in "/?#":
        at = rest.find(sep)
        if at != -1:
            end = min(end, at)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    path, hash_mark, fragment = tail.partition("#")
    path, question, query = path.partition("?")
    if question:
        params = []
        for param in query.split("&"):
            name, eq, _v = param.partition("=")
            params.append(f"{name}={MASK}" if eq and looks_like_credential(name) else param)
        query = "&".join(params)
    return f"{scheme}{authority}{path}{question}{query}{hash_mark}{fragment}"


def _redact_args(args: list[Any]) -> list[Any]:
    out: list[Any] = []
    hide_next = False
    for arg in args:
        if not isinstance(arg, str):
            out.append(arg)
            continue
        if hide_next and not arg.startswith("-"):
            out.append(MASK)
            hide_next = False
            continue
        hide_next = False
        m = _FLAG.match(arg)
        if m is not None and looks_like_credential(m.group("flag")):
            out.append(f"{m.group('flag')}={MASK}")
        elif arg.startswith("-") and looks_like_credential(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(redact_url(arg))
    return out


def _redact_free(value: Any) -> Any:
    """Redaction of values with no useful type (`dict[str, Any]`, inline JWKS...)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list):
        return [_redact_free(v) for v in value]
    if isinstance(value, dict):
        is_jwk = "kty" in value
        out: dict[str, Any] = {}
        for key, item in value.items():
            if is_jwk and key in _JWK_PRIVATE:
                out[key] = MASK
            elif isinstance(item, str) and looks_like_credential(str(key)):
                out[key] = MASK
            else:
                out[key] = _redact_free(item)
        return out
    return value


def _apply_marker(kind: SensitiveKind, value: Any) -> Any:
    if kind == "values" and isinstance(value, dict):
        return {k: MASK for k in value}
    if kind == "credential_headers" and isinstance(value, dict):
        return {k: MASK if looks_like_credential(str(k)) else v for k, v in value.items()}
    if kind == "url" and isinstance(value, str):
        return redact_url(value)
    if kind == "args" and isinstance(value, list):
        return _redact_args(value)
    return value


def _redact(tp: Any, value: Any, meta: list[Any]) -> Any:
    tp, own = _unwrap(tp)
    meta = [*meta, *own]
    markers = [m for m in meta if isinstance(m, Sensitive)]
    if markers:
        for marker in markers:
            value = _apply_marker(marker.kind, value)
        return _redact_free(value)
    if value is None:
        return None
    if _is_union(tp):
        members = _union_members(tp, value)
        if len(members) == 1:
            return _redact(members[0], value, [])
        return _redact_free(value)
    model = _model_class(tp)
    if model is not None and isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _field_name(model, key)
            if name is None:
                out[key] = _redact_free(item)
                continue
            field_tp, field_meta = _field_type(model, name)
            out[key] = _redact(field_tp, item, field_meta)
        return out
    origin, args = get_origin(tp), get_args(tp)
    if origin in (dict, Mapping) and len(args) == 2 and isinstance(value, dict):
        if args[1] is Any or args[1] is object:
            return _redact_free(value)
        return {k: _redact(args[1], v, []) for k, v in value.items()}
    if origin in (list, Sequence, set, frozenset) and args and isinstance(value, list):
        return [_redact(args[0], v, []) for v in value]
    return _redact_free(value)


def redacted_dump(model: BaseModel) -> dict[str, Any]:
    """`model` as JSON data with every secret replaced by `MASK` (see the module docstring)."""
    data: dict[str, Any] = model.model_dump(mode="json")
    result: dict[str, Any] = _redact(type(model), data, [])
    return result
