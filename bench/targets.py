"""What the benchmark measures: direct, the reference proxies (aiohttp and pyreqwest), Crossway,
LiteLLM, and the translation paths.

Each target knows how to start itself for one mode (`json` or `stream`), pinned to the proxy
core with one worker, with its upstream pointed at the nginx path that answers that mode.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from bench.fixtures import MODEL
from bench.procs import ServerProcess, free_port, start_pinned

Mode = Literal["json", "stream"]
MODES: Final[tuple[Mode, ...]] = ("json", "stream")

CLIENT_PATH: Final = "/v1/chat/completions"
UPSTREAM_KEY: Final = "sk-bench-upstream"
LITELLM_MASTER_KEY: Final = "sk-bench-master"
CLIENT_KEY: Final = LITELLM_MASTER_KEY
"""Every client sends this bearer token; only LiteLLM checks it, Crossway replaces it."""

AWS_TEST_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "AKIDBENCHEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Context:
    """Where things are for one benchmark run."""

    repo: Path
    work: Path
    upstream: str
    proxy_cpu: int
    load_cpu: int
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.work / "logs"

    @property
    def python(self) -> Path:
        return self.repo / ".venv" / "bin" / "python"

    @property
    def crossway(self) -> Path:
        return self.repo / ".venv" / "bin" / "crossway"


Launch = Callable[[Context, Mode, int], ServerProcess]


@dataclass
class Target:
    """One column of the comparison."""

    name: str
    group: Literal["proxy", "translation"]
    description: str
    launch: Launch | None
    model: str = MODEL
    check: Callable[[Context], str | None] = lambda _ctx: None
    """Returns why the target cannot run here, or None."""
    ready_timeout_s: float = 30.0
    interleave: bool = True
    """Measured in turns with the other Python proxies (LiteLLM is too slow to share rounds)."""
    profile: bool = False
    """Profile it with py-spy when the run asks for profiles."""
    env: Callable[[Context, Mode], dict[str, str]] = lambda _ctx, _mode: {}
    key: Callable[[], str] = lambda: CLIENT_KEY
    """The bearer token its clients send."""

    def url_path(self, mode: Mode) -> str:
        if self.launch is None:
            return CLIENT_PATH if mode == "json" else "/stream" + CLIENT_PATH
        return CLIENT_PATH


def _stream_prefix(mode: Mode) -> str:
    return "/stream" if mode == "stream" else ""


# --- reference proxy -------------------------------------------------------------------------


def reference_argv(
    ctx: Context, port: int, app: str, *, interface: str = "asgi", extra: tuple[str, ...] = ()
) -> list[str]:
    """granian serving one reference app the way `make bench` does: uvloop, HTTP/1, one worker."""
    granian = ctx.repo / ".venv" / "bin" / "granian"
    return [
        str(granian),
        "--interface",
        interface,
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
        app,
    ]


def _launch_reference_app(name: str, app: str) -> Launch:
    def launch(ctx: Context, mode: Mode, port: int) -> ServerProcess:
        env = {"REFERENCE_UPSTREAM": ctx.upstream + _stream_prefix(mode)}
        return start_pinned(
            name,
            reference_argv(ctx, port, app),
            cpu=ctx.proxy_cpu,
            env=env,
            cwd=ctx.repo,
            log=ctx.logs / f"{name}-{mode}.log",
        )

    return launch


# --- Crossway --------------------------------------------------------------------------------


def _crossway_config(ctx: Context, name: str) -> Path | None:
    """The example users copy (examples/NAME.yaml), else the harness's own minimal bench/configs/NAME.yaml."""
    for candidate in (
        ctx.repo / "examples" / f"{name}.yaml",
        ctx.repo / "bench" / "configs" / f"{name}.yaml",
    ):
        if candidate.is_file():
            return candidate
    return None


def _check_crossway(
    name: str, env: Callable[[Context, Mode], dict[str, str]]
) -> Callable[[Context], str | None]:
    def check(ctx: Context) -> str | None:
        if not ctx.crossway.exists():
            return "not available: the `crossway` command is not installed in .venv"
        config = _crossway_config(ctx, name)
        if config is None:
            return f"not available: no examples/{name}.yaml or bench/configs/{name}.yaml yet"
        done = subprocess.run(
            [str(ctx.crossway), "validate", "--config", str(config)],
            env={
                **os.environ,
                **env(ctx, "json"),
                "CROSSWAY_PORT": "0",
                "CROSSWAY_ADMIN_PORT": "0",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            return (
                f"not available: `crossway validate` rejects {config.relative_to(ctx.repo)}: "
                + (" / ".join(detail[-3:]) if detail else f"exit {done.returncode}")
            )
        return None

    return check


def _launch_crossway(name: str, env: Callable[[Context, Mode], dict[str, str]]) -> Launch:
    def launch(ctx: Context, mode: Mode, port: int) -> ServerProcess:
        config = _crossway_config(ctx, name)
        assert config is not None
        argv = [str(ctx.crossway), "serve", "--config", str(config), "--workers", "1"]
        full_env = {
            **env(ctx, mode),
            "CROSSWAY_PORT": str(port),
            "CROSSWAY_ADMIN_PORT": str(free_port()),
        }
        return start_pinned(
            f"crossway-{name}",
            argv,
            cpu=ctx.proxy_cpu,
            env=full_env,
            cwd=ctx.repo,
            log=ctx.logs / f"crossway-{name}-{mode}.log",
        )

    return launch


def _openai_env(ctx: Context, mode: Mode) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": f"{ctx.upstream}{_stream_prefix(mode)}/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
    }


def _policy_env(ctx: Context, mode: Mode) -> dict[str, str]:
    from bench.policy_keys import write_jwks

    jwks = write_jwks(ctx.work / "policy-jwks.json")
    return {**_openai_env(ctx, mode), "BENCH_JWKS_FILE": str(jwks)}


def _policy_token() -> str:
    from bench.policy_keys import token

    return token()


def _anthropic_env(ctx: Context, mode: Mode) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": f"{ctx.upstream}{_stream_prefix(mode)}",
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
    }


def _bedrock_env(ctx: Context, _mode: Mode) -> dict[str, str]:
    # Converse and ConverseStream have distinct paths, so one endpoint serves both modes.
    return {
        "BEDROCK_BASE_URL": ctx.upstream,
        "BEDROCK_ENDPOINT_URL": ctx.upstream,
        **AWS_TEST_CREDENTIALS,
    }


# --- LiteLLM ---------------------------------------------------------------------------------

LITELLM_CONFIG: Final = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: {key}
general_settings:
  master_key: {master}
"""


def litellm_bin(ctx: Context) -> Path:
    return ctx.repo / "bench" / ".peers" / "litellm" / "bin" / "litellm"


def _check_litellm(ctx: Context) -> str | None:
    marker = ctx.repo / "bench" / ".peers" / "litellm.unavailable"
    if marker.is_file():
        return "not available: " + marker.read_text().strip()
    if not litellm_bin(ctx).exists():
        return "not available: bench/.peers/litellm has no `litellm` command (bench/run.sh installs it)"
    return None


def _launch_litellm(ctx: Context, mode: Mode, port: int) -> ServerProcess:
    config = ctx.work / f"litellm-{mode}.yaml"
    config.write_text(
        LITELLM_CONFIG.format(
            model=MODEL,
            api_base=f"{ctx.upstream}{_stream_prefix(mode)}/v1",
            key=UPSTREAM_KEY,
            master=LITELLM_MASTER_KEY,
        )
    )
    argv = [
        str(litellm_bin(ctx)),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {
        # Offline: use the bundled model price map, send no telemetry.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    # LiteLLM puts `../..` of its working directory first on sys.path; start it two levels
    # into an empty directory so nothing of ours (bench/mcp/, say) shadows its imports.
    cwd = Path(tempfile.mkdtemp(prefix="litellm-", dir=ctx.work)) / "a" / "b"
    cwd.mkdir(parents=True)
    return start_pinned(
        "litellm", argv, cpu=ctx.proxy_cpu, env=env, cwd=cwd, log=ctx.logs / f"litellm-{mode}.log"
    )


# --- the table -------------------------------------------------------------------------------

ANTHROPIC_MODEL: Final = os.environ.get("BENCH_ANTHROPIC_MODEL", "claude-sonnet-4-5")
BEDROCK_MODEL: Final = os.environ.get("BENCH_BEDROCK_MODEL", "anthropic.claude-sonnet-4-5")


def all_targets() -> list[Target]:
    """Every target, in report order."""
    return [
        Target("direct", "proxy", "wrk straight to nginx", launch=None),
        Target(
            "reference",
            "proxy",
            "bench/reference_proxy.py: raw ASGI on granian + aiohttp",
            launch=_launch_reference_app("reference", "bench.reference_proxy:app"),
            profile=True,
        ),
        Target(
            "reference-reqwest",
            "proxy",
            "bench/reference_proxy_reqwest.py: the same raw ASGI app on granian + pyreqwest",
            launch=_launch_reference_app("reference-reqwest", "bench.reference_proxy_reqwest:app"),
            profile=True,
        ),
        Target(
            "crossway",
            "proxy",
            "crossway serve --config examples/openai.yaml --workers 1",
            launch=_launch_crossway("openai", _openai_env),
            check=_check_crossway("openai", _openai_env),
            profile=True,
            env=_openai_env,
        ),
        Target(
            "crossway-policy",
            "proxy",
            "the crossway column plus a JWT policy and a CEL rule (bench/configs/openai-policy.yaml)",
            launch=_launch_crossway("openai-policy", _policy_env),
            check=_check_crossway("openai-policy", _policy_env),
            profile=True,
            env=_policy_env,
            key=_policy_token,
        ),
        Target(
            "litellm",
            "proxy",
            "litellm --config (openai/ provider) --num_workers 1",
            launch=_launch_litellm,
            check=_check_litellm,
            ready_timeout_s=120.0,
            interleave=False,
        ),
        Target(
            "crossway-anthropic",
            "translation",
            "OpenAI Chat in -> Anthropic Messages out",
            launch=_launch_crossway("anthropic", _anthropic_env),
            check=_check_crossway("anthropic", _anthropic_env),
            model=ANTHROPIC_MODEL,
            profile=True,
            env=_anthropic_env,
        ),
        Target(
            "crossway-bedrock",
            "translation",
            "OpenAI Chat in -> Bedrock Converse / ConverseStream out",
            launch=_launch_crossway("bedrock", _bedrock_env),
            check=_check_crossway("bedrock", _bedrock_env),
            model=BEDROCK_MODEL,
            profile=True,
            env=_bedrock_env,
        ),
    ]
