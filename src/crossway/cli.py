"""The `crossway` command: serve, validate, schema, version, pins, keys, teams, users, spend."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from crossway import __version__

if TYPE_CHECKING:
    from crossway.config import Config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crossway", description="An agent gateway for LLM, MCP and A2A traffic."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument("--config", "-c", help="config file (YAML; default $CROSSWAY_CONFIG)")
    p_serve.add_argument(
        "--workers",
        "-w",
        type=int,
        help="worker processes (default $CROSSWAY_WORKERS, else 1)",
    )
    p_serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default $CROSSWAY_LOG_LEVEL, else info",
    )
    p_serve.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="default $CROSSWAY_LOG_FORMAT, else text on a terminal and json otherwise",
    )
    p_validate = sub.add_parser("validate", help="check a config file and print every problem")
    p_validate.add_argument("--config", "-c", required=True, help="config file (YAML)")
    sub.add_parser("schema", help="print the config's JSON Schema")
    sub.add_parser("version", help="print the version")
    p_pins = sub.add_parser("pins", help="list, approve or forget MCP tool pins (SQLite store)")
    pins_sub = p_pins.add_subparsers(dest="pins_command", required=True)
    p_list = pins_sub.add_parser("list", help="every pinned tool with its status")
    p_list.add_argument("--config", "-c", required=True, help="config file (YAML)")
    p_list.add_argument("--backend", help="only this MCP backend")
    for verb, text in (
        ("approve", "accept the definition the server lists now as the tool's pin"),
        ("forget", "drop the tool's pin (its next listing is pinned anew)"),
    ):
        p_verb = pins_sub.add_parser(verb, help=text)
        p_verb.add_argument("--config", "-c", required=True, help="config file (YAML)")
        p_verb.add_argument("backend", help="the MCP backend's name in the config")
        p_verb.add_argument("server", help="the upstream server's name in that backend")
        p_verb.add_argument("tool", help="the tool's name at that server (not prefixed)")
        if verb == "approve":
            p_verb.add_argument("--sha256", help="approve only if this is still the definition")
    from crossway import keys_cli

    keys_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in keys_cli.KEY_COMMANDS:
        return keys_cli.run(args)

    if args.command == "version":
        print(f"crossway {__version__}")
        return 0
    if args.command == "schema":
        from crossway.config import Config

        print(json.dumps(Config.model_json_schema(), indent=2))
        return 0

    if args.command == "serve":
        return _serve(args)

    from crossway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"crossway: {exc}", file=sys.stderr)
        return 2
    if args.command == "pins":
        return _pins(args, config)
    if args.command == "validate":
        print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.backends)} backends)")
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


def _serve(args: argparse.Namespace) -> int:
    """`crossway serve`: flags, then the environment (`crossway.config.serve_env`), then the
    config file. Bad input exits 2 with one message, never a traceback."""
    from crossway.config import ConfigError
    from crossway.config.serve_env import config_path, load_serving_config, read_serve_env
    from crossway.telemetry.log_format import configure_logging, default_format

    try:
        found = read_serve_env()
        path = config_path(args.config)
        config = load_serving_config(path)
    except ConfigError as exc:  # a bad variable (ServeEnvError) or a bad file
        print(f"crossway: {exc}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else (found.workers or 1)
    if workers < 1:
        print("crossway: --workers must be at least 1", file=sys.stderr)
        return 2
    log_level = args.log_level or found.log_level or "info"
    log_format = args.log_format or found.log_format or default_format()
    configure_logging(log_level, log_format)
    from crossway.server.serve import serve

    serve(path, config, workers, log_level=log_level, log_format=log_format)
    return 0


def _pins(args: argparse.Namespace, config: Config) -> int:
    """`crossway pins ...` on the SQLite pin files of the config's MCP backends. A running
    gateway notices an approval the next time the blocked tool is called or listed."""
    from crossway.config.mcp import McpBackendConfig
    from crossway.mcp.pin_store import PinFile, PinMismatch, PinNotFound, pin_path

    backends = {
        name: backend
        for name, backend in config.backends.items()
        if isinstance(backend, McpBackendConfig) and backend.pinning.mode != "off"
    }
    wanted = args.backend
    if wanted is not None and wanted not in backends:
        print(f"crossway: no MCP backend {wanted!r} with tool pinning", file=sys.stderr)
        return 2
    if args.pins_command == "list":
        print(f"{'BACKEND':<16} {'SERVER':<16} {'TOOL':<24} {'STATUS':<8} PINNED       CURRENT")
        for name, backend in backends.items():
            if wanted is not None and name != wanted:
                continue
            if backend.pinning.store != "sqlite":
                print(f"crossway: backend {name!r} keeps its pins in memory", file=sys.stderr)
                continue
            pins = PinFile(pin_path(backend.pinning), name)
            for e in pins.entries(backend.pinning):
                current = (e.current_sha256 or "-")[:12]
                print(
                    f"{e.backend:<16} {e.server:<16} {e.tool:<24} {e.status:<8} "
                    f"{(e.pinned_sha256 or '-')[:12]} {current}"
                )
            pins.close()
        return 0
    target = backends.get(args.backend)
    if target is None:
        print(f"crossway: no MCP backend {args.backend!r} with tool pinning", file=sys.stderr)
        return 2
    if target.pinning.store != "sqlite":
        print(
            f"crossway: backend {args.backend!r} keeps its pins in memory; use the admin API "
            "(POST /pins/...) of a single-worker gateway, or set `pinning.store: sqlite`",
            file=sys.stderr,
        )
        return 2
    pins = PinFile(pin_path(target.pinning), args.backend)
    try:
        if args.pins_command == "approve":
            digest = pins.approve(args.server, args.tool, args.sha256)
            print(f"approved {args.backend}/{args.server}/{args.tool}: pinned {digest[:12]}")
        elif pins.forget(args.server, args.tool):
            print(f"forgot the pin of {args.backend}/{args.server}/{args.tool}")
        else:
            raise PinNotFound(f"no pin for tool {args.tool!r} of server {args.server!r}")
    except (PinNotFound, PinMismatch) as exc:
        print(f"crossway: {exc}", file=sys.stderr)
        return 1
    finally:
        pins.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
