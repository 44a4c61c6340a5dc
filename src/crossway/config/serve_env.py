"""Environment overrides for `crossway serve` (containers, PaaS platforms that set `PORT`).

    CROSSWAY_PORT, PORT          data-plane port (CROSSWAY_PORT wins; PORT is then ignored)
    CROSSWAY_HOST                data-plane bind address
    CROSSWAY_ADMIN_HOST / _PORT  admin-plane bind address and port
    CROSSWAY_WORKERS             worker processes (the `--workers` default)
    CROSSWAY_CONFIG              config file when `--config` is not given
    CROSSWAY_LOG_LEVEL           debug | info | warning | error
    CROSSWAY_LOG_FORMAT          json | text (default: json unless stderr is a terminal)

Precedence: command-line flag > environment > config file. An empty variable counts as unset,
as it does for `${VAR:-default}` in the file, so `port: ${CROSSWAY_PORT:-8080}` and the
override always agree. A bad value is a `ServeEnvError` naming the variable.

The environment is read when the serving config is loaded (start and reload), never per
request. `crossway validate` does not apply it: it checks the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar

from pydantic import ValidationError

from crossway.config.base import LocatedProblems
from crossway.config.loader import ConfigError, load_config
from crossway.config.models import Config, format_loc

PORT_ENV: Final = "CROSSWAY_PORT"
PLATFORM_PORT_ENV: Final = "PORT"
HOST_ENV: Final = "CROSSWAY_HOST"
ADMIN_HOST_ENV: Final = "CROSSWAY_ADMIN_HOST"
ADMIN_PORT_ENV: Final = "CROSSWAY_ADMIN_PORT"
WORKERS_ENV: Final = "CROSSWAY_WORKERS"
CONFIG_ENV: Final = "CROSSWAY_CONFIG"
LOG_LEVEL_ENV: Final = "CROSSWAY_LOG_LEVEL"
LOG_FORMAT_ENV: Final = "CROSSWAY_LOG_FORMAT"

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("debug", "info", "warning", "error")
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("json", "text")
MAX_PORT: Final = 65535
MAX_WORKERS: Final = 1024
"""More workers than this is a typo, not a deployment."""
_SHOWN_CHARS: Final = 40
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_DIGITS = re.compile(r"[0-9]{1,5}")
"""At most five digits: enough for any port or worker count, and `int()` stays cheap."""
_Choice = TypeVar("_Choice", bound=str)


class ServeEnvError(ConfigError):
    """An environment variable of `crossway serve` holds a value it cannot use.

    A `ConfigError`, so every place that loads the serving config (start, reload, the admin
    plane's view) reports it as it reports a bad file; its text is one line naming the variable.
    """

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__("environment", [f"{variable}: {message}"])

    def __str__(self) -> str:
        return self.problems[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeEnv:
    """The `crossway serve` settings found in the environment; None where a variable is unset."""

    listen_host: str | None = None
    """`CROSSWAY_HOST`: the data-plane bind address."""
    listen_port: int | None = None
    """`CROSSWAY_PORT`, else `PORT`: the data-plane port."""
    listen_port_variable: str | None = None
    """Which variable gave `listen_port` (`CROSSWAY_PORT` or `PORT`)."""
    admin_host: str | None = None
    """`CROSSWAY_ADMIN_HOST`: the admin-plane bind address."""
    admin_port: int | None = None
    """`CROSSWAY_ADMIN_PORT`: the admin-plane port."""
    workers: int | None = None
    """`CROSSWAY_WORKERS`: worker processes when `--workers` is not given."""
    config_path: str | None = None
    """`CROSSWAY_CONFIG`: the config file when `--config` is not given."""
    log_level: LogLevel | None = None
    """`CROSSWAY_LOG_LEVEL`, folded to lower case."""
    log_format: LogFormat | None = None
    """`CROSSWAY_LOG_FORMAT`, folded to lower case."""


def read_serve_env(environ: Mapping[str, str] | None = None) -> ServeEnv:
    """Read and check every `crossway serve` variable; `ServeEnvError` on the first bad one."""
    env = os.environ if environ is None else environ
    port_variable = PORT_ENV if _get(env, PORT_ENV) is not None else PLATFORM_PORT_ENV
    listen_port = _port(env, port_variable)
    return ServeEnv(
        listen_host=_host(env, HOST_ENV),
        listen_port=listen_port,
        listen_port_variable=port_variable if listen_port is not None else None,
        admin_host=_host(env, ADMIN_HOST_ENV),
        admin_port=_port(env, ADMIN_PORT_ENV),
        workers=_workers(env, WORKERS_ENV),
        config_path=_get(env, CONFIG_ENV),
        log_level=_choice(env, LOG_LEVEL_ENV, LOG_LEVELS),
        log_format=_choice(env, LOG_FORMAT_ENV, LOG_FORMATS),
    )


def apply_env_overrides(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """`config` with the listener and admin addresses the environment sets.

    The whole-config checks run again on the result, so a bind address from the environment is
    held to the same rules as one in the file (an MCP session key is required off loopback).
    """
    found = read_serve_env(environ)
    listen = _updates(host=found.listen_host, port=found.listen_port)
    admin = _updates(host=found.admin_host, port=found.admin_port)
    if not listen and not admin:
        return config
    fields = dict(config)
    fields["listen"] = config.listen.model_copy(update=listen)
    fields["admin"] = config.admin.model_copy(update=admin)
    try:
        return Config.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError("(environment overrides)", _problems(exc, found)) from None


def load_serving_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> Config:
    """The config a serving gateway uses: the file at `path`, then the environment overrides.

    Every place that loads the config to serve with calls this (the CLI, each worker at start
    and reload, the admin plane's view), so they all see the same effective config.
    """
    config = load_config(path, environ)
    try:
        return apply_env_overrides(config, environ)
    except ServeEnvError:
        raise
    except ConfigError as exc:
        raise ConfigError(f"{path} with the environment overrides", exc.problems) from None


def config_path(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The config file to serve: `--config`, else `CROSSWAY_CONFIG`; `ServeEnvError` if neither."""
    if flag:
        return flag
    found = _get(os.environ if environ is None else environ, CONFIG_ENV)
    if found is None:
        raise ServeEnvError(CONFIG_ENV, "not set and no --config given: say which config to serve")
    if not Path(found).is_file():
        raise ServeEnvError(CONFIG_ENV, f"{_show(found)} is not a file")
    return found


def _updates(*, host: str | None, port: int | None) -> dict[str, object]:
    updates: dict[str, object] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    return updates


def _problems(exc: ValidationError, found: ServeEnv) -> list[str]:
    given = [
        f"{key} from {variable}"
        for key, variable, value in (
            ("listen.host", HOST_ENV, found.listen_host),
            ("listen.port", found.listen_port_variable, found.listen_port),
            ("admin.host", ADMIN_HOST_ENV, found.admin_host),
            ("admin.port", ADMIN_PORT_ENV, found.admin_port),
        )
        if value is not None
    ]
    suffix = f" (with {', '.join(given)})"
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, LocatedProblems):
            problems.extend(f"{format_loc(loc)}: {msg}{suffix}" for loc, msg in located.problems)
        else:
            problems.append(err["msg"].removeprefix("Value error, ") + suffix)
    return problems


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")


def _port(env: Mapping[str, str], name: str) -> int | None:
    value = _get(env, name)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value) or int(value) > MAX_PORT:
        raise ServeEnvError(name, f"{_show(value)} is not a port number (0-{MAX_PORT})")
    return int(value)


def _host(env: Mapping[str, str], name: str) -> str | None:
    value = _get(env, name)
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise ServeEnvError(name, f"{_show(value)} is not an IP address or host name") from None
    return value


def _workers(env: Mapping[str, str], name: str) -> int | None:
    value = _get(env, name)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_WORKERS:
        raise ServeEnvError(name, f"{_show(value)} is not a worker count (1-{MAX_WORKERS})")
    return int(value)


def _choice(env: Mapping[str, str], name: str, choices: tuple[_Choice, ...]) -> _Choice | None:
    value = _get(env, name)
    if value is None:
        return None
    for choice in choices:
        if value.lower() == choice:
            return choice
    raise ServeEnvError(name, f"{_show(value)} is not one of {' | '.join(choices)}")
