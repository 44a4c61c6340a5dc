"""JSON <-> a2a-sdk's models, for the version bridge (`crossway.a2a.bridge`, `bridge_cards`).

a2a-sdk's v0.3 compat conversions work on its v0.3 pydantic models and v1.0 protobuf messages;
the bridge works on plain JSON. These helpers cross between the two and turn every failure of
a model, a parser or a conversion into `A2aError(code, ...)` with a short message, so bad input
never escapes as a traceback. The SDK, pydantic and protobuf are imported on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from crossway.a2a.errors import A2aError

_MAX_SAFE_INTEGER: Final = 2**53
"""Largest integer a double holds exactly."""

_MAX_ERROR_DETAIL: Final = 300
"""Longest validation detail quoted in an error message."""


def json_object(value: Any, what: str, code: int) -> dict[str, Any]:
    """`value` if it is a JSON object, else `A2aError(code, "<what> must be a JSON object")`."""
    if not isinstance(value, dict):
        raise A2aError(code, f"{what} must be a JSON object")
    return value


def pydantic_from_json(model: Any, data: Any, what: str, code: int) -> Any:
    """A v0.3 pydantic model from JSON."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise A2aError(code, f"invalid {what}: {clip(problems)}") from None


def proto_from_json(data: dict[str, Any], message: Any, what: str, code: int) -> Any:
    """A v1.0 protobuf message from JSON: strictly (so an unknown enum value such as a
    task state is an error), leniently only when the one problem is an unknown field."""
    from google.protobuf.json_format import ParseDict, ParseError

    try:
        return ParseDict(data, message)
    except ParseError as exc:
        if "has no field named" not in str(exc):
            raise A2aError(code, f"invalid {what}: {clip(str(exc))}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise A2aError(code, f"invalid {what}: {clip(str(exc))}") from None
    message.Clear()
    try:
        return ParseDict(data, message, ignore_unknown_fields=True)
    except (ParseError, TypeError, ValueError, AttributeError) as exc:
        raise A2aError(code, f"invalid {what}: {clip(str(exc))}") from None


def run_conversion(function: Callable[[Any], Any], value: Any, what: str, code: int) -> Any:
    """Runs an a2a-sdk conversion; its failures (bad base64, a timestamp, an empty oneof,
    a missing required v0.3 field) become `A2aError`."""
    from google.protobuf.json_format import ParseError
    from pydantic import ValidationError

    try:
        return function(value)
    except A2aError:
        raise
    except ValidationError as exc:
        raise A2aError(code, f"invalid {what}: {clip(str(exc.errors()[:1]))}") from None
    except (ParseError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise A2aError(code, f"invalid {what}: {clip(str(exc))}") from None
    except Exception as exc:  # the SDK raises its own A2AError (e.g. version not supported)
        raise A2aError(code, f"invalid {what}: {clip(str(exc) or type(exc).__name__)}") from None


def proto_to_json(message: Any) -> dict[str, Any]:
    """A v1.0 protobuf message as JSON."""
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any] = _integral(MessageToDict(message))
    return out


def pydantic_to_json(model: Any) -> dict[str, Any]:
    """A v0.3 pydantic model as JSON (with `kind`, without unset fields)."""
    out: dict[str, Any] = _integral(model.model_dump(mode="json", by_alias=True, exclude_none=True))
    return out


def _integral(value: Any) -> Any:
    """`value` with whole floats as ints: a protobuf `Struct` (metadata, data parts,
    extension params) holds every number as a double, so a client's `{"n": 1}` would
    otherwise reach the agent as `{"n": 1.0}`."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list | float):
                value[k] = _integral(v)
        return value
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, dict | list | float):
                value[i] = _integral(v)
        return value
    return value


def clip(text: str) -> str:
    """`text` cut to the longest detail an error message quotes."""
    return text if len(text) <= _MAX_ERROR_DETAIL else text[:_MAX_ERROR_DETAIL] + "..."


def quote_json(value: Any) -> str:
    """`value` as (clipped) JSON, for quoting a client's or agent's value in an error message."""
    return clip(json.dumps(value, default=str))


__all__ = [
    "clip",
    "json_object",
    "proto_from_json",
    "proto_to_json",
    "pydantic_from_json",
    "pydantic_to_json",
    "quote_json",
    "run_conversion",
]
