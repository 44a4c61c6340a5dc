"""The gateway's own log lines on stderr: JSON (one object a line) or text for a terminal.

A JSON line holds `time` (RFC 3339, UTC), `level`, `logger` and `message`, plus `exc_info`
(the formatted traceback) and `stack_info` when present. granian's and uvicorn's loggers are
sent through the same handler. The access log (`crossway.telemetry.access_log`) is separate:
it writes its own lines to stdout or its file.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
import sys
from typing import IO, Any, Final

import orjson

from crossway.config.serve_env import LogFormat, LogLevel

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
GRANIAN_LOGGERS: Final = ("_granian", "granian", "granian.access")
"""granian logs through `_granian` (its Rust side too); its defaults print to stdout."""
UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
_HANDLER: Final = "crossway-stderr"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line).decode()
        except TypeError:  # a string orjson refuses (a lone surrogate): escape it instead
            return json.dumps(line, ensure_ascii=True)


class DropExperimentalNotice(logging.Filter):
    """Drops granian's "Embedded server is experimental!" notice, logged at every start of the
    single-process mode, which is the default: it tells an operator nothing they can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).endswith("is experimental!")


def default_format(stream: IO[str] | None = None) -> LogFormat:
    """Text on a terminal, JSON otherwise (a container's or service manager's log collector)."""
    target = sys.stderr if stream is None else stream
    try:
        return "text" if target.isatty() else "json"
    except (AttributeError, ValueError):  # replaced or closed stream
        return "json"


def logging_config(level: LogLevel, log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger, with granian's and uvicorn's loggers
    sent to it. granian applies it in each worker process (its `log_dictconfig`)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    through_root: dict[str, Any] = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"crossway": formatter},
        "filters": {"experimental": {"()": f"{__name__}.DropExperimentalNotice"}},
        "handlers": {
            _HANDLER: {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "crossway",
            }
        },
        "root": {"level": level.upper(), "handlers": [_HANDLER]},
        "loggers": {
            **{name: dict(through_root) for name in GRANIAN_LOGGERS},
            "_granian": {**through_root, "filters": ["experimental"]},
            **{name: dict(through_root) for name in UVICORN_LOGGERS},
        },
    }


def configure_logging(level: LogLevel, log_format: LogFormat) -> None:
    """Send every log record of this process to stderr at `level`, in `log_format`."""
    logging.config.dictConfig(logging_config(level, log_format))
