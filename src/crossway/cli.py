"""The `crossway` command: serve, validate, schema, version."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from crossway import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crossway", description="An agent gateway for LLM, MCP and A2A traffic."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument("--config", "-c", required=True, help="config file (YAML)")
    p_serve.add_argument(
        "--workers", "-w", type=int, default=1, help="worker processes (default 1)"
    )
    p_serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    p_validate = sub.add_parser("validate", help="check a config file and print every problem")
    p_validate.add_argument("--config", "-c", required=True, help="config file (YAML)")
    sub.add_parser("schema", help="print the config's JSON Schema")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(f"crossway {__version__}")
        return 0
    if args.command == "schema":
        from crossway.config import Config

        print(json.dumps(Config.model_json_schema(), indent=2))
        return 0

    from crossway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"crossway: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.backends)} backends)")
        return 0
    if args.workers < 1:
        print("crossway: --workers must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from crossway.server.serve import serve

    serve(args.config, config, args.workers)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
