"""Reading a config file: YAML with line numbers, `${VAR}` interpolation, validation into `Config`.

Every problem is reported as `path.to.key (line N): message`, all at once, never as a traceback.
A `${VAR}` left unset in a secret field (`crossway.config.secrets`) is one such problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from crossway.config.base import LocatedProblems
from crossway.config.models import Config, Loc, format_loc, reference_problems
from crossway.config.secrets import is_secret_path

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


class ConfigError(Exception):
    """A config file that cannot be used; `problems` lists each one with its place in the file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


def interpolate(text: str, env: Mapping[str, str], missing: list[str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}` from `env`; `$$` is a literal `$`.

    A `${VAR}` with no default whose variable is unset becomes empty and is recorded in
    `missing`, so the caller can say which variable a failing key needed (and refuse it
    outright in a secret field).
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            missing.append(name)
            return ""
        return value

    return _ENV_REF.sub(sub, text)


class _Doc:
    """Plain data from the YAML tree, plus the line of every key and item."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.lines: dict[Loc, int] = {}
        self.missing_env: dict[Loc, list[str]] = {}

    def convert(self, node: Any, loc: Loc) -> Any:
        if isinstance(node, CommentedMap):
            out: dict[str, Any] = {}
            for key, value in node.items():
                child = (*loc, str(key))
                try:
                    line, _col = node.lc.key(key)
                    self.lines[child] = line + 1
                except (KeyError, TypeError, AttributeError):
                    pass
                out[str(key)] = self.convert(value, child)
            return out
        if isinstance(node, CommentedSeq):
            items = []
            for i, value in enumerate(node):
                child = (*loc, i)
                try:
                    line, _col = node.lc.item(i)
                    self.lines[child] = line + 1
                except (KeyError, TypeError, AttributeError, IndexError):
                    pass
                items.append(self.convert(value, child))
            return items
        if isinstance(node, str):
            missing: list[str] = []
            value = interpolate(str(node), self.env, missing)
            if missing:
                self.missing_env[loc] = missing
            return value
        return node

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest part of `loc` that appears in the file."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None


def _where(doc: _Doc, loc: Loc) -> str:
    line = doc.line_of(loc)
    return format_loc(loc) + (f" (line {line})" if line else "")


def _describe(doc: _Doc, loc: Loc, msg: str) -> str:
    missing = doc.missing_env.get(loc)
    if not missing:
        # An error about a whole object (a model check): name the unset variables inside it.
        missing = [
            name
            for where, names in doc.missing_env.items()
            if where[: len(loc)] == loc and len(where) <= len(loc) + 1
            for name in names
        ]
    if missing:
        msg += f" ({_unset(missing)})"
    return f"{_where(doc, loc)}: {msg}"


def _unset(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    if len(unique) == 1:
        return f"environment variable {unique[0]} is not set"
    return f"environment variables {', '.join(unique)} are not set"


def _missing_secrets(doc: _Doc, data: Any) -> dict[Loc, str]:
    """A `${VAR}` left unset in a secret field (found by its type) is an error: an empty key,
    token or password must never quietly mean "no auth" or "any caller"."""
    return {
        loc: f"{_where(doc, loc)}: {_unset(names)}"
        for loc, names in doc.missing_env.items()
        if is_secret_path(Config, loc, data)
    }


def _covered(loc: Loc, secrets: dict[Loc, str], data: Any) -> bool:
    """Whether a validation error at `loc` only repeats an unset-secret error: it is about that
    secret itself, or about the map or list of secrets holding it (`keys`, `headers`)."""
    return any(
        loc == secret or (loc == secret[:-1] and is_secret_path(Config, loc, data))
        for secret in secrets
    )


def _clean_loc(loc: tuple[Any, ...], data: Any) -> Loc:
    """Drop the parts pydantic adds that the user never wrote (tagged-union tags such as `http`)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and node.get("type") == part:
            continue  # the tag of a tagged union (`jwt`, `http`): the user wrote it as `type`
        elif i == len(loc) - 1 and isinstance(part, str | int) and not isinstance(node, list):
            pass  # a missing or unknown key: keep it, it is what the message is about
        else:
            continue
        out.append(part)
    return tuple(out)


def parse_config(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate config text; raise `ConfigError` listing every problem."""
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(source, [f"YAML syntax error{line}: {exc.problem}"]) from None
    except YAMLError as exc:
        raise ConfigError(source, [f"YAML syntax error: {exc}"]) from None
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, CommentedMap):
        raise ConfigError(source, ["(root): the config must be a mapping of keys"])
    doc = _Doc(os.environ if env is None else env)
    data = doc.convert(tree, ())
    secrets = _missing_secrets(doc, data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = list(secrets.values())
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"], data)
            if _covered(loc, secrets, data):
                continue
            msg = err["msg"].removeprefix("Value error, ")
            located = (err.get("ctx") or {}).get("error")
            if isinstance(located, LocatedProblems):
                problems.extend(_describe(doc, ploc, pmsg) for ploc, pmsg in located.problems)
                continue
            if not loc and isinstance(data, dict):
                routes = data.get("routes") or []
                refs = reference_problems(
                    [
                        (str(r.get("name")), str(r.get("backend")))
                        for r in routes
                        if isinstance(r, dict)
                    ],
                    set(data.get("backends") or {}),
                )
                if refs:
                    problems.extend(_describe(doc, rloc, rmsg) for rloc, rmsg in refs)
                    continue
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling against `crossway schema`)"
            problems.append(_describe(doc, loc, msg))
        raise ConfigError(source, problems) from None
    if secrets:
        raise ConfigError(source, list(secrets.values()))
    return config


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate the config file at `path`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read file: {exc.strerror or exc}"]) from None
    return parse_config(text, str(p), env)
