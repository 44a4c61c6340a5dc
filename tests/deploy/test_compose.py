"""deploy/compose.yaml, checked without a container engine (none runs here): it validates against
the Compose Specification's JSON schema (as bundled by check-jsonschema), and its services agree
with each other and with Crossway — the replicas' environment points at the redis, upstream and
collector services on the ports those listen on, the container config loads with exactly that
environment, health checks back every `service_healthy` dependency, nginx balances over both
replicas, and the collector's pipeline is complete. tests/deploy/test_stack.py runs the same
topology as processes on loopback."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from crossway.config import load_config
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
REPLICAS = ("crossway-1", "crossway-2")
SERVICES = {*REPLICAS, "lb", "redis", "upstream", "otel-collector"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def compose_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text(encoding="utf-8")
    )
    schema = json.loads(text)
    assert schema["title"] == "Compose Specification"
    return schema


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` for a test environment."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"the test gives no value for ${{{name}}}"
        return env[name]

    return INTERPOLATION.sub(one, value)


def test_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_rejects_what_compose_would() -> None:
    doc = copy.deepcopy(compose())
    doc["services"]["crossway-1"]["helthcheck"] = {}
    doc["services"]["lb"]["depends_on"]["crossway-1"]["condition"] = "service_ready"
    assert len(schema_errors(doc)) >= 2


def test_services_and_their_dependencies() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
    for replica in REPLICAS:
        conditions = {d: s["condition"] for d, s in services[replica]["depends_on"].items()}
        assert conditions == {
            "redis": "service_healthy",
            "upstream": "service_healthy",
            "otel-collector": "service_started",
        }
    assert set(services["lb"]["depends_on"]) == set(REPLICAS)
    declared_volumes = set(compose()["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).is_file(), f"{name} mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


def test_replicas_run_the_image_with_its_healthcheck_and_a_drain_window() -> None:
    services = compose()["services"]
    config = load_config(DEPLOY / "crossway.yaml", replica_env())
    for replica in REPLICAS:
        service = services[replica]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert (ROOT / "deploy" / "Dockerfile").is_file()
        test = service["healthcheck"]["test"]
        assert test == ["CMD", "python3", "/opt/crossway/healthcheck.py", "/readyz"]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert any(v.endswith(":/var/lib/crossway") for v in service["volumes"])
        assert service["stop_signal"] == "SIGTERM"
        assert service["init"] is True  # SIGTERM reaches crossway, children are reaped
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace > config.listen.drain_seconds
        published = {p.rsplit(":", 1)[1] for p in service["ports"]}
        assert published == {str(config.admin.port)}
    assert services["crossway-1"]["ports"] != services["crossway-2"]["ports"]
    assert services["upstream"]["image"] == services["crossway-1"]["image"]


def replica_env() -> dict[str, str]:
    """A replica's environment as compose would give it (CROSSWAY_ADMIN_TOKEN exported)."""
    env = compose()["services"]["crossway-1"]["environment"]
    given = {"CROSSWAY_ADMIN_TOKEN": "compose-test-token-0123456789", "CROSSWAY_IMAGE": "x"}
    return {name: interpolated(str(value), given) for name, value in env.items()}


def test_replica_environment_points_at_the_other_services() -> None:
    services = compose()["services"]
    env = replica_env()
    assert (
        compose()["services"]["crossway-2"]["environment"]
        == (compose()["services"]["crossway-1"]["environment"])
    )
    # `${CROSSWAY_ADMIN_TOKEN:?...}`: compose refuses to start without the token.
    raw = services["crossway-1"]["environment"]["CROSSWAY_ADMIN_TOKEN"]
    assert raw.startswith("${CROSSWAY_ADMIN_TOKEN:?")
    redis = urlsplit(env["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    upstream = urlsplit(env["OPENAI_BASE_URL"])
    command = services["upstream"]["entrypoint"]
    assert command[:3] == ["python3", "-m", "crossway.samples.openai_server"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags == {"--host": "0.0.0.0", "--port": str(upstream.port)}
    assert (upstream.hostname, upstream.path) == ("upstream", "/v1")
    otlp = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert otlp.hostname == "otel-collector"
    receiver = collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert receiver.endswith(f":{otlp.port}")


def test_container_config_loads_with_the_compose_environment() -> None:
    config = load_config(DEPLOY / "crossway.yaml", replica_env())
    assert config.accounting.store.type == "redis"
    assert config.telemetry.tracing.endpoint == "http://otel-collector:4318"
    provider = config.backends["llm"].providers["upstream"]  # type: ignore[union-attr]
    assert provider.type == "openai_compatible"
    assert provider.base_url == "http://upstream:9101/v1"


def test_nginx_balances_over_both_replicas() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", text, re.M)
    config = load_config(DEPLOY / "crossway.yaml", replica_env())
    assert sorted(servers) == [(r, str(config.listen.port)) for r in REPLICAS]
    (listen,) = re.findall(r"^\s*listen (\d+);", text, re.M)
    lb = compose()["services"]["lb"]
    assert [p.rsplit(":", 1)[1] for p in lb["ports"]] == [listen]
    assert "proxy_buffering off;" in text  # SSE streams pass through as they come
    assert lb["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]


def collector_config() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_collector_pipeline_uses_only_defined_components() -> None:
    doc = collector_config()
    service = doc["service"]
    assert set(service["extensions"]) <= set(doc["extensions"])
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in doc[kind], f"pipeline {name} uses undefined {component}"
    assert "traces" in service["pipelines"]
    collector = compose()["services"]["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    (mount,) = collector["volumes"]
    target = mount.split(":")[1]
    assert collector["command"] == [f"--config={target}"]


@pytest.mark.parametrize("name", sorted(SERVICES - {"otel-collector"}))
def test_healthchecks_are_exec_form(name: str) -> None:
    test = compose()["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD" and len(test) > 1
